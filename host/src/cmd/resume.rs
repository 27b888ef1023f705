//! `projector resume`: clear a fault or a pause (one projection, or all with `--all`).

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
    /// The projection (or `--all`).
    #[arg(required_unless_present = "all")]
    projection: Option<String>,
    /// Every faulted or paused projection (after fixing a bad line that faulted them all).
    #[arg(long, conflicts_with = "projection")]
    all: bool,
}

/// Ask the running host, or clear it in the catalog.
pub fn run(a: Args) -> Result<ExitCode> {
    let names = match a.projection {
        Some(p) => vec![p],
        None => projector::store::Catalog::open_read_only(&a.data)?.stuck()?,
    };
    if names.is_empty() {
        println!("nothing is faulted or paused");
    }
    let mut failed = false;
    for name in names {
        match request_resume(&a.data, &name) {
            Ok(Delivery::Requested) => println!("{name}: the running host resumed it"),
            Ok(Delivery::Done) => println!("{name}: cleared; it runs again at the next start"),
            Err(e) => {
                eprintln!("{name}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
