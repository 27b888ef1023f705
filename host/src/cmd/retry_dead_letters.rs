//! `projector retry-dead-letters`: run dead-lettered events again after a fix.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use projector::Config;

/// Flags of `projector retry-dead-letters`.
#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    config: PathBuf,
    /// The projection.
    projection: String,
}

/// Retry and print how many applied.
pub fn run(a: Args) -> Result<ExitCode> {
    let r = projector::dead_letters::retry(&Config::load(&a.config)?, &a.projection)?;
    println!(
        "{}: {} dead-lettered events applied, {} still failing",
        a.projection, r.applied, r.still_failing
    );
    Ok(ExitCode::SUCCESS)
}
