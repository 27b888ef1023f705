//! `projector import`: an event file into EventStoreDB / KurrentDB.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector import`.
#[derive(clap::Args)]
pub struct Args {
    /// The event file.
    #[arg(long)]
    source: PathBuf,
    /// The server's connection string (esdb://host:2113?tls=false).
    #[arg(long)]
    to: String,
    /// Events per append, at most.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

/// Import and print what was sent.
pub fn run(a: Args) -> Result<ExitCode> {
    let t0 = std::time::Instant::now();
    let r = projector::import::import(&a.source, &a.to, a.batch)?;
    println!(
        "imported {} events in {} appends ({} system events left out) in {:.1} s",
        r.events,
        r.appends,
        r.skipped,
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
