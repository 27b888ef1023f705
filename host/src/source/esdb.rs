//! The EventStoreDB / KurrentDB source: one `$all` subscription per source opened (the
//! shared reader in `hub.rs` opens one per host for every runner at the head), from a
//! checkpoint, with a server-side filter built from the interests it serves.
//!
//! A task on a shared tokio runtime owns the subscription and hands events, filtered
//! checkpoints and the caught-up signal to the runner through a bounded channel, in
//! order. When the subscription is lost (connection refused, dropped, server restarted)
//! the task resubscribes after the last position it handed over — so nothing is skipped
//! and nothing is delivered twice — with exponential backoff and jitter, logging each
//! attempt, and gives up after `max_attempts` failures in a row.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kurrentdb::{
    Client, ClientSettings, ReadAllOptions, StreamPosition, SubscribeToAllOptions,
    SubscriptionEvent, SubscriptionFilter,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Budget, EventBuffer, EventSource, Filter, Progress, ReadBatch, SourceError};
use crate::wit::Position;

/// How a lost subscription is retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Delay before the first retry, in milliseconds; it doubles with each failure...
    pub initial_ms: u64,
    /// ...up to this many milliseconds (each delay gets up to 50% random jitter).
    pub max_ms: u64,
    /// Failures in a row (without an event in between) before the projection stops.
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_ms: 100,
            max_ms: 5_000,
            max_attempts: 60,
        }
    }
}

impl RetrySettings {
    /// The delay before retry number `attempt` (1-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max_ms)
            .max(1);
        // Jitter spreads reconnecting hosts apart; it needs no cryptographic quality.
        let noise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        Duration::from_millis(base / 2 + (base / 2 + 1) * (noise % 1000) / 1000)
    }
}

/// Filtered subscriptions report a checkpoint after this many events they skipped.
const CHECKPOINT_EVERY: u32 = 1000;
/// Messages buffered between the subscription task and the runner.
const CHANNEL: usize = 16 * 1024;

/// What the subscription task hands to the runner.
enum Msg {
    Event(Box<kurrentdb::RecordedEvent>),
    Checkpoint(Position),
    /// Caught up, with the position of the last event the server considered (when it
    /// says): everything up to there was delivered, so it is a checkpoint too.
    CaughtUp(Option<Position>),
    Failed(anyhow::Error),
}

/// The runtime every EventStoreDB subscription of the process runs on.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("esdb-source")
        .enable_all()
        .build()
        .context("starting the EventStoreDB client runtime")?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A `$all` subscription feeding one runner.
pub struct EsdbSource {
    rx: mpsc::Receiver<Msg>,
    task: tokio::task::JoinHandle<()>,
    handle: tokio::runtime::Handle,
    filter: Filter,
    follow: bool,
    caught_up: bool,
    pending_error: Option<SourceError>,
    done: u64,
    head: Arc<AtomicU64>,
}

impl EsdbSource {
    /// Subscribe to `$all` at `url` after `from` (from the start when None).
    pub fn open(
        url: &str,
        from: Option<Position>,
        filter: Filter,
        follow: bool,
        retry: RetrySettings,
    ) -> Result<EsdbSource> {
        let settings: ClientSettings = url
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid EventStoreDB connection string {url}: {e}"))?;
        let handle = runtime()?.handle().clone();
        let (tx, rx) = mpsc::channel(CHANNEL);
        let head = Arc::new(AtomicU64::new(0));
        let pump = Pump {
            url: url.to_string(),
            settings,
            filter: server_filter(&filter),
            retry,
            tx,
            head: head.clone(),
        };
        let task = handle.spawn(pump.run(from));
        Ok(EsdbSource {
            rx,
            task,
            handle,
            filter,
            follow,
            caught_up: false,
            pending_error: None,
            done: from.map_or(0, |p| p.commit),
            head,
        })
    }

