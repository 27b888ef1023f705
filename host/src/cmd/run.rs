//! `projector run`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use projector::{Config, RunOptions, host};

/// Flags of `projector run`.
#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    config: PathBuf,
    /// Event source, overriding the config (an NDJSON file or an esdb:// URL).
    #[arg(long)]
    source: Option<String>,
    /// Data folder, overriding the config.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Exit once every projection has caught up with the end of the source.
    #[arg(long)]
    once: bool,
    /// This host's shard, "I/N" (or "auto/N" from a StatefulSet pod's ordinal),
    /// overriding `[cluster] shard`.
    #[arg(long)]
    shard: Option<String>,
    /// Address of the HTTP API and status page, overriding `[http] listen`; empty: off.
    #[arg(long)]
    http: Option<String>,
}

/// Run until Ctrl-C (or the end of the source with `--once`), then print the summary.
pub fn run(a: Args) -> Result<ExitCode> {
    let mut config = Config::load(&a.config)?;
    if let Some(s) = a.source {
        config.source = s;
    }
    if let Some(d) = a.data {
        config.data = d;
    }
    if let Some(s) = a.shard {
        config.cluster.shard = s;
    }
    if let Some(h) = a.http {
        config.http.listen = h;
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let summary = host::run(
        &config,
        RunOptions {
            once: a.once,
            progress: true,
        },
        shutdown,
    )?;
    print!("{}", host::format_summary(&summary));
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
