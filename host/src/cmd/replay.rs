//! `projector replay`: rebuild a projection beside its serving build.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use projector::Config;
use projector::registry::control::{Delivery, request_replay};

/// Flags of `projector replay`.
#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    config: PathBuf,
    /// The projection.
    projection: String,
    /// Stop (and serve, paused) at this position.
    #[arg(long)]
    until: Option<u64>,
}

/// Ask the running host, or replay here.
pub fn run(a: Args) -> Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let name = &a.projection;
    match request_replay(&config, name, a.until)? {
        Delivery::Requested => println!(
            "{name}: asked the running host to replay it; the current build serves until the new one has caught up"
        ),
        Delivery::Done => println!(
            "{name}: replayed{}; the new build serves",
            a.until
                .map(|u| format!(" until position {u} (paused there)"))
                .unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