    /// The next message: at once if one is waiting, else until `deadline`.
    fn next(&mut self, deadline: Instant) -> Option<Msg> {
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return None;
            }
            if !self.caught_up {
                // Catching up: let a few hundred events gather rather than waking up
                // for each one (a wake-up per event costs more than the event).
                std::thread::sleep(wait.min(Duration::from_millis(1)));
                continue;
            }
            let rx = &mut self.rx;
            return self
                .handle
                .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
                .ok()
                .flatten();
        }
    }
}

impl Drop for EsdbSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventSource for EsdbSource {
    fn read_batch(
        &mut self,
        out: &mut EventBuffer,
        max: usize,
        max_wait: Duration,
    ) -> Result<ReadBatch, SourceError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let budget = Budget::new(max, max_wait);
        let deadline = budget.deadline();
        let mut batch = ReadBatch::default();
        while budget.more(out, &batch) {
            // Live, hand over what is there at once; catching up, fill the batch.
            let until = if self.caught_up && batch.last.is_some() {
                Instant::now()
            } else {
                deadline
            };
            let Some(msg) = self.next(until) else { break };
            match msg {
                Msg::Event(e) => {
                    let position = Position {
                        commit: e.position.commit,
                        prepare: e.position.prepare,
                    };
                    batch.read += 1;
                    batch.last = Some(position);
                    if self.filter.matches(e.stream_id(), &e.event_type) {
                        fill(out, &e, position);
                    }
                }
                Msg::Checkpoint(p) => batch.last = Some(p),
                Msg::CaughtUp(at) => {
                    if let Some(p) = at
                        && p.commit > batch.last.map_or(self.done, |l| l.commit)
                    {
                        batch.last = Some(p);
                    }
                    if !self.caught_up {
                        tracing::info!(position = ?batch.last.map(|p| p.commit), "EventStoreDB subscription caught up; live from here");
                    }
                    self.caught_up = true;
                }
                Msg::Failed(e) => {
                    Budget::fail(&batch, e.into(), &mut self.pending_error)?;
                    break;
                }
            }
        }
        if let Some(p) = batch.last {
            self.done = p.commit;
            self.head.fetch_max(p.commit, Ordering::Relaxed);
        }
        batch.at_end = self.caught_up && self.rx.is_empty();
        if batch.at_end && !self.follow {
            // `--once`: the end is where the subscription caught up.
            self.task.abort();
        }
        Ok(batch)
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.done,
            total: self.head.load(Ordering::Relaxed).max(self.done),
        }
    }
}

/// Copy one recorded event into the next slot of the batch.
fn fill(out: &mut EventBuffer, e: &kurrentdb::RecordedEvent, position: Position) {
    let slot = out.next_slot();
    slot.stream_id.clear();
    slot.stream_id.push_str(e.stream_id());
    slot.event_type.clear();
    slot.event_type.push_str(&e.event_type);
    slot.event_id.clear();
    // Formatted into the reused string: no allocation per event.
    let _ = write!(slot.event_id, "{}", e.id);
    slot.revision = e.revision;
    slot.position = position;
    // The server sends .NET ticks (100 ns) since the Unix epoch; the client's own
    // `created` keeps whole seconds only.
    slot.created_ms = e
        .metadata
        .get("created")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(0, |ticks| ticks / 10_000);
    slot.content_type.clear();
    slot.content_type.push_str(
        e.metadata
            .get("content-type")
            .map_or("application/octet-stream", |s| s.as_str()),
    );
    slot.data.clear();
    slot.data.extend_from_slice(&e.data);
    slot.metadata.clear();
    slot.metadata.extend_from_slice(&e.custom_metadata);
}

/// The server-side filter for a projection's interests. The server filters on event
/// type or on stream, not both: event types when declared (exact names), else stream
/// prefixes, else everything but system events. The runner-side filter re-checks both.
fn server_filter(f: &Filter) -> SubscriptionFilter {
    let filter = if !f.event_types.is_empty() {
        let names: Vec<String> = f.event_types.iter().map(|t| escape(t)).collect();
        SubscriptionFilter::on_event_type().regex(format!("^(?:{})$", names.join("|")))
    } else if !f.stream_prefixes.is_empty() {
        f.stream_prefixes
            .iter()
            .fold(SubscriptionFilter::on_stream_name(), |s, p| s.add_prefix(p))
    } else {
        SubscriptionFilter::on_event_type().exclude_system_events()
    };
    filter.max(CHECKPOINT_EVERY)
}

