//! `projector diff`: what a new module would change in the tables.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The current component.
    old: PathBuf,
    /// The new component.
    new: PathBuf,
    /// The events (an NDJSON file or an esdb:// URL).
    #[arg(long)]
    source: String,
}

/// Print rows added, removed and changed per table, with a few examples.
pub fn run(a: Args) -> Result<ExitCode> {
    let diffs = projector::diff::diff(&a.old, &a.new, &a.source, &Default::default())?;
    for d in &diffs {
        println!(
            "{:<24} +{} added  -{} removed  ~{} changed  ({} unchanged)",
            d.table, d.added, d.removed, d.changed, d.same
        );
        for e in &d.examples {
            println!("    {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
