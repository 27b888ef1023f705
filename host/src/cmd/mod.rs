//! The `projector` command line: one module per command, each an `Args` (its flags)
//! and a `run` that calls into the library and prints for people.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod build;
mod diff;
mod drop;
mod events;
mod import;
mod new;
mod promote;
mod query;
mod replay;
mod resume;
mod retry_dead_letters;
mod rollback;
mod run;
mod status;
mod test;
mod verify;

/// The command line.
#[derive(Parser)]
#[command(
    name = "projector",
    version,
    about = "WebAssembly projections over an event store, into SQLite"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` (colored only on a terminal) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// For log collectors.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Build a guest crate into a projection component.
    Build(build::Args),
    /// Run the projections of a config over its source.
    Run(run::Args),
    /// Run a module twice over the same events (different batch sizes) and compare its tables.
    Verify(verify::Args),
    /// Run two modules over the same events and show, per table, rows added, removed, changed.
    Diff(diff::Args),
    /// Delete a stopped projection's tables (every version) and its catalog entry.
    Drop(drop::Args),
    /// Rebuild a projection from the first event through its current module, beside the
    /// serving build; with --until, pause there for analysis. Asks a running host, or
    /// runs here when none runs on the data folder.
    Replay(replay::Args),
    /// Load an NDJSON event file into an EventStoreDB / KurrentDB server (idempotent).
    Import(import::Args),
    /// Clear a projection's fault or pause; a running host continues it at once.
    Resume(resume::Args),
    /// Run dead-lettered events of a projection again (after a fix), then drop their letters.
    RetryDeadLetters(retry_dead_letters::Args),
    /// Run one read-only SQL statement against a projection's serving tables (NDJSON out).
    Query(query::Args),
    /// Show every projection: state, version, position, lag, rate, counters, faults.
    Status(status::Args),
    /// Create a projection project (Rust, Python or JavaScript) over the shop events.
    New(new::Args),
    /// Run a projection's given/when/then cases.
    Test(test::Args),
    /// List the event types of a source: counts, stream prefixes, data fields.
    Events(events::Args),
    /// Cut over to a build the release rules held (or undo a rollback).
    Promote(promote::Args),
    /// Serve the previous build again (it catches up through its own module).
    Rollback(rollback::Args),
}

impl Cli {
    /// Run the command.
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Build(a) => build::run(a),
            Command::Run(a) => run::run(a),
            Command::Verify(a) => verify::run(a),
            Command::Diff(a) => diff::run(a),
            Command::Drop(a) => drop::run(a),
            Command::Replay(a) => replay::run(a),
            Command::Import(a) => import::run(a),
            Command::Resume(a) => resume::run(a),
            Command::RetryDeadLetters(a) => retry_dead_letters::run(a),
            Command::Query(a) => query::run(a),
            Command::Status(a) => status::run(a),
            Command::New(a) => new::run(a),
            Command::Test(a) => test::run(a),
            Command::Events(a) => events::run(a),
            Command::Promote(a) => promote::run(a),
            Command::Rollback(a) => rollback::run(a),
        }
    }
}
