//! The EventStoreDB / KurrentDB source: one `$all` subscription per source opened (the
//! shared reader in `hub.rs` opens one per host for every runner at the head), from a
//! checkpoint, with a server-side filter built from the interests it serves.
//!
//! A task on a shared tokio runtime owns the subscription. It turns the client's events
//! into the host's own (on its own thread, where the client allocated them) and hands
//! them to the runner in chunks, with filtered checkpoints and the caught-up signal,
//! through a bounded channel, in order: a chunk goes out when it is full or when the
//! server has nothing more ready, so a live event waits for no other. Spent chunks come
//! back for reuse, so handing events over allocates nothing per event (the client's
//! own decoding still does).
//!
//! When the subscription is lost (connection refused, dropped, server restarted) the
//! task hands over what it has and resubscribes after the last position it handed
//! over — so nothing is skipped and nothing is delivered twice — with exponential
//! backoff and jitter, logging each attempt, and gives up after `max_attempts` failures
//! in a row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kurrentdb::{
    Client, ClientSettings, ReadAllOptions, StreamPosition, SubscribeToAllOptions,
    SubscriptionEvent, SubscriptionFilter,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Budget, EventBuffer, EventSource, Filter, Progress, ReadBatch, SourceError};
use crate::wit::{Event, Position};

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
/// Entries in a full chunk.
const CHUNK: usize = 256;
/// Messages buffered between the subscription task and the runner (16k events in
/// full chunks).
const CHANNEL: usize = 64;

/// One entry of a [`Chunk`], in the subscription's order.
#[derive(Clone, Copy)]
enum Entry {
    /// `events[i]`, which the runner's filter matched.
    Event(u32),
    /// An event the runner's filter does not match: read, not delivered.
    Skipped(Position),
    /// A filtered subscription's checkpoint: everything before it was considered.
    Checkpoint(Position),
}

/// Events and checkpoints in order, filled by the subscription task; its `events` keep
/// their allocations from use to use (the runner swaps its spent events in).
#[derive(Default)]
struct Chunk {
    entries: Vec<Entry>,
    events: Vec<Event>,
    /// Events filled in.
    used: usize,
    /// Entries the runner has taken.
    taken: usize,
}

impl Chunk {
    /// Fill in the next event (reusing a spent one when there is one) and enter it.
    fn push(&mut self, e: &kurrentdb::RecordedEvent, position: Position) {
        if self.used == self.events.len() {
            self.events.push(Event::default());
        }
        fill(&mut self.events[self.used], e, position);
        self.entries.push(Entry::Event(self.used as u32));
        self.used += 1;
    }

    /// Empty again, keeping the events' allocations.
    fn reset(&mut self) {
        self.entries.clear();
        self.used = 0;
        self.taken = 0;
    }
}

/// Spent chunks, back from the runner for the subscription task to refill.
type Spent = Arc<Mutex<Vec<Chunk>>>;
/// Spent chunks kept (the rest are freed): enough for a catch-up's steady flow, little
/// for an idle host to hold.
const SPENT_KEPT: usize = 8;

