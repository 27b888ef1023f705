//! `projector resume`: clear a fault or a pause.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use projector::registry::control::{Delivery, request_resume};

/// Flags of `projector resume`.
#[derive(clap::Args)]
pub struct Args {
    /// The data folder.
    #[arg(long)]
    data: PathBuf,
    /// The projection.
    projection: String,
}

/// Ask the running host, or clear it in the catalog.
pub fn run(a: Args) -> Result<ExitCode> {
    let name = &a.projection;
    match request_resume(&a.data, name)? {
        Delivery::Requested => println!("{name}: asked the running host to resume it"),
        Delivery::Done => println!("{name}: cleared; it runs again at the next start"),
    }
    Ok(ExitCode::SUCCESS)
}
