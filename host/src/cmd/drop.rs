//! `projector drop`: delete a stopped projection's tables.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector drop`.
#[derive(clap::Args)]
pub struct Args {
    /// The data folder.
    #[arg(long)]
    data: PathBuf,
    /// The projection.
    projection: String,
}

/// Delete every build and the catalog entry (refused while a host runs).
pub fn run(a: Args) -> Result<ExitCode> {
    projector::store::drop_projection(&a.data, &a.projection)?;
    println!("{}: tables and catalog entry deleted", a.projection);
    Ok(ExitCode::SUCCESS)
}
