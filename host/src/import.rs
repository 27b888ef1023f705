//! `projector import`: load an NDJSON event file into an EventStoreDB / KurrentDB server,
//! so the examples can be replayed against a real server.
//!
//! **What is appended.** Every event of the file except system events (`$…`), as runs:
//! consecutive events of one stream (at most `batch` of them) make one append, which
//! expects the stream at the revision before its first event and carries the file's
//! event ids (or ids derived from stream and revision). An append is atomic, and one
//! retried with the same ids at the same revisions is accepted by the server without
//! writing anything, so importing a file again appends nothing, and re-running an
//! interrupted import (or importing a longer version of the file) completes it exactly.
//!
//! **Pipelining.** A reader thread parses the file into runs; appends go out through the
//! client's batch append (one gRPC stream carrying many requests; servers from
//! EventStoreDB 21.10 on) or, on servers without it, as concurrent unary appends on the
//! client's one connection. Runs are taken in file order into a span of `window` runs
//! (starting at the oldest run not yet confirmed); each is sent at once unless its stream
//! already has an append in flight, in which case it waits for that one (other streams'
//! runs go past it). Many appends in flight also hide the client's missing TCP_NODELAY:
//! it delays each unary call by ~40 ms, but a pipeline of them shares the wait (measured:
//! more connections, each with fewer appends in flight, were slower, not faster).
//!
//! **What order is preserved.**
//! - Within a stream, always the file's: one append in flight per stream, and each
//!   append's expected revision refuses any other order.
//! - Across streams, only as far as the window allows: a run is sent only once every
//!   run `window` or more places before it in the file has been written, so runs that
//!   far apart land in `$all` in file order; closer runs of different streams may land
//!   in either order. With `strict_order` (`--strict-order`) the window is one and
//!   `$all` holds the events in exactly the file's order, at one round trip per run.
//!
//! Projections that only depend on each stream's order (the shop read models do) see
//! the same events either way.
//!
//! **Failures.** When an append fails, sending stops, the appends in flight finish, and
//! every append not yet confirmed is sent again in file order, one at a time (a batch
//! session that failed is replaced). A run the server refuses because its stream already
//! holds some of its events (an earlier import stopped there, or the file grew) is sent
//! again event by event, each at its own revision: events already there are accepted
//! as they are, the rest are appended; an event whose revision holds a different event
//! stops the import with its line. Connection failures are retried a few times with a
//! back-off; after that the import stops, and running it again continues it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kurrentdb::{AppendToStreamOptions, BatchAppendClient, Client, EventData, StreamState};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::source::{EventBuffer, EventSource, Filter, ndjson::NdjsonSource};
use crate::wit::Event;

/// How to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Events per append, at most.
    pub batch: usize,
    /// Runs (appends) that may be unconfirmed at once, a span in file order: at most
    /// this many appends in flight (1 keeps the file's order exactly).
    pub window: usize,
    /// Use unary appends even when the server offers batch append.
    pub unary: bool,
    /// A progress bar on stderr (else a log line every few seconds).
    pub progress: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch: 500,
            window: 1024,
            unary: false,
            progress: false,
        }
    }
}

