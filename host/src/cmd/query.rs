//! `projector query`: one read-only statement against a projection's serving tables.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector query`.
#[derive(clap::Args)]
pub struct Args {
    /// The data folder.
    #[arg(long)]
    data: PathBuf,
    /// The projection.
    projection: String,
    /// One SELECT statement.
    sql: String,
}

/// Print the rows as NDJSON.
pub fn run(a: Args) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    projector::query::query(&a.data, &a.projection, &a.sql, &mut stdout.lock())?;
    Ok(ExitCode::SUCCESS)
}
