//! The `projector` binary: logging, then the command (see `cmd/`).

mod cmd;

use std::io::IsTerminal as _;

use clap::Parser as _;

/// The host allocates per event (batches, lifted ops, window rows): mimalloc is faster
/// at that than glibc's malloc (see PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    // The client crate logs an ERROR for every failed connection attempt; the source
    // logs one WARN per attempt itself (attempt number and delay), so it stays quiet.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        "info,wasmtime=warn,cranelift=warn,kurrentdb=off,eventstore=off".into()
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cmd::LogFormat::Json => logs.json().init(),
        cmd::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
