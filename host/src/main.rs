//! The `projector` command line: a thin shell over the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use projector::registry::Delivery;
use projector::{Config, RunOptions, host, query, toolchain};

#[derive(Parser)]
#[command(
    name = "projector",
    version,
    about = "WebAssembly projections over an event store, into SQLite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a Rust guest crate into a projection component.
    Build {
        /// The guest crate's folder.
        dir: PathBuf,
        /// Where to write the component (default: target/projections/<crate>.wasm).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the projections of a config over its source.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Event source, overriding the config (an NDJSON file).
        #[arg(long)]
        source: Option<String>,
        /// Data folder, overriding the config.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Exit once every projection has caught up with the end of the source.
        #[arg(long)]
        once: bool,
    },
    /// Run a module twice over the same events (different batch sizes) and compare its tables.
    Verify {
        module: PathBuf,
        #[arg(long)]
        source: String,
    },
    /// Run two modules over the same events and show, per table, rows added, removed, changed.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        source: String,
    },
    /// Delete a stopped projection's tables (every version) and its catalog entry.
    Drop {
        #[arg(long)]
        data: PathBuf,
        projection: String,
    },
    /// Rebuild a projection from the first event through its current module, beside the
    /// serving build; with --until, pause there for analysis. Asks a running host, or
    /// runs here when none runs on the data folder.
    Replay {
        #[arg(long)]
        config: PathBuf,
        projection: String,
        /// Stop (and serve, paused) at this position.
        #[arg(long)]
        until: Option<u64>,
    },
    /// Load an NDJSON event file into an EventStoreDB / KurrentDB server (idempotent).
    Import {
        /// The event file.
        #[arg(long)]
        source: PathBuf,
        /// The server's connection string (esdb://host:2113?tls=false).
        #[arg(long)]
        to: String,
        /// Events per append, at most.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Clear a projection's fault or pause; a running host continues it at once.
    Resume {
        #[arg(long)]
        data: PathBuf,
        projection: String,
    },
    /// Run dead-lettered events of a projection again (after a fix), then drop their letters.
    RetryDeadLetters {
        #[arg(long)]
        config: PathBuf,
        projection: String,
    },
    /// Run one read-only SQL statement against a projection's serving tables (NDJSON out).
    Query {
        #[arg(long)]
        data: PathBuf,
        projection: String,
        sql: String,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Build { dir, output } => {
            let out = toolchain::build(&dir, output.as_deref())?;
            println!("{}", out.display());
        }
        Command::Run {
            config,
            source,
            data,
            once,
        } => {
            let mut config = Config::load(&config)?;
            if let Some(s) = source {
                config.source = s;
            }
            if let Some(d) = data {
                config.data = d;
            }
            let shutdown = Arc::new(AtomicBool::new(false));
            let flag = shutdown.clone();
            ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
                .context("installing the Ctrl-C handler")?;
            let summary = host::run(
                &config,
                RunOptions {
                    once,
                    progress: true,
                },
                shutdown,
            )?;
            print!("{}", host::format_summary(&summary));
            if !summary.ok() {
                return Ok(std::process::ExitCode::from(2));
            }
        }
        Command::RetryDeadLetters { config, projection } => {
            let r = projector::dead_letters::retry(&Config::load(&config)?, &projection)?;
            println!(
                "{projection}: {} dead-lettered events applied, {} still failing",
                r.applied, r.still_failing
            );
        }
        Command::Diff { old, new, source } => {
            let diffs = projector::diff::diff(&old, &new, &source, &Default::default())?;
            for d in &diffs {
                println!(
                    "{:<24} +{} added  -{} removed  ~{} changed  ({} unchanged)",
                    d.table, d.added, d.removed, d.changed, d.same
                );
                for e in &d.examples {
                    println!("    {e}");
                }
            }
        }
        Command::Import { source, to, batch } => {
            let t0 = std::time::Instant::now();
            let r = projector::import::import(&source, &to, batch)?;
            println!(
                "imported {} events in {} appends ({} system events left out) in {:.1} s",
                r.events,
                r.appends,
                r.skipped,
                t0.elapsed().as_secs_f64()
            );
        }
        Command::Drop { data, projection } => {
            projector::store::drop_projection(&data, &projection)?;
            println!("{projection}: tables and catalog entry deleted");
        }
        Command::Resume { data, projection } => {
            match projector::registry::resume(&data, &projection)? {
                Delivery::Requested => {
                    println!("{projection}: asked the running host to resume it")
                }
                Delivery::Done => {
                    println!("{projection}: cleared; it runs again at the next start")
                }
            }
        }
        Command::Replay {
            config,
            projection,
            until,
        } => {
            let config = Config::load(&config)?;
            match projector::registry::replay(&config, &projection, until)? {
                Delivery::Requested => println!(
                    "{projection}: asked the running host to replay it; the current build serves until the new one has caught up"
                ),
                Delivery::Done => println!(
                    "{projection}: replayed{}; the new build serves",
                    until
                        .map(|u| format!(" until position {u} (paused there)"))
                        .unwrap_or_default()
                ),
            }
        }
        Command::Verify { module, source } => {
            let report =
                projector::verify::verify(&module, &source, Default::default(), [10_000, 97])?;
            for (a, b) in report.runs[0].iter().zip(&report.runs[1]) {
                let mark = if a == b { "same" } else { "DIFFERENT" };
                println!(
                    "{:<24} {:>9} rows {} | {:>9} rows {}  {mark}",
                    a.table,
                    a.rows,
                    &a.sha256[..16],
                    b.rows,
                    &b.sha256[..16]
                );
            }
            if !report.deterministic() {
                println!(
                    "{}: NOT deterministic: the tables depend on batch boundaries or hidden state",
                    report.projection
                );
                return Ok(std::process::ExitCode::from(3));
            }
            println!(
                "{}: deterministic (batches of 10000 and of 97 events give identical tables)",
                report.projection
            );
        }
        Command::Query {
            data,
            projection,
            sql,
        } => {
            let stdout = std::io::stdout();
            query::query(&data, &projection, &sql, &mut stdout.lock())?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
