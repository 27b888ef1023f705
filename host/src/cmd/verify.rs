//! `projector verify`: is a module deterministic?

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The component.
    module: PathBuf,
    /// The events (an NDJSON file or an esdb:// URL).
    #[arg(long)]
    source: String,
}

/// Run twice at different batch sizes; exit 3 when the tables differ.
pub fn run(a: Args) -> Result<ExitCode> {
    let report = projector::verify::verify(&a.module, &a.source, Default::default(), [10_000, 97])?;
    for (x, y) in report.runs[0].iter().zip(&report.runs[1]) {
        let mark = if x == y { "same" } else { "DIFFERENT" };
        println!(
            "{:<24} {:>9} rows {} | {:>9} rows {}  {mark}",
            x.table,
            x.rows,
            &x.sha256[..16],
            y.rows,
            &y.sha256[..16]
        );
    }
    if !report.deterministic() {
        println!(
            "{}: NOT deterministic: the tables depend on batch boundaries or hidden state",
            report.projection
        );
        return Ok(ExitCode::from(3));
    }
    println!(
        "{}: deterministic (batches of 10000 and of 97 events give identical tables)",
        report.projection
    );
    Ok(ExitCode::SUCCESS)
}
