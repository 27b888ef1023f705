//! `projector test`.

use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector test`.
#[derive(clap::Args)]
pub struct Args {}

/// Not built yet.
pub fn run(_a: Args) -> Result<ExitCode> {
    anyhow::bail!("projector test is not built yet")
}
