//! A runner's live counters, read by the progress display, the summary and the API.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::runtime::Module;
use crate::store::Accounting;

/// Live counters of one runner, read by the progress display and the summary.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events read from the source (matched or not), including before this run.
    pub events_read: AtomicU64,
    /// Commit position of the last event applied.
    pub position: AtomicU64,
    /// Creation time (ms since the epoch) of the last event applied.
    pub last_created_ms: AtomicU64,
    /// `events_read` when this run started (the rest was read by earlier runs).
    pub events_at_start: AtomicU64,
    /// Events that matched the interests and went into the module.
    pub events_handled: AtomicU64,
    /// Ops applied to the read model.
    pub ops_written: AtomicU64,
    /// Rows written to SQLite in this run (ops coalesced per row over each commit).
    pub rows_written: AtomicU64,
    /// Fuel the module consumed (0 when metering is off).
    pub fuel_used: AtomicU64,
    /// Batches applied.
    pub batches: AtomicU64,
    /// Source progress: done so far...
    pub progress_done: AtomicU64,
    /// ...out of this (bytes for a file).
    pub progress_total: AtomicU64,
    /// True once the runner reached the end of the source.
    pub caught_up: AtomicBool,
    /// True while it reads from the host's shared reader (not a source of its own).
    pub shared_ingest: AtomicBool,
    /// Nanoseconds spent reading the source, in Wasm, writing SQLite, committing.
    pub read_ns: AtomicU64,
    /// Inside Wasm, including `get`.
    pub wasm_ns: AtomicU64,
    /// Validating and writing ops.
    pub write_ns: AtomicU64,
    /// Committing transactions.
    pub commit_ns: AtomicU64,
    /// Part of `wasm_ns` spent serving `get` imports.
    pub get_ns: AtomicU64,
    /// Events skipped or dead-lettered under the error policy.
    pub events_failed: AtomicU64,
    /// Largest linear memory an instance of the module grew to, in bytes.
    pub peak_memory: AtomicU64,
    /// Batches by how long read-call-apply took: counts per [`BATCH_BUCKETS_MS`] bucket
    /// (the last counts the rest).
    pub batch_ms: [AtomicU64; BATCH_BUCKETS_MS.len() + 1],
    /// Sum of the batch durations, in microseconds.
    pub batch_us_sum: AtomicU64,
    /// Events handled per event type (for the release rules and interest warnings).
    pub matched_types: Mutex<BTreeMap<String, u64>>,
    /// Events handled per declared stream prefix, in manifest order.
    pub matched_prefixes: Mutex<Vec<u64>>,
    /// True when this runner read the source from its first event.
    pub from_start: AtomicBool,
    /// Event types and stream prefixes of the manifest that matched no event in the
    /// whole history (known once caught up from the first event).
    pub unmatched: Mutex<Vec<String>>,
}

/// Upper bounds (ms) of the batch-duration histogram's buckets.
pub const BATCH_BUCKETS_MS: [u64; 8] = [1, 5, 10, 50, 100, 500, 1000, 5000];

