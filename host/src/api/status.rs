//! What `GET /api/projections` and `projector status` show: one row per projection,
//! from the catalog (state, fault, accounting) and the live counters of its runners.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::registry::RosterEntry;
use crate::runner::Stats;
use crate::store::{Catalog, CatalogEntry, build_path};

/// One projection's status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProjectionStatus {
    /// The projection.
    pub name: String,
    /// The serving version (or the one running, before any serves).
    pub version: Option<u32>,
    /// Its state (`running`, `caught-up`, `paused`, `resumed`, `stopped`, `faulted`).
    pub state: String,
    /// Commit position of the last event applied by the serving build.
    pub position: u64,
    /// Events between its checkpoint and the source head (0 when caught up); an
    /// estimate from the bytes left while catching up a file.
    pub lag_events: u64,
    /// Events per second, recently.
    pub events_per_second: f64,
    /// Events read from the source (matched or not).
    pub events_read: u64,
    /// Events that went into the module in this run.
    pub events_handled: u64,
    /// Ops written.
    pub ops_written: u64,
    /// Events skipped or dead-lettered.
    pub events_failed: u64,
    /// Dead letters waiting in its serving build.
    pub dead_letters: u64,
    /// The last fault, when faulted.
    pub last_fault: Option<FaultStatus>,
    /// A rebuild in progress beside the serving build.
    pub rebuild: Option<RebuildStatus>,
    /// Whether a runner is processing it now on this host.
    pub running: bool,
    /// A new build the release rules held back, with why and the comparison.
    pub held: Option<HeldStatus>,
    /// The version a rollback stepped back from (not run until `promote` or new code).
    pub rolled_back_from: Option<u32>,
    /// Interests of the serving module that matched no event in the whole history.
    pub warnings: Vec<String>,
    /// Why the last rebuild beside the serving build failed.
    pub failed_rebuild: Option<String>,
    /// The host that runs it (`shard I/N (URL)`), when asked through the API.
    pub owner: Option<String>,
    /// Fuel its module used.
    pub fuel_used: u64,
    /// Largest memory an instance of its module grew to, in bytes.
    pub peak_memory_bytes: u64,
    /// Seconds between now and the creation time of the last event applied (0 when
    /// events carry no creation time).
    pub lag_seconds: f64,
    /// `shared` while it reads from the host's one reader of the source, `own` while it
    /// reads on its own (catching up behind it, or left behind); None when not running.
    pub ingest: Option<String>,
    /// Batch durations this run: counts per bucket upper bound (ms; the last is +Inf)
    /// and their sum in seconds.
    pub batch_seconds: Option<BatchHistogram>,
}

/// A histogram of batch durations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchHistogram {
    /// Upper bounds in milliseconds.
    pub le_ms: Vec<u64>,
    /// Batches per bucket (not cumulative); one more than `le_ms` (the rest).
    pub counts: Vec<u64>,
    /// Sum of all durations, in seconds.
    pub sum: f64,
}

/// A held build, as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeldStatus {
    /// Its version.
    pub version: u32,
    /// Which rules held it.
    pub reason: String,
    /// Table by table, against the serving build.
    pub comparison: Vec<crate::store::TableComparison>,
}

/// A fault, as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultStatus {
    /// What happened, naming the event.
    pub message: String,
    /// Where the projection stands (its checkpoint).
    pub position: u64,
}

/// A rebuild's progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RebuildStatus {
    /// The version being built.
    pub version: u32,
    /// `rebuilding`, or `held` (caught up, waiting for `projector promote`).
    pub state: String,
    /// Done, in percent of the source.
    pub percent: f64,
    /// Seconds to go at the current rate, when known.
    pub eta_seconds: Option<f64>,
    /// Its events per second.
    pub events_per_second: f64,
}

/// Remembers each runner's last sample, to turn counters into rates.
#[derive(Default)]
pub struct Rates {
    last: BTreeMap<(String, u32, bool), (u64, Instant, f64)>,
}

