//! Run the test server by hand: `esdb-test-server --listen 127.0.0.1:2113 --events FILE`,
//! then point `projector run --source esdb://127.0.0.1:2113?tls=false` at it. With
//! `--nodes 3` it runs a cluster on three consecutive ports (gossip seeds for the client).

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
    /// Nodes sharing the log, on consecutive ports from `--listen` (the first leads).
    #[arg(long, default_value_t = 1)]
    nodes: u16,
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
    let addrs: Vec<std::net::SocketAddr> = (0..args.nodes.max(1))
        .map(|k| {
            let mut a = args.listen;
            a.set_port(args.listen.port().saturating_add(k));
            a
        })
        .collect();
    let cluster = esdb_test_server::TestCluster::start_on(&addrs, events)?;
    println!(
        "listening on {} with {} events; Ctrl-C stops",
        cluster.url(""),
        cluster.len()
    );
    loop {
        std::thread::park();
    }
}
