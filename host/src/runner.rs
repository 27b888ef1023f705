//! One runner per projection: source → module → ops → SQLite, batch after batch.
//!
//! The path of an event: `source.read_batch` (filtered by the manifest's interests)
//! → `module.handle` (one fresh instance per batch) → `db.apply_batch` (ops and
//! checkpoint in one savepoint) → `db.commit` (every batch when live; every
//! `commit_events` / `commit_interval_ms` while catching up).
//!
//! The registry steers a runner through its [`Control`]: stop, swap in new code at the
//! next batch boundary, or run as a *shadow* that rebuilds a new version beside the
//! serving one and cuts over (one catalog update) once it has caught up.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::config::{BatchSettings, ErrorPolicy};
use crate::runtime::wit::Level;
use crate::runtime::{CallError, Module};
use crate::source::{self, EventSource, Filter};
use crate::store::{Catalog, Checkpoint, OpError, OpLimits, ProjectionDb};

/// Live counters of one runner, read by the progress display and the summary.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events read from the source (matched or not), including before this run.
    pub events_read: AtomicU64,
    /// Events that matched the interests and went into the module.
    pub events_handled: AtomicU64,
    /// Ops applied to the read model.
    pub ops_written: AtomicU64,
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
}

fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// How the registry steers a running runner; shared between them.
#[derive(Default)]
pub struct Control {
    /// Stop after the current batch.
    pub stop: AtomicBool,
    /// New code of the same version and tables, swapped in at the next batch boundary.
    pub swap: Mutex<Option<Arc<Module>>>,
    /// True while this runner owns the projection's catalog row; a shadow gets it at cutover.
    pub primary: AtomicBool,
    /// Set by a shadow once it has caught up and readers point at its tables.
    pub cut_over: AtomicBool,
}

impl Control {
    /// A control for a runner that owns its projection (not a shadow).
    pub fn primary() -> Arc<Control> {
        let c = Control::default();
        c.primary.store(true, Ordering::Relaxed);
        Arc::new(c)
    }
}

/// Why a projection stopped processing.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Module(#[from] CallError),
    #[error("{0}")]
    Ops(#[from] OpError),
    #[error("recording a failed event: {0}")]
    Record(String),
}

/// A fault with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("projection `{name}` v{version} faulted in the batch after position {after}: {fault}")]
pub struct ProjectionFault {
    /// The projection.
    pub name: String,
    /// Its manifest version.
    pub version: u32,
    /// Commit position of the last committed event; the failed batch starts after it.
    pub after: u64,
    /// What went wrong.
    pub fault: Fault,
}

/// Everything a runner needs.
pub struct Runner {
    /// The loaded module.
    pub module: Arc<Module>,
    /// The data folder.
    pub data: PathBuf,
    /// The event source spec (a file path or an EventStoreDB connection string).
    pub source: String,
    /// How a lost EventStoreDB subscription is retried.
    pub reconnect: crate::source::esdb::RetrySettings,
    /// Batching and commit cadence.
    pub batch: BatchSettings,
    /// Exit when the end of the source is reached (instead of following it).
    pub once: bool,
    /// What a failing batch does: stop, or isolate and skip / dead-letter the bad event.
    pub policy: ErrorPolicy,
    /// Set to stop every runner after its current batch.
    pub shutdown: Arc<AtomicBool>,
    /// This runner's own steering.
    pub control: Arc<Control>,
    /// For a shadow rebuild: the control of the runner it replaces at cutover.
    pub replaces: Option<Arc<Control>>,
    /// Which build of the version to write: None for the serving one (or the first); a
    /// replay of the same version writes a new one.
    pub generation: Option<u32>,
    /// Stop at this position and pause there (a replay for analysis); None to run on.
    pub until: Option<u64>,
    /// Live counters.
    pub stats: Arc<Stats>,
}

impl Runner {
    /// A runner of `module` as the config says (source, batching, error policy): the
    /// projection's own (primary), on its serving build, running on (no `until`).
    pub fn new(
        config: &crate::config::Config,
        module: Arc<Module>,
        once: bool,
        shutdown: Arc<AtomicBool>,
    ) -> Runner {
        let policy = config
            .projections
            .get(&module.schema().name)
            .map(|p| p.error_policy)
            .unwrap_or_default();
        Runner {
            module,
            data: config.data.clone(),
            source: config.source.clone(),
            reconnect: config.reconnect.clone(),
            batch: config.batch.clone(),
            once,
            policy,
            shutdown,
            control: Control::primary(),
            replaces: None,
            generation: None,
            until: None,
            stats: Arc::default(),
        }
    }

