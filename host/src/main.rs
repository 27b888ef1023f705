//! The `projector` binary: logging, then the command (see `cmd/`).

mod cmd;

use std::io::IsTerminal as _;

use clap::Parser as _;

/// The host allocates per event (batches, lifted ops, window rows): mimalloc is faster
/// at that than glibc's malloc (see PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` and `mi_option_purge_delay` (their places
/// in `mi_option_t` of the mimalloc `libmimalloc-sys` builds, v3; the crate names only
/// older options). Check both against `mimalloc.h` when the crate is upgraded.
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
#[cfg(target_os = "linux")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc as the host's memory holds what it uses: arenas committed on demand and
/// freed memory given back after a second. With its defaults, 100 idle projections held
/// ~1 GiB resident (eager commit: a heap per runner thread), against ~130-150 MiB with
/// these (~180 MiB since the Wasm instance pool keeps its slots' memory resident). Giving memory back at once instead of after a second held no less at idle
/// but faulted ~55k more pages per 1M events (a batch's memory freed, then taken
/// again). Set before the first allocation (the first arena is reserved then), so it
/// runs as an ELF constructor, before the Rust runtime allocates anything.
#[cfg(target_os = "linux")]
extern "C" fn commit_on_demand() {
    // SAFETY: sets options; nothing has allocated through mimalloc yet.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 1000);
    }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ON_DEMAND: extern "C" fn() = commit_on_demand;

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