impl Stats {
    /// Count one batch that took `d`.
    pub fn record_batch(&self, d: std::time::Duration) {
        let ms = d.as_millis() as u64;
        let i = BATCH_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(BATCH_BUCKETS_MS.len());
        self.batch_ms[i].fetch_add(1, Ordering::Relaxed);
        self.batch_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Count a batch of handled events by type and by declared stream prefix.
    pub fn count_matches(&self, events: &[&crate::wit::Event], prefixes: &[String]) {
        // Counted per batch first (a few types, hashed fast), then merged under the locks.
        let mut batch: rustc_hash::FxHashMap<&str, u64> = Default::default();
        let mut batch_prefixes = vec![0u64; prefixes.len()];
        for e in events {
            *batch.entry(e.event_type.as_str()).or_default() += 1;
            for (n, p) in batch_prefixes.iter_mut().zip(prefixes) {
                if crate::small_key::starts_with(e.stream_id.as_bytes(), p.as_bytes()) {
                    *n += 1;
                }
            }
        }
        let mut types = self.matched_types.lock().unwrap_or_else(|e| e.into_inner());
        for (t, n) in batch {
            match types.get_mut(t) {
                Some(total) => *total += n,
                None => {
                    types.insert(t.to_string(), n);
                }
            }
        }
        let mut per_prefix = self
            .matched_prefixes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        per_prefix.resize(prefixes.len(), 0);
        for (total, n) in per_prefix.iter_mut().zip(batch_prefixes) {
            *total += n;
        }
    }

    /// The manifest's interests that matched nothing so far.
    pub fn unmatched_interests(&self, types: &[String], prefixes: &[String]) -> Vec<String> {
        let seen = self.matched_types.lock().unwrap_or_else(|e| e.into_inner());
        let per_prefix = self
            .matched_prefixes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = types
            .iter()
            .filter(|t| !seen.contains_key(t.as_str()))
            .map(|t| format!("event type `{t}`"))
            .collect();
        for (i, p) in prefixes.iter().enumerate() {
            if per_prefix.get(i).copied().unwrap_or(0) == 0 {
                out.push(format!("stream prefix `{p}`"));
            }
        }
        out
    }

    /// The counters the catalog keeps.
    pub fn accounting(&self) -> Accounting {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Accounting {
            events_read: load(&self.events_read),
            ops_written: load(&self.ops_written),
            fuel_used: load(&self.fuel_used),
            peak_memory: load(&self.peak_memory),
            events_failed: load(&self.events_failed),
        }
    }
}

/// Add the time since `since` to a nanosecond counter.
pub fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// How one projection's run ended.
#[derive(Debug, Clone)]
pub struct ProjectionReport {
    /// The projection.
    pub name: String,
    /// Its manifest version.
    pub version: u32,
    /// Events read from the source (matched or not), in every run.
    pub events_read: u64,
    /// Of those, read in this run.
    pub events_this_run: u64,
    /// Events that went into the module.
    pub events_handled: u64,
    /// Ops applied.
    pub ops_written: u64,
    /// Rows written to SQLite in this run (the ops coalesced per row).
    pub rows_written: u64,
    /// Fuel consumed (0 when metering is off).
    pub fuel_used: u64,
    /// Batches applied.
    pub batches: u64,
    /// Events skipped or dead-lettered under the error policy.
    pub events_failed: u64,
    /// Largest linear memory an instance grew to, in bytes.
    pub peak_memory: u64,
    /// Seconds spent reading the source, in Wasm, writing SQLite, committing.
    pub seconds: [f64; 4],
    /// Seconds of the Wasm time spent serving `get` from SQLite.
    pub get_seconds: f64,
    /// None when it ran cleanly; the reason otherwise.
    pub error: Option<String>,
}

impl ProjectionReport {
    /// The report of one runner, from its counters and how it ended.
    pub fn of(module: &Module, stats: &Stats, error: Option<anyhow::Error>) -> ProjectionReport {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ProjectionReport {
            name: module.schema().name.clone(),
            version: module.schema().version,
            events_read: load(&stats.events_read),
            events_this_run: load(&stats.events_read).saturating_sub(load(&stats.events_at_start)),
            events_handled: load(&stats.events_handled),
            ops_written: load(&stats.ops_written),
            rows_written: load(&stats.rows_written),
            fuel_used: load(&stats.fuel_used),
            batches: load(&stats.batches),
            events_failed: load(&stats.events_failed),
            peak_memory: load(&stats.peak_memory),
            get_seconds: load(&stats.get_ns) as f64 / 1e9,
            seconds: [
                &stats.read_ns,
                &stats.wasm_ns,
                &stats.write_ns,
                &stats.commit_ns,
            ]
            .map(|a| load(a) as f64 / 1e9),
            error: error.map(|e| format!("{e:#}")),
        }
    }
}