impl Rates {
    /// Events per second of `stats` since the last call (smoothed).
    fn rate(&mut self, key: (String, u32, bool), stats: &Stats) -> f64 {
        let now = Instant::now();
        let events = stats.events_read.load(Ordering::Relaxed);
        let entry = self.last.entry(key).or_insert((events, now, 0.0));
        let dt = now.duration_since(entry.1).as_secs_f64();
        if dt >= 0.25 {
            let rate = events.saturating_sub(entry.0) as f64 / dt;
            entry.2 = if entry.2 == 0.0 {
                rate
            } else {
                0.5 * entry.2 + 0.5 * rate
            };
            entry.0 = events;
            entry.1 = now;
        }
        entry.2
    }
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Events left to read, estimated from the bytes left at the bytes per event so far.
fn lag(stats: &Stats) -> u64 {
    if stats.caught_up.load(Ordering::Relaxed) {
        return 0;
    }
    let (done, total, read) = (
        load(&stats.progress_done),
        load(&stats.progress_total),
        load(&stats.events_read),
    );
    if done == 0 || total <= done {
        return 0;
    }
    ((total - done) as f64 * read as f64 / done as f64) as u64
}

/// Every projection of the catalog, with the live counters of `roster` (empty offline).
pub fn statuses(
    data: &Path,
    roster: &[RosterEntry],
    rates: &mut Rates,
) -> Result<Vec<ProjectionStatus>> {
    let catalog = Catalog::open_read_only(data)?;
    let mut out = Vec::new();
    for entry in catalog.entries()? {
        let mut s = status(data, &entry, roster, rates);
        let release = catalog.release(&entry.name)?;
        s.held = release.held.map(|h| HeldStatus {
            version: h.build.version,
            reason: h.reason,
            comparison: serde_json::from_str(&h.comparison).unwrap_or_default(),
        });
        s.rolled_back_from = release.rolled_back.map(|b| b.version);
        s.failed_rebuild = catalog.failed_rebuild(&entry.name)?;
        if let Some(r) = s.rebuild.as_mut()
            && s.held.as_ref().is_some_and(|h| h.version == r.version)
        {
            r.state = "held".into();
        }
        out.push(s);
    }
    Ok(out)
}

fn status(
    data: &Path,
    e: &CatalogEntry,
    roster: &[RosterEntry],
    rates: &mut Rates,
) -> ProjectionStatus {
    let serving = roster.iter().find(|r| r.name == e.name && !r.rebuild);
    let rebuilding = roster.iter().find(|r| r.name == e.name && r.rebuild);
    let mut s = ProjectionStatus {
        name: e.name.clone(),
        version: e.serving_version.or(e.running_version),
        state: e.state.to_string(),
        events_read: e.accounting.events_read,
        ops_written: e.accounting.ops_written,
        events_failed: e.accounting.events_failed,
        fuel_used: e.accounting.fuel_used,
        peak_memory_bytes: e.accounting.peak_memory,
        running: serving.is_some(),
        ..Default::default()
    };
    if let Some(r) = serving {
        s.position = load(&r.stats.position);
        s.lag_events = lag(&r.stats);
        s.events_per_second = rates.rate((r.name.clone(), r.version, false), &r.stats);
        s.events_read = load(&r.stats.events_read);
        s.events_handled = load(&r.stats.events_handled);
        s.ops_written = load(&r.stats.ops_written);
        s.events_failed = load(&r.stats.events_failed);
        s.fuel_used = load(&r.stats.fuel_used);
        s.peak_memory_bytes = load(&r.stats.peak_memory);
        let shared = r.stats.shared_ingest.load(Ordering::Relaxed);
        s.ingest = Some(if shared { "shared" } else { "own" }.into());
        let created = load(&r.stats.last_created_ms);
        if created > 0 && !r.stats.caught_up.load(Ordering::Relaxed) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            s.lag_seconds = now.saturating_sub(created) as f64 / 1000.0;
        }
        s.batch_seconds = Some(BatchHistogram {
            le_ms: crate::runner::BATCH_BUCKETS_MS.to_vec(),
            counts: r.stats.batch_ms.iter().map(load).collect(),
            sum: load(&r.stats.batch_us_sum) as f64 / 1e6,
        });
        s.warnings = r
            .stats
            .unmatched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| format!("{w} matched no event in the whole history"))
            .collect();
    }
    if let Some(r) = rebuilding {
        let (done, total) = (
            load(&r.stats.progress_done),
            load(&r.stats.progress_total).max(1),
        );
        let rate = rates.rate((r.name.clone(), r.version, true), &r.stats);
        let left = lag(&r.stats);
        s.rebuild = Some(RebuildStatus {
            version: r.version,
            state: "rebuilding".into(),
            percent: (done as f64 * 100.0 / total as f64).min(100.0),
            eta_seconds: (rate > 0.0).then(|| left as f64 / rate),
            events_per_second: rate,
        });
    }
    if let Some(v) = e.serving_version {
        let path = build_path(data, &e.name, v, e.serving_generation);
        s.dead_letters = count_dead_letters(&path).unwrap_or(0);
        if serving.is_none() {
            s.position = checkpoint(&path).unwrap_or(0);
        }
    }
    if e.state == crate::store::ProjectionState::Faulted {
        s.last_fault = Some(FaultStatus {
            message: e.reason.clone().unwrap_or_default(),
            position: s.position,
        });
    }
    s
}