impl ImportOptions {
    /// The file's order in `$all`, exactly: one append at a time.
    pub fn strict_order(mut self) -> Self {
        self.window = 1;
        self
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Events sent (including those the server already had).
    pub events: u64,
    /// Appends confirmed by the server.
    pub appends: u64,
    /// System events (`$…`) left out.
    pub skipped: u64,
    /// Appends sent again after a failure (including event-by-event ones).
    pub resent: u64,
    /// True when batch append carried the appends (false: unary appends).
    pub batch_append: bool,
}

/// Append every event of `file` to the server at `url`, `batch` events per append at
/// most, with the default pipelining (see the module documentation for the order kept).
pub fn import(file: &Path, url: &str, batch: usize) -> Result<ImportReport> {
    import_with(
        file,
        url,
        &ImportOptions {
            batch,
            ..ImportOptions::default()
        },
    )
}

/// Append every event of `file` to the server at `url` as `options` say.
pub fn import_with(file: &Path, url: &str, options: &ImportOptions) -> Result<ImportReport> {
    let settings: kurrentdb::ClientSettings = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid EventStoreDB connection string {url}: {e}"))?;
    // Opened here so a missing file fails before any connection is made.
    let source = NdjsonSource::open(file, None, Filter::default(), false)?;
    // Two workers: the client's connection and batch-append tasks beside the pipeline.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("projector-import")
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let progress = Arc::new(ReadProgress::default());
    let (tx, rx) = mpsc::channel(16);
    let reader = {
        let (progress, batch) = (progress.clone(), options.batch.max(1));
        std::thread::Builder::new()
            .name("projector-import-reader".into())
            .spawn(move || read_runs(source, batch, &progress, &tx))
            .context("starting the reader thread")?
    };
    let result = runtime.block_on(async {
        let mut pipeline = Pipeline::connect(settings, options).await?;
        pipeline.run(rx, &progress, options.progress).await
    });
    // Closes the connections; the reader stops on its own once its channel is gone.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let read = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    // A bad line stops the reader, and the pipeline then ends early: the line's error
    // comes first.
    read?;
    let mut report = result?;
    report.skipped = progress.skipped.load(Ordering::Relaxed);
    Ok(report)
}

/// How far the reader has got (bytes of the file, system events left out).
#[derive(Default)]
struct ReadProgress {
    done: AtomicU64,
    total: AtomicU64,
    skipped: AtomicU64,
}

/// Consecutive events of one stream, appended together.
struct Run {
    stream: Arc<str>,
    /// Revision of the first event.
    revision: u64,
    /// File line of each event (system events between them are left out).
    lines: Vec<u64>,
    events: Vec<EventData>,
}

impl Run {
    fn expected(&self) -> StreamState {
        expected_before(self.revision)
    }
}

/// The stream state an append of an event at `revision` expects.
fn expected_before(revision: u64) -> StreamState {
    match revision {
        0 => StreamState::NoStream,
        r => StreamState::StreamRevision(r - 1),
    }
}

/// The reader thread: parse the file into runs and hand them over in chunks.
fn read_runs(
    mut source: NdjsonSource,
    batch: usize,
    progress: &ReadProgress,
    tx: &mpsc::Sender<Vec<Run>>,
) -> Result<()> {
    let mut buffer = EventBuffer::default();
    let mut run: Option<Run> = None;
    loop {
        buffer.clear();
        let mut chunk = Vec::new();
        let read = source
            .read_batch(&mut buffer, 2_000, Duration::from_millis(100))
            .map_err(anyhow::Error::from)
            .and_then(|read| {
                for e in buffer.iter() {
                    if let Some(r) =
                        run.take_if(|r| *r.stream != e.stream_id || r.events.len() >= batch)
                    {
                        chunk.push(r);
                    }
                    let data = event_data(e)?;
                    match &mut run {
                        Some(r) => {
                            r.lines.push(e.position.commit);
                            r.events.push(data);
                        }
                        None => {
                            run = Some(Run {
                                stream: e.stream_id.as_str().into(),
                                revision: e.revision,
                                lines: vec![e.position.commit],
                                events: vec![data],
                            })
                        }
                    }
                }
                Ok(read)
            });
        let p = source.progress();
        progress.done.store(p.done, Ordering::Relaxed);
        progress.total.store(p.total, Ordering::Relaxed);
        let at_end = match &read {
            Ok(read) => {
                progress
                    .skipped
                    .fetch_add(read.read - buffer.len() as u64, Ordering::Relaxed);
                read.at_end
            }
            // The events before a bad line still go, the run held back included.
            Err(_) => true,
        };
        if at_end {
            chunk.extend(run.take());
        }
        if !chunk.is_empty() && tx.blocking_send(chunk).is_err() {
            return Ok(()); // the pipeline stopped (it reports why)
        }
        if at_end {
            return read.map(|_| ());
        }
    }
}

/// Where appends go: one batch-append session, or unary appends.
#[derive(Clone)]
enum Sender {
    Batch(Arc<BatchAppendClient>),
    Unary(Box<Client>),
}

impl Sender {
    /// Append `events` to `stream` expecting `state`.
    async fn append(
        &self,
        stream: &str,
        state: StreamState,
        events: Vec<EventData>,
    ) -> Result<(), kurrentdb::Error> {
        match self {
            Sender::Batch(b) => b.append_to_stream(stream, state, events).await.map(|_| ()),
            Sender::Unary(client) => {
                let options = AppendToStreamOptions::default().stream_state(state);
                client
                    .append_to_stream(stream, &options, events)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// What a failed append means for the import.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The stream is not at the expected revision.
    Conflict,
    /// The server refuses for good (access denied, deleted stream, bad request).
    Fatal,
    /// Worth another try (connection lost, session closed, deadline).
    Transient,
}

fn failure(e: &kurrentdb::Error) -> Failure {
    use kurrentdb::Error as E;
    match e {
        E::WrongExpectedVersion { .. } => Failure::Conflict,
        // Batch append answers a wrong expected version with a google.rpc.Status
        // "WrongExpectedVersion", code ALREADY_EXISTS (6), which the client passes on as is.
        E::Grpc { code, message } if *code as i32 == 6 || message.contains("WrongExpected") => {
            Failure::Conflict
        }
        // INVALID_ARGUMENT (3), NOT_FOUND (5: stream deleted), PERMISSION_DENIED (7),
        // OUT_OF_RANGE (11), UNIMPLEMENTED (12), UNAUTHENTICATED (16).
        E::Grpc { code, .. } if matches!(*code as i32, 3 | 5 | 7 | 11 | 12 | 16) => Failure::Fatal,
        E::AccessDenied
        | E::ResourceDeleted
        | E::UnsupportedFeature
        | E::InternalParsingError(_)
        | E::InitializationError(_) => Failure::Fatal,
        _ => Failure::Transient,
    }
}

/// Tries of one append through connection failures before the import stops.
const TRIES: u32 = 8;

/// The runs in the span: which are in flight, which wait behind their stream.
#[derive(Default)]
struct Schedule {
    /// Sequence number (file order) of the next run taken in.
    next: u64,
    /// Taken in and not yet confirmed, by sequence number.
    unconfirmed: BTreeMap<u64, Arc<Run>>,
    /// Streams with a run in flight, each with its runs waiting to go next.
    parked: HashMap<Arc<str>, VecDeque<u64>>,
    in_flight: JoinSet<(u64, Result<(), kurrentdb::Error>)>,
}

impl Schedule {
    /// The oldest run not yet confirmed (the span starts there).
    fn oldest(&self) -> u64 {
        self.unconfirmed.keys().next().copied().unwrap_or(self.next)
    }

    /// Take a run into the span.
    fn admit(&mut self, run: Run) -> (u64, Arc<Run>) {
        let (n, run) = (self.next, Arc::new(run));
        self.next += 1;
        self.unconfirmed.insert(n, run.clone());
        (n, run)
    }

    fn send(&mut self, n: u64, run: Arc<Run>, sender: Sender) {
        self.in_flight.spawn(async move {
            let events = run.events.clone();
            let result = sender.append(&run.stream, run.expected(), events).await;
            (n, result)
        });
    }

    /// After a failure, with nothing in flight: the runs to send again, in file order.
    fn reset(&mut self) -> BTreeMap<u64, Arc<Run>> {
        self.parked.clear();
        std::mem::take(&mut self.unconfirmed)
    }
}

/// The appends in flight and what is needed to send any of them again.
struct Pipeline {
    client: Client,
    sender: Sender,
    /// False once a batch session has failed: the next send opens a new one.
    healthy: bool,
    window: usize,
    report: ImportReport,
}

impl Pipeline {
    /// Connect, and choose batch append when the server offers it.
    async fn connect(settings: kurrentdb::ClientSettings, options: &ImportOptions) -> Result<Self> {
        let client =
            Client::new(settings).map_err(|e| anyhow::anyhow!("creating the client: {e}"))?;
        let batch = if options.unary {
            None
        } else {
            match client.batch_append(&Default::default()).await {
                Ok(b) => Some(b),
                Err(kurrentdb::Error::UnsupportedFeature) => None,
                Err(e) => return Err(anyhow::anyhow!("connecting to the server: {e}")),
            }
        };
        let sender = match batch {
            Some(b) => Sender::Batch(Arc::new(b)),
            None => Sender::Unary(Box::new(client.clone())),
        };
        Ok(Pipeline {
            report: ImportReport {
                batch_append: matches!(sender, Sender::Batch(_)),
                ..Default::default()
            },
            client,
            sender,
            healthy: true,
            window: options.window.max(1),
        })
    }

    /// A sender that works: a new batch session after a failed one.
    async fn sender(&mut self) -> Result<Sender, kurrentdb::Error> {
        if !self.healthy
            && let Sender::Batch(_) = self.sender
        {
            self.sender = Sender::Batch(Arc::new(
                self.client.batch_append(&Default::default()).await?,
            ));
        }
        self.healthy = true;
        Ok(self.sender.clone())
    }

    /// [`Self::sender`] through connection failures.
    async fn sender_retrying(&mut self) -> Result<Sender> {
        let mut delay = Duration::from_millis(50);
        for attempt in 1.. {
            match self.sender().await {
                Ok(s) => return Ok(s),
                Err(e) if attempt < TRIES && failure(&e) == Failure::Transient => {
                    tracing::debug!(attempt, "opening a batch-append session failed: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "opening a batch-append session: {e}; run the import again to continue it"
                    ));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Send every run from `rx` within a span of `window` runs; see the module
    /// documentation.
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Vec<Run>>,
        progress: &ReadProgress,
        bar: bool,
    ) -> Result<ImportReport> {
        let mut show = Show::new(bar, progress);
        let mut s = Schedule::default();
        // Read from the file, not yet taken into the span.
        let mut queue: VecDeque<Run> = VecDeque::new();
        let (mut input_done, mut failed) = (false, false);
        loop {
            // Take runs into the span: sent at once, or parked behind their stream.
            while !failed && s.next < s.oldest() + self.window as u64 {
                if queue.is_empty() && !input_done {
                    let chunk = if s.in_flight.is_empty() {
                        rx.recv().await
                    } else {
                        match rx.try_recv() {
                            Ok(chunk) => Some(chunk),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => None,
                        }
                    };
                    match chunk {
                        Some(chunk) => queue.extend(chunk),
                        None => input_done = true,
                    }
                }
                let Some(run) = queue.pop_front() else { break };
                let (n, run) = s.admit(run);
                match s.parked.get_mut(&run.stream) {
                    Some(waiting) => waiting.push_back(n),
                    None => {
                        s.parked.insert(run.stream.clone(), VecDeque::new());
                        let sender = self.sender_retrying().await?;
                        s.send(n, run, sender);
                    }
                }
            }
            let Some(done) = s.in_flight.join_next().await else {
                if failed || !s.unconfirmed.is_empty() {
                    // Everything in flight has finished: send the rest again, in order.
                    for run in s.reset().into_values() {
                        self.resend(&run).await?;
                        show.update(&self.report, progress);
                    }
                    failed = false;
                    continue;
                }
                if input_done && queue.is_empty() {
                    break;
                }
                continue;
            };
            let (n, result) = done.context("an append task failed")?;
            let Some(run) = s.unconfirmed.get(&n).cloned() else {
                continue;
            };
            match result {
                Ok(()) => {
                    self.report.events += run.events.len() as u64;
                    self.report.appends += 1;
                    s.unconfirmed.remove(&n);
                    // The stream's next run, if one waits; else the stream is free.
                    let next = s.parked.get_mut(&run.stream).and_then(VecDeque::pop_front);
                    match next {
                        Some(m) if !failed => {
                            let sender = self.sender_retrying().await?;
                            if let Some(next) = s.unconfirmed.get(&m).cloned() {
                                s.send(m, next, sender);
                            }
                        }
                        Some(_) => {}
                        None => {
                            s.parked.remove(&run.stream);
                        }
                    }
                }
                Err(e) => {
                    if failure(&e) == Failure::Fatal {
                        return Err(append_error(&run, &e));
                    }
                    tracing::debug!(stream = %run.stream, line = run.lines[0], "append failed, will resend: {e}");
                    failed = true;
                    self.healthy = false;
                }
            }
            show.update(&self.report, progress);
        }
        show.finish(&self.report);
        Ok(self.report)
    }

    /// Send `run` again on its own; if its stream already holds some of its events,
    /// event by event.
    async fn resend(&mut self, run: &Run) -> Result<()> {
        self.report.resent += 1;
        match self
            .send_retrying(&run.stream, run.expected(), run.events.clone(), run)
            .await?
        {
            Ok(()) => {}
            Err(_conflict) => {
                for (k, event) in run.events.iter().enumerate() {
                    let revision = run.revision + k as u64;
                    self.report.resent += 1;
                    if let Err(e) = self
                        .send_retrying(
                            &run.stream,
                            expected_before(revision),
                            vec![event.clone()],
                            run,
                        )
                        .await?
                    {
                        anyhow::bail!(
                            "line {}: stream `{}` at revision {revision} holds another event than the file's ({e}); \
                             was the stream written by something else, or the file changed?",
                            run.lines[k],
                            run.stream,
                        );
                    }
                }
            }
        }
        self.report.events += run.events.len() as u64;
        self.report.appends += 1;
        Ok(())
    }

    /// One append through connection failures: Ok(Err) for a conflict, Err when the
    /// server refuses or stays unreachable.
    async fn send_retrying(
        &mut self,
        stream: &str,
        state: StreamState,
        events: Vec<EventData>,
        run: &Run,
    ) -> Result<Result<(), kurrentdb::Error>> {
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=TRIES {
            let result = match self.sender().await {
                Ok(sender) => sender.append(stream, state, events.clone()).await,
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(()) => return Ok(Ok(())),
                Err(e) => e,
            };
            self.healthy = false;
            match failure(&e) {
                Failure::Conflict => return Ok(Err(e)),
                Failure::Fatal => return Err(append_error(run, &e)),
                Failure::Transient if attempt == TRIES => {
                    return Err(append_error(run, &e).context(
                        "the server stayed unreachable; run the import again to continue it",
                    ));
                }
                Failure::Transient => {
                    tracing::debug!(stream, attempt, "append failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

fn append_error(run: &Run, e: &kurrentdb::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "appending {} events to `{}` at revision {} (line {}): {e}",
        run.events.len(),
        run.stream,
        run.revision,
        run.lines[0]
    )
}

/// Progress: a bar with an ETA on a terminal, a log line every 5 s otherwise.
struct Show {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last: Instant,
}

impl Show {
    fn new(bar: bool, progress: &ReadProgress) -> Show {
        let bar = bar.then(|| {
            let b = indicatif::ProgressBar::new(progress.total.load(Ordering::Relaxed).max(1));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "importing [{bar:30}] {percent:>3}% {msg} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        Show {
            bar,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, report: &ImportReport, progress: &ReadProgress) {
        let every = if self.bar.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let rate = report.events as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let (done, total) = (
            progress.done.load(Ordering::Relaxed),
            progress.total.load(Ordering::Relaxed).max(1),
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("{} events, {rate:.0}/s", report.events));
            }
            None => tracing::info!(
                events = report.events,
                appends = report.appends,
                events_per_s = rate as u64,
                percent = done * 100 / total,
                "importing"
            ),
        }
    }

    fn finish(&self, report: &ImportReport) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tracing::info!(
            events = report.events,
            appends = report.appends,
            seconds = self.started.elapsed().as_secs_f64(),
            "imported"
        );
    }
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