/// Escape regex metacharacters in an event type name.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The task that owns the subscription.
struct Pump {
    url: String,
    settings: ClientSettings,
    filter: SubscriptionFilter,
    retry: RetrySettings,
    tx: mpsc::Sender<Msg>,
    head: Arc<AtomicU64>,
}

impl Pump {
    async fn run(self, mut from: Option<Position>) {
        let mut failures = 0u32;
        loop {
            let error = match self.subscribe(&mut from, &mut failures).await {
                Ok(()) => return, // the runner went away
                Err(e) => e,
            };
            failures += 1;
            if failures > self.retry.max_attempts {
                let e = error.context(format!(
                    "EventStoreDB at {}: giving up after {} failed attempts in a row",
                    self.url, self.retry.max_attempts
                ));
                let _ = self.tx.send(Msg::Failed(e)).await;
                return;
            }
            let delay = self.retry.delay(failures);
            tracing::warn!(url = %self.url, attempt = failures, delay_ms = delay.as_millis() as u64, after = ?from.map(|p| p.commit), "EventStoreDB subscription lost: {error:#}; resubscribing");
            tokio::time::sleep(delay).await;
        }
    }

    /// One subscription, until it fails (Err) or the runner is gone (Ok).
    async fn subscribe(&self, from: &mut Option<Position>, failures: &mut u32) -> Result<()> {
        // A fresh client per attempt: a client whose connection gave up stays down.
        let client = Client::new(self.settings.clone())
            .map_err(|e| anyhow::anyhow!("creating the client: {e}"))?;
        if self.head.load(Ordering::Relaxed) == 0 {
            self.read_head(&client).await;
        }
        let position = match *from {
            Some(p) => StreamPosition::Position(kurrentdb::Position {
                commit: p.commit,
                prepare: p.prepare,
            }),
            None => StreamPosition::Start,
        };
        let options = SubscribeToAllOptions::default()
            .position(position)
            .filter(self.filter.clone());
        let mut sub = client.subscribe_to_all(&options).await;
        loop {
            let msg = match sub.next_subscription_event().await? {
                SubscriptionEvent::EventAppeared(e) => {
                    *failures = 0;
                    let Some(e) = e.link.or(e.event) else {
                        continue;
                    };
                    *from = Some(Position {
                        commit: e.position.commit,
                        prepare: e.position.prepare,
                    });
                    Msg::Event(Box::new(e))
                }
                SubscriptionEvent::Checkpoint(p) => {
                    let p = Position {
                        commit: p.commit,
                        prepare: p.prepare,
                    };
                    *from = Some(p);
                    Msg::Checkpoint(p)
                }
                SubscriptionEvent::CaughtUp(c) => {
                    *failures = 0;
                    let at = c.and_then(|c| c.position).map(|p| Position {
                        commit: p.commit,
                        prepare: p.prepare,
                    });
                    if let Some(p) = at
                        && from.is_none_or(|f| p.commit > f.commit)
                    {
                        *from = Some(p);
                    }
                    Msg::CaughtUp(at)
                }
                _ => continue,
            };
            if self.tx.send(msg).await.is_err() {
                return Ok(());
            }
        }
    }

    /// The position of the last event in `$all`, for progress display.
    async fn read_head(&self, client: &Client) {
        let options = ReadAllOptions::default()
            .position(StreamPosition::End)
            .backwards()
            .max_count(1);
        if let Ok(mut stream) = client.read_all(&options).await
            && let Ok(Some(e)) = stream.next().await
        {
            self.head
                .fetch_max(e.get_original_event().position.commit, Ordering::Relaxed);
        }
    }
}
