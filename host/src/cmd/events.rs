//! `projector events`: the event types of a source, their streams and data fields.

use std::process::ExitCode;

use anyhow::Result;

/// Flags of `projector events`.
#[derive(clap::Args)]
pub struct Args {
    /// The events (an NDJSON file or an esdb:// URL).
    #[arg(long)]
    source: String,
    /// Read at most this many events.
    #[arg(long)]
    limit: Option<u64>,
}

/// Survey the source and print one block per event type, most frequent first.
pub fn run(a: Args) -> Result<ExitCode> {
    let s = projector::authoring::survey::survey(&a.source, a.limit)?;
    println!(
        "{} events, {} event types (system events, $…, are not listed)",
        s.events,
        s.types.len()
    );
    if s.malformed > 0 {
        println!("{} malformed events skipped", s.malformed);
    }
    for t in &s.types {
        let streams: Vec<String> = t
            .streams
            .iter()
            .map(|(p, n)| format!("{p} ({n})"))
            .collect();
        println!(
            "\n{}  {} events  streams: {}",
            t.name,
            t.count,
            streams.join(", ")
        );
        for (path, f) in &t.fields {
            let kinds: Vec<&str> = f.kinds.iter().copied().collect();
            let sample = f.sample.as_deref().unwrap_or("");
            println!(
                "  {path:<28} {:<14} {:>9}  {sample}",
                kinds.join("|"),
                f.count
            );
        }
        if t.more_fields > 0 {
            println!("  (more field paths, not listed)");
        }
        if t.not_json > 0 {
            println!("  {} events with data that is not JSON", t.not_json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
