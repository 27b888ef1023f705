//! `projector rollback`: serve the previous build again.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector rollback`.
#[derive(clap::Args)]
pub struct Args {
    /// The data folder.
    #[arg(long)]
    data: PathBuf,
    /// The projection.
    projection: String,
}

/// Ask the running host, or switch the catalog.
pub fn run(a: Args) -> Result<ExitCode> {
    println!(
        "{}",
        projector::registry::control::request_rollback(&a.data, &a.projection)?
    );
    Ok(ExitCode::SUCCESS)
}