/// What the subscription task hands to the runner.
enum Msg {
    /// Events, skipped events and checkpoints, in order.
    Events(Chunk),
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
    /// The chunk being taken from, when one is.
    chunk: Option<Chunk>,
    spent: Spent,
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
        let spent = Spent::default();
        let pump = Pump {
            url: url.to_string(),
            settings,
            server_filter: server_filter(&filter),
            filter,
            retry,
            tx,
            head: head.clone(),
            spent: spent.clone(),
        };
        let task = handle.spawn(pump.run(from));
        Ok(EsdbSource {
            rx,
            task,
            handle,
            chunk: None,
            spent,
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
                // Catching up: let a few chunks gather rather than waking up for each.
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

    /// Move the current chunk's entries into `out` while the budget allows; a chunk
    /// taken to its end goes back to the subscription task.
    fn take(&mut self, out: &mut EventBuffer, budget: &Budget, batch: &mut ReadBatch) {
        let Some(chunk) = self.chunk.as_mut() else {
            return;
        };
        while chunk.taken < chunk.entries.len() && budget.more(out, batch) {
            match chunk.entries[chunk.taken] {
                Entry::Event(i) => {
                    let e = &mut chunk.events[i as usize];
                    batch.read += 1;
                    batch.last = Some(e.position);
                    // The slot's spent event goes into the chunk, to be refilled there.
                    std::mem::swap(out.next_slot(), e);
                }
                Entry::Skipped(p) => {
                    batch.read += 1;
                    batch.last = Some(p);
                }
                Entry::Checkpoint(p) => batch.last = Some(p),
            }
            chunk.taken += 1;
        }
        if chunk.taken == chunk.entries.len()
            && let Some(mut chunk) = self.chunk.take()
        {
            chunk.reset();
            let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
            if spent.len() < SPENT_KEPT {
                spent.push(chunk);
            }
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
        loop {
            self.take(out, &budget, &mut batch);
            if !budget.more(out, &batch) {
                break;
            }
            // Live, hand over what is there at once; catching up, fill the batch.
            let until = if self.caught_up && batch.last.is_some() {
                Instant::now()
            } else {
                deadline
            };
            let Some(msg) = self.next(until) else { break };
            match msg {
                Msg::Events(chunk) => self.chunk = Some(chunk),
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
        batch.at_end = self.caught_up && self.chunk.is_none() && self.rx.is_empty();
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

/// Copy one recorded event into `slot`, reusing its allocations when it is a spent one.
fn fill(slot: &mut Event, e: &kurrentdb::RecordedEvent, position: Position) {
    slot.stream_id.clear();
    slot.stream_id.push_str(e.stream_id());
    slot.event_type.clear();
    slot.event_type.push_str(&e.event_type);
    slot.event_id.clear();
    // Encoded straight into the reused string: no allocation, no formatter per event.
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    slot.event_id
        .push_str(e.id.as_hyphenated().encode_lower(&mut id));
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
    server_filter: SubscriptionFilter,
    /// The runner's own filter, which the server's cannot fully express.
    filter: Filter,
    retry: RetrySettings,
    tx: mpsc::Sender<Msg>,
    head: Arc<AtomicU64>,
    spent: Spent,
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

    /// One subscription, until it fails (Err) or the runner is gone (Ok). `from` moves
    /// with every event put into a chunk, and every chunk is handed over before this
    /// returns, so a resubscription after `from` skips nothing and repeats nothing.
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
            .filter(self.server_filter.clone());
        let mut sub = client.subscribe_to_all(&options).await;
        let mut chunk = self.fresh();
        loop {
            let next = sub.next_subscription_event();
            let mut next = std::pin::pin!(next);
            let ready = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
            let item = match ready {
                Poll::Ready(item) => item,
                Poll::Pending => {
                    // Nothing more is ready: hand over what has gathered, then wait.
                    if !self.hand_over(&mut chunk).await {
                        return Ok(());
                    }
                    next.await
                }
            };
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    // The events before the failure go out first.
                    if !self.hand_over(&mut chunk).await {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            };
            match event {
                SubscriptionEvent::EventAppeared(e) => {
                    *failures = 0;
                    let Some(e) = e.link.or(e.event) else {
                        continue;
                    };
                    let position = Position {
                        commit: e.position.commit,
                        prepare: e.position.prepare,
                    };
                    *from = Some(position);
                    if self.filter.matches(e.stream_id(), &e.event_type) {
                        chunk.push(&e, position);
                    } else {
                        chunk.entries.push(Entry::Skipped(position));
                    }
                }
                SubscriptionEvent::Checkpoint(p) => {
                    let p = Position {
                        commit: p.commit,
                        prepare: p.prepare,
                    };
                    *from = Some(p);
                    chunk.entries.push(Entry::Checkpoint(p));
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
                    if !self.hand_over(&mut chunk).await
                        || self.tx.send(Msg::CaughtUp(at)).await.is_err()
                    {
                        return Ok(());
                    }
                }
                _ => continue,
            }
            if chunk.entries.len() >= CHUNK && !self.hand_over(&mut chunk).await {
                return Ok(());
            }
        }
    }

    /// A chunk to fill: a spent one when the runner has given one back.
    fn fresh(&self) -> Chunk {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        spent.pop().unwrap_or_default()
    }

    /// Send `chunk` to the runner (when it has anything) and start a fresh one; false
    /// when the runner is gone.
    async fn hand_over(&self, chunk: &mut Chunk) -> bool {
        if chunk.entries.is_empty() {
            return true;
        }
        let full = std::mem::replace(chunk, self.fresh());
        self.tx.send(Msg::Events(full)).await.is_ok()
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
