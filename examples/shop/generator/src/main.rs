//! `shop-events`: write a seeded, realistic shop event file (NDJSON).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Generate shop events: orders, carts, customers, and system noise.
#[derive(Parser)]
struct Args {
    /// How many events.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Seed: the same seed and count give the same file, byte for byte.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file ("-" for stdout).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.as_os_str() == "-" {
        let mut out = BufWriter::new(std::io::stdout().lock());
        shop_events::generate(args.seed, args.count, &mut out)?;
        out.flush()?;
    } else {
        let file = std::fs::File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        shop_events::generate(args.seed, args.count, &mut out)?;
        out.flush()?;
        eprintln!("wrote {} events to {}", args.count, args.output.display());
    }
    Ok(())
}
