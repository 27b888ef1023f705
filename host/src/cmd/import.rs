//! `projector import`: an event file into EventStoreDB / KurrentDB.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use projector::import::ImportOptions;

/// Flags of `projector import`.
#[derive(clap::Args)]
pub struct Args {
    /// The event file.
    #[arg(long)]
    source: PathBuf,
    /// The server's connection string (esdb://host:2113?tls=false).
    #[arg(long)]
    to: String,
    /// Events per append, at most (consecutive events of one stream go together).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Appends in flight, at most (a span of runs in file order). Each stream's events
    /// keep the file's order always; runs of different streams fewer than this many
    /// apart in the file may land in $all in either order.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Keep the file's order in $all exactly: one append at a time (one round trip each).
    #[arg(long)]
    strict_order: bool,
    /// Use unary appends even when the server offers batch append.
    #[arg(long)]
    unary: bool,
}

/// Import and print what was sent.
pub fn run(a: Args) -> Result<ExitCode> {
    let mut options = ImportOptions {
        batch: a.batch,
        window: a.window,
        unary: a.unary,
        progress: std::io::stderr().is_terminal(),
    };
    if a.strict_order {
        options = options.strict_order();
    }
    let t0 = std::time::Instant::now();
    let r = projector::import::import_with(&a.source, &a.to, &options)?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "imported {} events in {} appends ({} system events left out, {} appends resent) in {:.1} s: {:.0} events/s ({})",
        r.events,
        r.appends,
        r.skipped,
        r.resent,
        secs,
        r.events as f64 / secs.max(1e-9),
        if r.batch_append {
            "batch append"
        } else {
            "unary appends"
        }
    );
    Ok(ExitCode::SUCCESS)
}
