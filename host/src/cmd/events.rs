//! `projector events`.

use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector events`.
#[derive(clap::Args)]
pub struct Args {}

/// Not built yet.
pub fn run(_a: Args) -> Result<ExitCode> {
    anyhow::bail!("projector events is not built yet")
}
