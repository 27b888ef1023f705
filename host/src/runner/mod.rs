//! One runner per projection build: source → module → ops → SQLite, batch after batch.
//!
//! The path of an event: `source.read_batch` (filtered by the manifest's interests; as
//! many events as `pace` sizes from the module's speed, up to `max_events`)
//! → `module.handle` (one fresh instance per batch) → `db.apply_batch` (ops and
//! checkpoint into the commit window, whole or not at all) → `db.commit` (the window's
//! rows written once each, every batch when live; every `commit_events` /
//! `commit_interval_ms` while catching up, then on a thread of its own while the next
//! batches run: `db.commit_in_background`).
//!
//! A runner writes only its own build's database. It never writes the catalog: it
//! reports each [`Transition`] to whoever records them (the registry, or an offline
//! command), which decides what the transition means for the projection (a caught-up
//! rebuild takes over; a runner that lost the projection is not listened to).

mod pace;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use pace::Pace;
pub use stats::{BATCH_BUCKETS_MS, ProjectionReport, Stats, add_time};

use crate::config::{BatchSettings, Config, ErrorPolicy};
use crate::runtime::{CallError, Module};
use crate::source::{self, EventBuffer, EventSource, Filter, ReadBatch, SourceError};
use crate::store::{Accounting, Checkpoint, OpError, OpLimits, ProjectionDb};
use crate::wit::{Event, Level, Position};

/// What a runner is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the projection's own build and follows the source.
    Serving,
    /// Rebuilds a build from the first event beside the serving one; once caught up (or
    /// at `until`) it is offered to take over.
    Rebuild {
        /// Stop at this position and pause there (`replay --until`).
        until: Option<u64>,
    },
}

/// What a runner reports about itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// It opened its build and source and starts processing.
    Started,
    /// It took new code of the same version (module hash).
    Swapped(String),
    /// It committed (while catching up: handed its commit to a background thread, which
    /// the next commit waits for); the counters at that commit.
    Committed(Accounting),
    /// It reached the end of the source for the first time.
    CaughtUp,
    /// It stopped at its `until` position; its build is complete up to there.
    Paused(String),
    /// It stopped on an error (the reason names the event where it can).
    Faulted(String),
    /// It stopped cleanly (shutdown or asked to stop) while following the source.
    Stopped,
}

/// Where a runner's transitions go.
pub type Reporter = Box<dyn Fn(Transition) + Send>;

/// How the registry steers a running runner; shared between them.
#[derive(Default)]
pub struct Control {
    /// Stop after the current batch.
    pub stop: AtomicBool,
    /// New code of the same version and tables, swapped in at the next batch boundary.
    pub swap: Mutex<Option<Arc<Module>>>,
}

