//! Run the test server by hand: `esdb-test-server --listen 127.0.0.1:2113 --events FILE`,
//! then point `projector run --source esdb://127.0.0.1:2113?tls=false` at it.

use std::path::PathBuf;

use clap::Parser;

/// A protocol-level EventStoreDB test server (in memory, for local experiments).
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2113")]
    listen: std::net::SocketAddr,
    /// An NDJSON event file to load at start.
    #[arg(long)]
    events: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let events = match &args.events {
        Some(p) => esdb_test_server::read_ndjson(p)?,
        None => Vec::new(),
    };
    let server = esdb_test_server::TestServer::start_on(args.listen, events)?;
    println!(
        "listening on {} with {} events; Ctrl-C stops",
        server.url(),
        server.len()
    );
    loop {
        std::thread::park();
    }
}
