//! `projector build`: a guest project into a projection component.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector build`.
#[derive(clap::Args)]
pub struct Args {
    /// The guest project's folder.
    dir: PathBuf,
    /// Where to write the component (default: target/projections/<name>.wasm).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Build and print where the component went.
pub fn run(a: Args) -> Result<ExitCode> {
    let out = projector::toolchain::build(&a.dir, a.output.as_deref())?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