/// Why a projection stopped processing.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The module failed (trap, limit, returned error).
    #[error("{0}")]
    Module(#[from] CallError),
    /// Its ops were refused or could not be written.
    #[error("{0}")]
    Ops(#[from] OpError),
    /// A failed event could not be recorded under the error policy.
    #[error("recording a failed event: {0}")]
    Record(String),
}

/// A fault with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("projection `{name}` v{version} faulted {at}: {fault}")]
pub struct ProjectionFault {
    /// The projection.
    pub name: String,
    /// Its manifest version.
    pub version: u32,
    /// The event, or the batch, where it happened.
    pub at: String,
    /// What went wrong.
    pub fault: Fault,
}

/// "at position P (stream S revision R, type T, id I)": an event named for people.
pub fn describe_event(e: &Event) -> String {
    format!(
        "at position {} (stream {} revision {}, type {}, id {})",
        e.position.commit, e.stream_id, e.revision, e.event_type, e.event_id
    )
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
    /// What this runner is for.
    pub role: Role,
    /// Which build of the version it writes.
    pub generation: u32,
    /// Set to stop every runner after its current batch.
    pub shutdown: Arc<AtomicBool>,
    /// This runner's own steering.
    pub control: Arc<Control>,
    /// Live counters.
    pub stats: Arc<Stats>,
    /// Where transitions go.
    pub reporter: Reporter,
}

/// What one step of the loop did.
enum Step {
    /// Applied a batch (maybe empty of matching events); `at_end`: it ended at the end of
    /// the source (a source written to all the time may never come back empty).
    Batch { at_end: bool },
    /// Nothing new yet, but the source is not at its end (catching up, reconnecting).
    Waiting,
    /// At the end of the source.
    AtEnd,
    /// Reached `until`: the build is complete up to there.
    Paused(u64),
}

/// A runner's open build and source, and where it stands.
struct Open {
    db: ProjectionDb,
    source: Box<dyn EventSource>,
    checkpoint: Checkpoint,
    events: EventBuffer,
    uncommitted: u64,
    last_commit: Instant,
    caught_up: bool,
    /// How many events the next batch asks for.
    pace: Pace,
}

impl Runner {
    /// A runner of `module` in `role` as the config says (source, batching, error policy).
    pub fn new(
        config: &Config,
        module: Arc<Module>,
        role: Role,
        generation: u32,
        once: bool,
        shutdown: Arc<AtomicBool>,
        reporter: Reporter,
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
            role,
            generation,
            shutdown,
            control: Arc::default(),
            stats: Arc::default(),
            reporter,
        }
    }

    /// Run until the source ends (`once`), stop, `until`, or a fault.
    pub fn run(mut self) -> Result<()> {
        let mut open = self.open()?;
        self.report(Transition::Started);
        loop {
            if self.shutdown.load(Ordering::Relaxed) || self.control.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.swap_in() {
                // New code: its speed is not the old code's.
                open.pace = self.pace();
            }
            let looked = Instant::now();
            let step = match self.step(&mut open) {
                Ok(step) => step,
                Err(e) => return self.fault(&mut open, e),
            };
            match step {
                Step::Batch { at_end: false } | Step::Waiting => {}
                Step::Batch { at_end: true } => self.reached_end(&mut open),
                Step::AtEnd => {
                    self.reached_end(&mut open);
                    if self.once {
                        break;
                    }
                    // Look again `poll_ms` after the last look began: a shared source
                    // may have waited at the end already.
                    let poll = Duration::from_millis(self.batch.poll_ms);
                    std::thread::sleep(poll.saturating_sub(looked.elapsed()));
                }
                Step::Paused(at) => {
                    self.commit(&mut open)?;
                    let reason = format!("replayed until position {at}");
                    tracing::info!(projection = %self.name(), version = self.version(), "paused: {reason}; its tables serve as of that position");
                    self.report(Transition::Paused(reason));
                    return Ok(());
                }
            }
        }
        self.commit(&mut open)?;
        if !self.once {
            self.report(Transition::Stopped);
        }
        tracing::info!(projection = %self.name(), position = open.checkpoint.position.commit, "stopped");
        Ok(())
    }

    /// At the end of the source: the first time, it has caught up.
    fn reached_end(&self, open: &mut Open) {
        if open.caught_up {
            return;
        }
        open.caught_up = true;
        self.warn_unmatched();
        self.stats.caught_up.store(true, Ordering::Relaxed);
        self.report(Transition::CaughtUp);
        tracing::info!(projection = %self.name(), version = self.version(), position = open.checkpoint.position.commit, "caught up");
    }

    fn name(&self) -> &str {
        &self.module.schema().name
    }

    fn version(&self) -> u32 {
        self.module.schema().version
    }

    /// Having read the whole history: say which interests matched nothing (a typo in an
    /// event type, a stream prefix that never occurs).
    fn warn_unmatched(&self) {
        if !self.stats.from_start.load(Ordering::Relaxed) {
            return;
        }
        let schema = self.module.schema();
        let unmatched = self
            .stats
            .unmatched_interests(&schema.event_types, &schema.stream_prefixes);
        for what in &unmatched {
            tracing::warn!(projection = %schema.name, version = schema.version, "{what} matched no event in the whole history; is it spelt as the events are?");
        }
        *self
            .stats
            .unmatched
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = unmatched;
    }

    fn report(&self, t: Transition) {
        (self.reporter)(t)
    }

    /// Open the build and the source at the build's checkpoint.
    fn open(&self) -> Result<Open> {
        let schema = self.module.schema().clone();
        let mut db = ProjectionDb::open(&self.data, schema.clone(), self.generation)?;
        let checkpoint = db.checkpoint()?.unwrap_or_default();
        let resume = (checkpoint.position.commit > 0).then_some(checkpoint.position);
        let source = source::open_for_runner(
            &self.source,
            resume,
            Filter::of(&schema),
            !self.once,
            Duration::from_millis(self.batch.poll_ms),
            &self.reconnect,
            self.batch.shared_ingest,
        )
        .with_context(|| format!("projection `{}`", schema.name))?;
        let source = if self.batch.read_ahead {
            Box::new(source::read_ahead::ReadAhead::new(source, &schema.name))
        } else {
            source
        };
        match self.role {
            Role::Serving => {
                tracing::info!(projection = %schema.name, version = schema.version, from = checkpoint.position.commit, "started")
            }
            Role::Rebuild { .. } => {
                tracing::info!(projection = %schema.name, version = schema.version, generation = self.generation, from = checkpoint.position.commit, "rebuilding beside the serving build")
            }
        }
        self.stats
            .events_read
            .store(checkpoint.events, Ordering::Relaxed);
        self.stats
            .events_at_start
            .store(checkpoint.events, Ordering::Relaxed);
        self.stats
            .position
            .store(checkpoint.position.commit, Ordering::Relaxed);
        self.stats
            .from_start
            .store(checkpoint.position.commit == 0, Ordering::Relaxed);
        Ok(Open {
            db,
            source,
            checkpoint,
            events: EventBuffer::default(),
            uncommitted: 0,
            last_commit: Instant::now(),
            caught_up: false,
            pace: self.pace(),
        })
    }

    /// Read one batch, run it through the module, apply it; commit when it is time.
    fn step(&self, o: &mut Open) -> Result<Step> {
        o.events.clear();
        let t0 = Instant::now();
        let started = t0;
        let read = o.source.read_batch(
            &mut o.events,
            o.pace.next(),
            Duration::from_millis(self.batch.max_wait_ms),
        );
        add_time(&self.stats.read_ns, t0);
        let p = o.source.progress();
        self.stats
            .shared_ingest
            .store(o.source.is_shared(), Ordering::Relaxed);
        self.stats.progress_done.store(p.done, Ordering::Relaxed);
        self.stats.progress_total.store(p.total, Ordering::Relaxed);
        let read = match read {
            Ok(read) => read,
            Err(SourceError::BadEvent(bad)) if self.policy != ErrorPolicy::Stop => {
                // One unreadable event: record it under the policy and move past it.
                o.db.begin()?;
                self.record_failure(&mut o.db, bad.position, None, &bad.to_string())?;
                o.checkpoint = Checkpoint {
                    position: bad.position,
                    events: o.checkpoint.events + 1,
                };
                o.db.apply_batch(Vec::new(), o.checkpoint, self.op_limits())?;
                return Ok(Step::Batch { at_end: false });
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "stopped at position {}",
                    o.checkpoint.position.commit
                )));
            }
        };
        let (read, paused_at) = self.cut_at_until(&mut o.events, read);
        let Some(last) = read.last else {
            self.commit(o)?;
            return Ok(if read.at_end {
                Step::AtEnd
            } else {
                Step::Waiting
            });
        };
        let next = Checkpoint {
            position: last,
            events: o.checkpoint.events + read.read,
        };
        o.db.begin()?;
        let events = o.events.refs();
        let outcome = match self.process(&mut o.db, &events, next, Some(&mut o.pace)) {
            Err(fault)
                if self.policy != ErrorPolicy::Stop
                    && !matches!(fault, Fault::Ops(OpError::Sql(_))) =>
            {
                tracing::warn!(projection = %self.name(), "batch failed ({fault}); retrying it event by event");
                self.isolate(&mut o.db, &events, next)
            }
            other => other,
        };
        let ops = match outcome {
            Ok(ops) => ops,
            Err(fault) => {
                let (event, fault) = self.locate(&mut o.db, fault, &events, next);
                let batch = format!(
                    "in the batch of {} events after position {}",
                    o.events.len(),
                    o.checkpoint.position.commit
                );
                return Err(ProjectionFault {
                    name: self.name().to_string(),
                    version: self.version(),
                    at: event.map_or(batch.clone(), |e| format!("{e}, {batch}")),
                    fault,
                }
                .into());
            }
        };
        o.checkpoint = next;
        self.stats
            .position
            .store(next.position.commit, Ordering::Relaxed);
        o.uncommitted += read.read;
        self.stats
            .events_read
            .fetch_add(read.read, Ordering::Relaxed);
        self.stats
            .events_handled
            .fetch_add(o.events.len() as u64, Ordering::Relaxed);
        self.stats
            .count_matches(&events, &self.module.schema().stream_prefixes);
        self.stats
            .ops_written
            .fetch_add(ops as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.record_batch(started.elapsed());
        if let Some(e) = events.last() {
            self.stats
                .last_created_ms
                .store(e.created_ms, Ordering::Relaxed);
        }
        if let Some(at) = paused_at {
            return Ok(Step::Paused(at));
        }
        let live = read.at_end || o.caught_up;
        if live {
            let t0 = Instant::now();
            self.commit(o)?;
            add_time(&self.stats.commit_ns, t0);
        } else if o.uncommitted >= self.batch.commit_events
            || o.last_commit.elapsed() >= Duration::from_millis(self.batch.commit_interval_ms)
        {
            // Catching up: the commit is written while the next batches run.
            let t0 = Instant::now();
            if o.db.commit_in_background()? {
                self.committed(o);
            }
            add_time(&self.stats.commit_ns, t0);
        }
        Ok(Step::Batch {
            at_end: read.at_end,
        })
    }

    /// Name the event where a batch failed: the one the module named, or the first that
    /// fails when the batch runs again one event at a time (undone afterwards). The
    /// batch's fault stays the reason (alone, an event has a smaller fuel budget, so it
    /// may fail differently). A failure to write is not an event's fault.
    fn locate(
        &self,
        db: &mut ProjectionDb,
        fault: Fault,
        events: &[&Event],
        next: Checkpoint,
    ) -> (Option<String>, Fault) {
        if let Fault::Module(e) = &fault
            && let Some(event) = e.event_index().and_then(|i| events.get(i))
        {
            return (Some(describe_event(event)), fault);
        }
        if matches!(fault, Fault::Ops(OpError::Sql(_))) {
            return (None, fault);
        }
        if let [event] = events {
            return (Some(describe_event(event)), fault);
        }
        let found = db.rolled_back(|db| {
            events.iter().find_map(|event| {
                self.process(db, std::slice::from_ref(event), next, None)
                    .err()
                    .map(|_| describe_event(event))
            })
        });
        let found = found.unwrap_or_else(|e| {
            // The probe could not run (a background commit failed): say so, keep the fault.
            tracing::error!(projection = %self.name(), "{e:#}");
            None
        });
        (found, fault)
    }

    /// Stop on a fault: keep what earlier batches applied, report it, return it.
    fn fault(&self, o: &mut Open, e: anyhow::Error) -> Result<()> {
        // Earlier batches of this transaction are good: keep them.
        self.commit(o)?;
        let reason = match e.downcast_ref::<ProjectionFault>() {
            Some(f) => f.to_string(),
            None => format!("projection `{}` {e:#}", self.name()),
        };
        match self.role {
            Role::Serving => tracing::error!(projection = %self.name(), "{reason}"),
            Role::Rebuild { .. } => {
                tracing::error!(projection = %self.name(), version = self.version(), "the rebuild failed; the serving build keeps serving: {reason}")
            }
        }
        self.report(Transition::Faulted(reason));
        Err(e.context(format!("projection `{}`", self.name())))
    }

    /// Batch sizes for this module, from the first call on.
    fn pace(&self) -> Pace {
        Pace::new(
            self.batch.max_events,
            self.module.limits(),
            self.batch.adaptive,
        )
    }

    /// Commit, and report the counters that go with it.
    fn commit(&self, o: &mut Open) -> Result<()> {
        if o.db.commit()? {
            self.committed(o);
        }
        Ok(())
    }

    /// Report a commit (the rows a background commit writes count once it is done).
    fn committed(&self, o: &mut Open) {
        self.stats
            .rows_written
            .store(o.db.rows_written(), Ordering::Relaxed);
        o.uncommitted = 0;
        o.last_commit = Instant::now();
        self.report(Transition::Committed(self.stats.accounting()));
    }

    /// With `until`: drop the events past it from the batch, and say whether the pause
    /// point is reached (the checkpoint then stops exactly there).
    fn cut_at_until(
        &self,
        events: &mut EventBuffer,
        mut read: ReadBatch,
    ) -> (ReadBatch, Option<u64>) {
        let (Role::Rebuild { until: Some(until) }, Some(last)) = (self.role, read.last) else {
            return (read, None);
        };
        if last.commit < until {
            return (read, None);
        }
        let keep = events
            .iter()
            .take_while(|e| e.position.commit <= until)
            .count();
        events.truncate(keep);
        read.last = Some(Position::at(until));
        (read, Some(until))
    }

    /// Take new code of the same version, if the registry left some, at a batch boundary;
    /// true when it did.
    fn swap_in(&mut self) -> bool {
        let next = self
            .control
            .swap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(module) = next {
            tracing::info!(projection = %self.name(), version = self.version(), module = %&module.hash[..12], "swapped in new code; continuing from the checkpoint");
            self.module = module;
            self.report(Transition::Swapped(self.module.hash.clone()));
            return true;
        }
        false
    }

    /// Apply a failed batch one event at a time; the events that fail are skipped or
    /// dead-lettered, the others apply in order. All inside the open transaction.
    fn isolate(
        &self,
        db: &mut ProjectionDb,
        events: &[&Event],
        next: Checkpoint,
    ) -> Result<usize, Fault> {
        let mut written = 0;
        for event in events {
            // The checkpoint is only durable at COMMIT, after the whole batch: `next` throughout.
            match self.process(db, std::slice::from_ref(event), next, None) {
                Ok(n) => written += n,
                Err(Fault::Ops(OpError::Sql(e))) => return Err(Fault::Ops(OpError::Sql(e))),
                Err(fault) => {
                    let error = format!("{} {}", describe_event(event), fault);
                    self.record_failure(db, event.position, Some(*event), &error)
                        .map_err(|e| Fault::Record(format!("{e:#}")))?;
                }
            }
        }
        db.apply_batch(Vec::new(), next, self.op_limits())?;
        Ok(written)
    }

    /// Skip or dead-letter one failed event, as the policy says.
    fn record_failure(
        &self,
        db: &mut ProjectionDb,
        at: Position,
        event: Option<&Event>,
        error: &str,
    ) -> Result<()> {
        self.stats.events_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(projection = %self.name(), position = at.commit, policy = ?self.policy, "event failed: {error}");
        if self.policy == ErrorPolicy::DeadLetter {
            db.dead_letter(at, event, error)?;
        }
        Ok(())
    }

    /// The output caps of this projection's module.
    fn op_limits(&self) -> OpLimits {
        OpLimits::from(self.module.limits())
    }

    /// Call the module on one batch and apply its ops with the checkpoint; `pace` learns
    /// the size of the next batch from the call.
    fn process(
        &self,
        db: &mut ProjectionDb,
        events: &[&Event],
        next: Checkpoint,
        pace: Option<&mut Pace>,
    ) -> Result<usize, Fault> {
        let ops = if events.is_empty() {
            Vec::new()
        } else {
            let t0 = Instant::now();
            let (stats, result) = self.module.handle(Box::new(db.reader()), events);
            add_time(&self.stats.wasm_ns, t0);
            self.stats
                .fuel_used
                .fetch_add(stats.fuel_used, Ordering::Relaxed);
            self.stats.get_ns.fetch_add(stats.get_ns, Ordering::Relaxed);
            self.stats
                .peak_memory
                .fetch_max(stats.peak_memory as u64, Ordering::Relaxed);
            let name = self.name();
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
            match (pace, &result) {
                (Some(p), Ok(ops)) => {
                    let memory = (stats.initial_memory, stats.peak_memory);
                    p.measured(events.len(), stats.took, ops.len(), memory)
                }
                (Some(p), Err(_)) => p.failed(),
                (None, _) => {}
            }
            result?
        };
        let t0 = Instant::now();
        let written = db.apply_batch(ops, next, self.op_limits())?;
        add_time(&self.stats.write_ns, t0);
        Ok(written)
    }
}