    /// Run until the source ends (`once`), shutdown, or a fault.
    pub fn run(mut self) -> Result<()> {
        let schema = self.module.schema().clone();
        let (name, version) = (schema.name.clone(), schema.version);
        let catalog = Catalog::open(&self.data)?;
        // A fault is sticky: the same module would fail on the same event again. Run only
        // when new code was shipped or someone said `projector resume`.
        if let Some(e) = catalog.entry(&name)?
            && e.state == "faulted"
            && e.running_version == Some(version)
            && e.module_sha256.as_deref() == Some(self.module.hash.as_str())
        {
            anyhow::bail!(
                "projection `{name}` is faulted ({}); ship a fixed module or run `projector resume {name}`",
                e.reason.unwrap_or_default()
            );
        }
        // A pause (after `replay --until`) holds until `projector resume` or another replay.
        if self.primary()
            && let Some(e) = catalog.entry(&name)?
            && e.state == "paused"
            && e.running_version == Some(version)
        {
            tracing::info!(projection = %name, "paused ({}); `projector resume {name}` continues it", e.reason.unwrap_or_default());
            return Ok(());
        }
        let generation = match self.generation {
            Some(g) => g,
            None => catalog.generation_of(&name, version)?,
        };
        self.generation = Some(generation);
        let db = ProjectionDb::open(&self.data, schema.clone(), generation)?;
        let mut checkpoint = db.checkpoint()?.unwrap_or_default();
        let resume = (checkpoint.position.commit > 0).then_some(checkpoint.position);
        let mut source: Box<dyn EventSource> = source::open(
            &self.source,
            resume,
            Filter::of(&schema),
            !self.once,
            &self.reconnect,
        )
        .with_context(|| format!("projection `{name}`"))?;
        if self.primary() {
            catalog.started(&name, version, &self.module.hash)?;
            tracing::info!(projection = %name, version, from = checkpoint.position.commit, "started");
        } else {
            tracing::info!(projection = %name, version, from = checkpoint.position.commit, "rebuilding beside the serving version");
        }
        self.stats
            .events_read
            .store(checkpoint.events, Ordering::Relaxed);

        let mut db = Some(db);
        let mut events = source::EventBuffer::default();
        let mut uncommitted = 0u64;
        let mut last_commit = Instant::now();
        let mut caught_up = false;
        while !self.shutdown.load(Ordering::Relaxed) && !self.control.stop.load(Ordering::Relaxed) {
            self.swap_in(&catalog)?;
            events.clear();
            let t0 = Instant::now();
            let read = match source.read_batch(
                &mut events,
                self.batch.max_events,
                Duration::from_millis(self.batch.max_wait_ms),
            ) {
                Ok(read) => read,
                Err(e)
                    if self.policy != ErrorPolicy::Stop
                        && e.downcast_ref::<source::ndjson::MalformedLine>().is_some() =>
                {
                    let bad = e
                        .downcast_ref::<source::ndjson::MalformedLine>()
                        .map_or(0, |m| m.line);
                    let at = crate::runtime::wit::Position {
                        commit: bad,
                        prepare: bad,
                    };
                    let d = db.as_mut().expect("db is back");
                    d.begin()?;
                    self.record_failure(d, at, None, &format!("{e:#}"))?;
                    checkpoint = Checkpoint {
                        position: at,
                        events: checkpoint.events + 1,
                    };
                    d.apply_batch(&[], checkpoint, self.op_limits())?;
                    continue;
                }
                Err(e) => {
                    // Bad input stops this projection; what was applied before it stays.
                    self.commit(db.as_mut().expect("db is back"), &catalog, &name)?;
                    let reason = format!(
                        "projection `{name}` stopped at position {}: {e:#}",
                        checkpoint.position.commit
                    );
                    self.set_state(&catalog, &name, "faulted", Some(&reason))?;
                    tracing::error!(projection = %name, "{reason}");
                    return Err(e.context(format!("projection `{name}`")));
                }
            };
            add_time(&self.stats.read_ns, t0);
            let (read, paused_at) = self.cut_at_until(&mut events, read);
            let p = source.progress();
            self.stats.progress_done.store(p.done, Ordering::Relaxed);
            self.stats.progress_total.store(p.total, Ordering::Relaxed);
            let Some(last) = read.last else {
                let d = db.as_mut().expect("db is lent only during a call");
                self.commit(d, &catalog, &name)?;
                if !read.at_end {
                    // Nothing yet, but not at the end (a server still catching up, or
                    // reconnecting): not caught up.
                    continue;
                }
                if !caught_up {
                    caught_up = true;
                    self.stats.caught_up.store(true, Ordering::Relaxed);
                    if !self.primary() {
                        self.cut_over(&catalog)?;
                    }
                    self.set_state(&catalog, &name, "caught-up", None)?;
                    if self.primary() {
                        catalog.serve(&name, version, self.generation.unwrap_or(0))?;
                    }
                    tracing::info!(projection = %name, version, position = checkpoint.position.commit, "caught up");
                }
                if self.once {
                    break;
                }
                std::thread::sleep(Duration::from_millis(self.batch.poll_ms));
                continue;
            };
            let next = Checkpoint {
                position: last,
                events: checkpoint.events + read.read,
            };
            db.as_mut().expect("db is back").begin()?;
            let outcome = match self.process(&mut db, events.as_slice(), next) {
                Err(fault)
                    if self.policy != ErrorPolicy::Stop
                        && !matches!(fault, Fault::Ops(OpError::Sql(_))) =>
                {
                    tracing::warn!(projection = %name, "batch failed ({fault}); retrying it event by event");
                    self.isolate(&mut db, events.as_slice(), next)
                }
                other => other,
            };
            let d = db.as_mut().expect("db is back");
            match outcome {
                Ok(ops) => {
                    checkpoint = next;
                    uncommitted += read.read;
                    self.stats
                        .events_read
                        .fetch_add(read.read, Ordering::Relaxed);
                    self.stats
                        .events_handled
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    self.stats
                        .ops_written
                        .fetch_add(ops as u64, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(fault) => {
                    // Earlier batches of this transaction are good: keep them.
                    self.commit(d, &catalog, &name)?;
                    let fault = ProjectionFault {
                        name: name.clone(),
                        version,
                        after: checkpoint.position.commit,
                        fault,
                    };
                    let reason = fault.to_string();
                    self.set_state(&catalog, &name, "faulted", Some(&reason))?;
                    tracing::error!(projection = %name, "{reason}");
                    return Err(fault.into());
                }
            }
            if let Some(at) = paused_at {
                self.commit(d, &catalog, &name)?;
                if !self.primary() {
                    self.cut_over(&catalog)?;
                }
                let reason = format!("replayed until position {at}");
                self.set_state(&catalog, &name, "paused", Some(&reason))?;
                tracing::info!(projection = %name, version, "paused: {reason}; its tables serve as of that position");
                return Ok(());
            }
            let live = read.at_end || caught_up;
            if live
                || uncommitted >= self.batch.commit_events
                || last_commit.elapsed() >= Duration::from_millis(self.batch.commit_interval_ms)
            {
                let t0 = Instant::now();
                self.commit(d, &catalog, &name)?;
                add_time(&self.stats.commit_ns, t0);
                uncommitted = 0;
                last_commit = Instant::now();
            }
        }
        self.commit(db.as_mut().expect("db is back"), &catalog, &name)?;
        if !self.once {
            self.set_state(&catalog, &name, "stopped", None)?;
        }
        tracing::info!(projection = %name, position = checkpoint.position.commit, "stopped");
        Ok(())
    }

    /// Commit, and record the accounting that goes with it.
    fn commit(&self, db: &mut ProjectionDb, catalog: &Catalog, name: &str) -> Result<()> {
        db.commit()?;
        if self.primary() {
            catalog.account(name, &self.stats)?;
        }
        Ok(())
    }

    /// With `until`: drop the events past it from the batch, and say whether the pause
    /// point is reached (the checkpoint then stops exactly there).
    fn cut_at_until(
        &self,
        events: &mut source::EventBuffer,
        mut read: source::ReadBatch,
    ) -> (source::ReadBatch, Option<u64>) {
        let (Some(until), Some(last)) = (self.until, read.last) else {
            return (read, None);
        };
        if last.commit < until {
            return (read, None);
        }
        let keep = events
            .as_slice()
            .iter()
            .take_while(|e| e.position.commit <= until)
            .count();
        events.truncate(keep);
        read.last = Some(crate::runtime::wit::Position {
            commit: until,
            prepare: until,
        });
        (read, Some(until))
    }

    /// True while this runner owns the catalog row (a shadow does not, until cutover).
    fn primary(&self) -> bool {
        self.control.primary.load(Ordering::Relaxed)
    }

    /// Record a state in the catalog, if this runner owns the row.
    fn set_state(
        &self,
        catalog: &Catalog,
        name: &str,
        state: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        if self.primary() {
            catalog.set_state(name, state, reason)?;
        } else if state == "faulted" {
            tracing::error!(projection = %name, version = self.module.schema().version, "the rebuild failed; the serving version keeps serving: {}", reason.unwrap_or_default());
        }
        Ok(())
    }

    /// A caught-up shadow takes over: the old runner loses the catalog row, then one
    /// catalog update points readers at this version's tables.
    fn cut_over(&self, catalog: &Catalog) -> Result<()> {
        let schema = self.module.schema();
        if let Some(old) = &self.replaces {
            old.primary.store(false, Ordering::Relaxed);
        }
        let generation = self.generation.unwrap_or(0);
        catalog.cut_over(&schema.name, schema.version, generation, &self.module.hash)?;
        self.control.primary.store(true, Ordering::Relaxed);
        self.control.cut_over.store(true, Ordering::Relaxed);
        tracing::info!(projection = %schema.name, version = schema.version, "cut over: queries now read this version");
        Ok(())
    }

    /// Take new code of the same version, if the registry left some, at a batch boundary.
    fn swap_in(&mut self, catalog: &Catalog) -> Result<()> {
        let next = self
            .control
            .swap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(module) = next {
            let schema = module.schema().clone();
            tracing::info!(projection = %schema.name, version = schema.version, module = %&module.hash[..12], "swapped in new code; continuing from the checkpoint");
            self.module = module;
            if self.primary() {
                catalog.started(&schema.name, schema.version, &self.module.hash)?;
            }
        }
        Ok(())
    }

    /// Apply a failed batch one event at a time; the events that fail are skipped or
    /// dead-lettered, the others apply in order. All inside the open transaction.
    fn isolate(
        &self,
        db: &mut Option<ProjectionDb>,
        events: &[crate::runtime::wit::Event],
        next: Checkpoint,
    ) -> Result<usize, Fault> {
        let mut written = 0;
        for event in events {
            // The checkpoint is only durable at COMMIT, after the whole batch: `next` throughout.
            match self.process(db, std::slice::from_ref(event), next) {
                Ok(n) => written += n,
                Err(Fault::Ops(OpError::Sql(e))) => return Err(Fault::Ops(OpError::Sql(e))),
                Err(fault) => {
                    let d = db.as_mut().expect("db is back");
                    self.record_failure(d, event.position, Some(event), &fault.to_string())
                        .map_err(|e| Fault::Record(format!("{e:#}")))?;
                }
            }
        }
        let d = db.as_mut().expect("db is back");
        d.apply_batch(&[], next, self.op_limits())?;
        Ok(written)
    }

    /// Skip or dead-letter one failed event, as the policy says.
    fn record_failure(
        &self,
        db: &mut ProjectionDb,
        at: crate::runtime::wit::Position,
        event: Option<&crate::runtime::wit::Event>,
        error: &str,
    ) -> Result<()> {
        let name = &self.module.schema().name;
        self.stats.events_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(projection = %name, position = at.commit, policy = ?self.policy, "event failed: {error}");
        if self.policy == ErrorPolicy::DeadLetter {
            db.dead_letter(at, event, error)?;
        }
        Ok(())
    }

    /// The output caps of this projection's module.
    fn op_limits(&self) -> OpLimits {
        OpLimits::from(self.module.limits())
    }

    /// Call the module on one batch and apply its ops with the checkpoint.
    fn process(
        &self,
        db: &mut Option<ProjectionDb>,
        events: &[crate::runtime::wit::Event],
        next: Checkpoint,
    ) -> Result<usize, Fault> {
        let ops = if events.is_empty() {
            Vec::new()
        } else {
            let t0 = Instant::now();
            let (stats, result) = self.module.handle(db, events);
            add_time(&self.stats.wasm_ns, t0);
            self.stats
                .fuel_used
                .fetch_add(stats.fuel_used, Ordering::Relaxed);
            self.stats.get_ns.fetch_add(stats.get_ns, Ordering::Relaxed);
            self.stats
                .peak_memory
                .fetch_max(stats.peak_memory as u64, Ordering::Relaxed);
            let name = &self.module.schema().name;
            for (level, msg) in &stats.logs {
                match level {
                    Level::Error => tracing::error!(projection = %name, "{msg}"),
                    Level::Warn => tracing::warn!(projection = %name, "{msg}"),
                    Level::Info => tracing::info!(projection = %name, "{msg}"),
                    Level::Debug => tracing::debug!(projection = %name, "{msg}"),
                    Level::Trace => tracing::trace!(projection = %name, "{msg}"),
                }
            }
            if stats.dropped_logs > 0 {
                tracing::warn!(projection = %name, dropped = stats.dropped_logs, "log lines over the per-batch cap were dropped");
            }
            result?
        };
        let db = db
            .as_mut()
            .expect("the module returns the db after the call");
        let t0 = Instant::now();
        let written = db.apply_batch(&ops, next, self.op_limits())?;
        add_time(&self.stats.write_ns, t0);
        Ok(written)
    }
}
