//! `projector import`: load an NDJSON event file into an EventStoreDB / KurrentDB server,
//! so the examples can be replayed against a real server.
//!
//! Events are appended in file order (so `$all` keeps the file's order), each run of
//! consecutive events of one stream as one append, with the stream revision it expects
//! and event ids taken from the file (or derived from stream and revision): running the
//! import again appends nothing twice.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kurrentdb::{AppendToStreamOptions, Client, EventData, StreamState};
use sha2::{Digest, Sha256};

use crate::source::{EventBuffer, EventSource, Filter, ndjson::NdjsonSource};
use crate::wit::Event;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Events sent (including those the server already had).
    pub events: u64,
    /// Appends made.
    pub appends: u64,
    /// System events (`$…`) left out.
    pub skipped: u64,
}

/// Append every event of `file` to the server at `url`, `batch` events per append at most.
pub fn import(file: &Path, url: &str, batch: usize) -> Result<ImportReport> {
    let settings: kurrentdb::ClientSettings = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid EventStoreDB connection string {url}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    runtime.block_on(async {
        let client =
            Client::new(settings).map_err(|e| anyhow::anyhow!("creating the client: {e}"))?;
        // System events are the server's own; every other event is imported.
        let mut source = NdjsonSource::open(file, None, Filter::default(), false)?;
        let (mut report, mut buffer) = (ImportReport::default(), EventBuffer::default());
        let (started, mut last_log) = (Instant::now(), Instant::now());
        let mut run: Vec<Event> = Vec::new();
        loop {
            buffer.clear();
            let read = source.read_batch(&mut buffer, 10_000, Duration::from_millis(100))?;
            report.skipped += read.read - buffer.len() as u64;
            for event in buffer.as_slice() {
                if run.first().is_some_and(|f| f.stream_id != event.stream_id)
                    || run.len() >= batch.max(1)
                {
                    append(&client, &mut run, &mut report).await?;
                }
                run.push(event.clone());
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                tracing::info!(
                    events = report.events,
                    appends = report.appends,
                    "importing"
                );
            }
            if read.at_end {
                break;
            }
        }
        append(&client, &mut run, &mut report).await?;
        tracing::info!(
            events = report.events,
            appends = report.appends,
            seconds = started.elapsed().as_secs_f64(),
            "imported"
        );
        Ok(report)
    })
}

/// Append one run of events of one stream, expecting the revision before its first.
async fn append(client: &Client, run: &mut Vec<Event>, report: &mut ImportReport) -> Result<()> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let stream = first.stream_id.clone();
    let expected = match first.revision {
        0 => StreamState::NoStream,
        r => StreamState::StreamRevision(r - 1),
    };
    let events = run
        .iter()
        .map(event_data)
        .collect::<Result<Vec<EventData>>>()?;
    let options = AppendToStreamOptions::default().stream_state(expected);
    client
        .append_to_stream(stream.clone(), &options, events)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "appending {} events to `{stream}` at revision {} (line {}): {e}",
                run.len(),
                first.revision,
                first.position.commit
            )
        })?;
    report.events += run.len() as u64;
    report.appends += 1;
    run.clear();
    Ok(())
}

/// The event as the client sends it: JSON data kept byte for byte, a stable id.
fn event_data(e: &Event) -> Result<EventData> {
    let data: &serde_json::value::RawValue = serde_json::from_slice(&e.data)
        .with_context(|| format!("line {}: data is not JSON", e.position.commit))?;
    let id = uuid::Uuid::parse_str(&e.event_id).unwrap_or_else(|_| {
        // Not a UUID in the file: derive one from what identifies the event.
        let h = Sha256::digest(format!("{}\n{}", e.stream_id, e.revision));
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    });
    let mut out = EventData::json(&e.event_type, &data)?.id(id);
    if !e.metadata.is_empty() {
        out = out.metadata(e.metadata.clone().into());
    }
    Ok(out)
}