fn read_only(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn count_dead_letters(path: &Path) -> rusqlite::Result<u64> {
    read_only(path)?.query_row("SELECT count(*) FROM _projector_dead_letters", [], |r| {
        r.get::<_, i64>(0).map(|n| n as u64)
    })
}

fn checkpoint(path: &Path) -> rusqlite::Result<u64> {
    read_only(path)?.query_row(
        "SELECT commit_position FROM _projector_checkpoint",
        [],
        |r| r.get::<_, i64>(0).map(|n| n as u64),
    )
}

/// The statuses as a terminal table.
pub fn table(statuses: &[ProjectionStatus]) -> String {
    let mut out = format!(
        "{:<20} {:>4} {:<10} {:>10} {:>9} {:>9} {:>10} {:>10} {:>7} {:>6}  {}\n",
        "PROJECTION",
        "VER",
        "STATE",
        "POSITION",
        "LAG",
        "EVENTS/S",
        "HANDLED",
        "OPS",
        "FAILED",
        "DEAD",
        "NOTE"
    );
    for s in statuses {
        let note = match (&s.last_fault, &s.held, &s.rebuild) {
            (Some(f), _, _) => f.message.clone(),
            (None, Some(h), _) => format!("v{} HELD: {}", h.version, h.reason),
            (None, None, Some(r)) => format!("rebuilding v{}: {:.0}%", r.version, r.percent),
            _ => match (&s.failed_rebuild, s.rolled_back_from, s.warnings.first()) {
                (Some(f), _, _) => format!("REBUILD FAILED: {f}"),
                (None, Some(v), _) => format!("rolled back from v{v}"),
                (None, None, Some(w)) => w.clone(),
                _ => String::new(),
            },
        };
        let note = match &s.owner {
            Some(o) if !o.starts_with("shard 0/1") => format!("[{o}] {note}"),
            _ => note,
        };
        out.push_str(&format!(
            "{:<20} {:>4} {:<11} {:>10} {:>9} {:>9.0} {:>10} {:>10} {:>7} {:>6}  {}\n",
            s.name,
            s.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            s.state,
            s.position,
            s.lag_events,
            s.events_per_second,
            s.events_handled,
            s.ops_written,
            s.events_failed,
            s.dead_letters,
            note
        ));
    }
    out
}
