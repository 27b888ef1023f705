//! `projector new`.

use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector new`.
#[derive(clap::Args)]
pub struct Args {}

/// Not built yet.
pub fn run(_a: Args) -> Result<ExitCode> {
    anyhow::bail!("projector new is not built yet")
}
