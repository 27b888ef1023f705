//! One ingest per source: a single reader per host parses each event once and hands
//! shared, immutable chunks to every runner that reads at the head.
//!
//! A runner's [`SharedSource`] joins the source's [`Hub`] at its checkpoint when the hub
//! still holds that position (or starts the hub there when nobody reads); otherwise it
//! reads on its own (a new projection, a rebuild, a replay) and joins once it has caught
//! up with a position the hub holds. The reader keeps at most [`AHEAD`] chunks past
//! the slowest member and [`HISTORY`] chunks behind it (so a runner a little behind can
//! still join): memory stays bounded. A member that holds the reader back for longer than
//! [`PATIENCE`] is left behind and reads on its own again, so a slow projection never
//! stalls the others for long. Checkpoints are the runners' own, as before: sharing
//! changes where events come from, never what is committed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{BadEvent, Budget, EventBuffer, EventSource, Filter, Progress, ReadBatch, SourceError};
use crate::wit::{Event, Position};

/// Events per chunk.
const CHUNK: usize = 1024;
/// Chunks the reader may run ahead of its slowest member.
pub const AHEAD: u64 = 32;
/// Chunks kept behind the slowest member, for runners joining a little behind.
pub const HISTORY: u64 = 32;
/// How long the reader waits for its slowest member before leaving it behind.
pub const PATIENCE: Duration = Duration::from_secs(2);
/// How long the reader waits for new events in one read.
const READ_WAIT: Duration = Duration::from_millis(50);

/// What the reader met after a chunk's events.
#[derive(Clone)]
enum ChunkError {
    Bad(BadEvent),
    Failed(String),
}

/// A run of events in source order, shared by every member.
struct Chunk {
    seq: u64,
    /// The position the chunk starts after (None: the start of the source).
    after: Option<Position>,
    /// Every event read, in order (system events too, from a file).
    events: Vec<Event>,
    /// The last position read (an event, or a server checkpoint past it).
    last: Option<Position>,
    /// Events the source read for this chunk, with the ones it left out.
    read: u64,
    /// The source's progress after this chunk (its own unit: bytes, positions).
    done: u64,
    error: Option<ChunkError>,
}

/// Where a member reads next: chunk `seq`, event `index` in it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    index: usize,
}

/// A member's place, as the reader sees it.
struct Member {
    seq: u64,
    left_behind: bool,
}

struct State {
    chunks: VecDeque<Arc<Chunk>>,
    /// The seq the next chunk gets.
    next_seq: u64,
    /// Where the reader has read up to.
    head: Option<Position>,
    /// The reader's last read stopped at the end of the source.
    at_end: bool,
    /// The reader is running.
    reading: bool,
    members: HashMap<u64, Member>,
    next_member: u64,
    /// The source's known total (for progress).
    total: u64,
}

/// The shared reader of one source (a file, or one `$all` subscription).
pub struct Hub {
    spec: String,
    follow: bool,
    retry: super::esdb::RetrySettings,
    state: Mutex<State>,
    changed: Condvar,
}

/// `a <= b` for positions where None is before everything.
fn at_or_before(a: Option<Position>, b: Option<Position>) -> bool {
    key(a) <= key(b)
}

fn key(p: Option<Position>) -> (u64, u64) {
    p.map_or((0, 0), |p| (p.commit, p.prepare))
}

impl Hub {
    /// The hub of `spec` in this process (one per source and mode).
    pub fn of(spec: &str, follow: bool, retry: &super::esdb::RetrySettings) -> Arc<Hub> {
        type Hubs = Mutex<HashMap<(String, bool), Weak<Hub>>>;
        static HUBS: OnceLock<Hubs> = OnceLock::new();
        let mut hubs = HUBS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        hubs.retain(|_, h| h.strong_count() > 0);
        let k = (spec.to_string(), follow);
        if let Some(hub) = hubs.get(&k).and_then(Weak::upgrade) {
            return hub;
        }
        let hub = Arc::new(Hub {
            spec: spec.to_string(),
            follow,
            retry: retry.clone(),
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                next_seq: 0,
                head: None,
                at_end: false,
                reading: false,
                members: HashMap::new(),
                next_member: 0,
                total: 0,
            }),
            changed: Condvar::new(),
        });
        hubs.insert(k, Arc::downgrade(&hub));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Join after `at`: the member's id and cursor, or None when the hub does not hold
    /// that position (the runner reads on its own meanwhile).
    fn join(self: &Arc<Self>, at: Option<Position>) -> Option<(u64, Cursor)> {
        let mut s = self.lock();
        let cursor = if !s.reading {
            s.chunks.clear();
            s.head = at;
            s.at_end = false;
            s.reading = true;
            let hub = self.clone();
            let spawned = std::thread::Builder::new()
                .name("ingest".into())
                .spawn(move || hub.read_loop(at));
            if let Err(e) = spawned {
                tracing::warn!("no shared reader ({e}); each projection reads on its own");
                s.reading = false;
                return None;
            }
            tracing::debug!(source = %self.spec, from = ?at.map(|p| p.commit), "shared reader started");
            Cursor {
                seq: s.next_seq,
                index: 0,
            }
        } else if key(at) == key(s.head) {
            Cursor {
                seq: s.next_seq,
                index: 0,
            }
        } else {
            let chunk = s.chunks.iter().find(|c| {
                at_or_before(c.after, at) && key(at) < key(c.last) && !c.events.is_empty()
            })?;
            let index = chunk
                .events
                .partition_point(|e| at_or_before(Some(e.position), at));
            Cursor {
                seq: chunk.seq,
                index,
            }
        };
        let id = s.next_member;
        s.next_member += 1;
        s.members.insert(
            id,
            Member {
                seq: cursor.seq,
                left_behind: false,
            },
        );
        Some((id, cursor))
    }

    fn leave(&self, id: u64) {
        self.lock().members.remove(&id);
        self.changed.notify_all();
    }

    /// The reader: read chunks while anyone is a member, keeping within the bounds.
    fn read_loop(self: Arc<Self>, from: Option<Position>) {
        let everything = Filter::everything();
        let mut source = match super::open(&self.spec, from, everything, self.follow, &self.retry) {
            Ok(s) => s,
            Err(e) => {
                self.push(None, ChunkError::Failed(format!("{e:#}")));
                return;
            }
        };
        let mut waiting_since: Option<Instant> = None;
        loop {
            {
                let mut s = self.lock();
                loop {
                    if s.members.is_empty() {
                        s.reading = false;
                        s.chunks.clear();
                        tracing::debug!(source = %self.spec, "shared reader stopped: no members");
                        return;
                    }
                    let slowest = slowest(&s);
                    if s.next_seq.saturating_sub(slowest) < AHEAD {
                        waiting_since = None;
                        break;
                    }
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= PATIENCE {
                        // Leave the slowest to read on its own; the others go on.
                        for m in s.members.values_mut().filter(|m| m.seq == slowest) {
                            m.left_behind = true;
                        }
                        tracing::info!(source = %self.spec, "a projection fell {AHEAD} chunks behind the shared reader for {PATIENCE:?}; it reads on its own until it catches up");
                        self.changed.notify_all();
                        continue;
                    }
                    s = self
                        .changed
                        .wait_timeout(s, PATIENCE)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
            let mut buf = EventBuffer::default();
            match source.read_batch(&mut buf, CHUNK, READ_WAIT) {
                Ok(read) => {
                    let progress = source.progress();
                    let got = read.last.is_some();
                    {
                        let mut s = self.lock();
                        s.total = progress.total;
                        if let Some(last) = read.last {
                            let chunk = Chunk {
                                seq: s.next_seq,
                                after: s.head,
                                events: buf.into_events(),
                                last: Some(last),
                                read: read.read,
                                done: progress.done,
                                error: None,
                            };
                            add(&mut s, chunk);
                        }
                        s.at_end = read.at_end;
                    }
                    self.changed.notify_all();
                    if !got {
                        std::thread::sleep(READ_WAIT);
                    }
                }
                Err(SourceError::BadEvent(bad)) => {
                    let at = bad.position;
                    self.push(Some(at), ChunkError::Bad(bad));
                }
                Err(SourceError::Failed(e)) => {
                    self.push(None, ChunkError::Failed(format!("{e:#}")));
                    return;
                }
            }
        }
    }

    /// A chunk carrying only an error (at `at`, or where the reader stands).
    fn push(&self, at: Option<Position>, error: ChunkError) {
        {
            let mut s = self.lock();
            let failed = matches!(error, ChunkError::Failed(_));
            let chunk = Chunk {
                seq: s.next_seq,
                after: s.head,
                events: Vec::new(),
                last: at.or(s.head),
                read: u64::from(at.is_some()),
                done: s.chunks.back().map_or(0, |c| c.done),
                error: Some(error),
            };
            add(&mut s, chunk);
            if failed {
                // Members read the failure; whoever joins next starts a new reader.
                s.reading = false;
            }
        }
        self.changed.notify_all();
    }
}

/// Append a chunk and drop what no member needs beyond the history.
fn add(s: &mut State, chunk: Chunk) {
    if chunk.last.is_some() {
        s.head = chunk.last;
    }
    s.next_seq = chunk.seq + 1;
    s.chunks.push_back(Arc::new(chunk));
    let keep_from = slowest(s).saturating_sub(HISTORY);
    while s.chunks.front().is_some_and(|c| c.seq < keep_from) {
        s.chunks.pop_front();
    }
}

/// The lowest chunk seq a member still needs.
fn slowest(s: &State) -> u64 {
    s.members
        .values()
        .filter(|m| !m.left_behind)
        .map(|m| m.seq)
        .min()
        .unwrap_or(s.next_seq)
}

/// Where a [`SharedSource`] reads from now.
enum Mode {
    /// On its own source (behind the hub, or left behind).
    Own(Box<dyn EventSource>),
    /// From the hub's chunks.
    Member { id: u64, cursor: Cursor },
}

/// A runner's source: the shared reader when at the head, its own otherwise.
pub struct SharedSource {
    hub: Arc<Hub>,
    filter: Filter,
    mode: Mode,
    /// The last position handed over (delivered or filtered out).
    last: Option<Position>,
    /// Progress as of the last chunk read through.
    done: u64,
    pending_error: Option<SourceError>,
}

impl SharedSource {
    /// A source for a runner after `from` with `filter`: it joins `spec`'s hub, or reads
    /// on its own until it can.
    pub fn open(
        spec: &str,
        from: Option<Position>,
        filter: Filter,
        follow: bool,
        retry: &super::esdb::RetrySettings,
    ) -> anyhow::Result<SharedSource> {
        let hub = Hub::of(spec, follow, retry);
        let mode = match hub.join(from) {
            Some((id, cursor)) => Mode::Member { id, cursor },
            None => Mode::Own(super::open(spec, from, filter.clone(), follow, retry)?),
        };
        Ok(SharedSource {
            hub,
            filter,
            mode,
            last: from,
            done: 0,
            pending_error: None,
        })
    }

    /// Read from the hub's chunks into `out`.
    fn read_shared(
        &mut self,
        id: u64,
        mut cursor: Cursor,
        out: &mut EventBuffer,
        budget: &Budget,
    ) -> Result<(ReadBatch, Cursor, bool), SourceError> {
        let mut batch = ReadBatch::default();
        loop {
            let chunk = {
                let mut s = self.hub.lock();
                if s.members.get(&id).is_none_or(|m| m.left_behind) {
                    return Ok((batch, cursor, true));
                }
                loop {
                    if let Some(front) = s.chunks.front()
                        && cursor.seq < front.seq
                    {
                        // Trimmed past us (cannot happen to a member in bounds).
                        return Ok((batch, cursor, true));
                    }
                    let first = s.chunks.front().map_or(s.next_seq, |c| c.seq);
                    if let Some(c) = s.chunks.get((cursor.seq - first) as usize) {
                        break Some(c.clone());
                    }
                    // At the end, hand over what there is; catching up, fill the
                    // batch until its deadline, as a source of one's own would.
                    if s.at_end || !s.reading {
                        batch.at_end = s.at_end;
                        break None;
                    }
                    let wait = budget.deadline().saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        break None;
                    }
                    s = self
                        .hub
                        .changed
                        .wait_timeout(s, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            };
            let Some(chunk) = chunk else {
                return Ok((batch, cursor, false));
            };
            while cursor.index < chunk.events.len() {
                if !budget.more(out, &batch) {
                    return Ok((batch, cursor, false));
                }
                let e = &chunk.events[cursor.index];
                cursor.index += 1;
                batch.read += 1;
                batch.last = Some(e.position);
                if self.filter.matches(&e.stream_id, &e.event_type) {
                    copy(out.next_slot(), e);
                }
            }
            cursor = Cursor {
                seq: chunk.seq + 1,
                index: 0,
            };
            self.done = chunk.done;
            {
                let mut s = self.hub.lock();
                if let Some(m) = s.members.get_mut(&id) {
                    m.seq = cursor.seq;
                }
            }
            self.hub.changed.notify_all();
            match &chunk.error {
                None => {
                    // The whole chunk is through: the events the reader left out count
                    // as read, and its end may be a server checkpoint past its events.
                    batch.read += chunk.read.saturating_sub(chunk.events.len() as u64);
                    if key(chunk.last) > key(batch.last) {
                        batch.last = chunk.last;
                    }
                }
                // The error carries its own position; the runner accounts for it.
                Some(error) => {
                    let e = match error {
                        ChunkError::Bad(bad) => SourceError::BadEvent(bad.clone()),
                        ChunkError::Failed(msg) => SourceError::Failed(anyhow::anyhow!("{msg}")),
                    };
                    Budget::fail(&batch, e, &mut self.pending_error)?;
                    return Ok((batch, cursor, false));
                }
            }
            if !budget.more(out, &batch) {
                return Ok((batch, cursor, false));
            }
        }
    }
}

/// Copy a shared event into a reused slot (keeping the slot's allocations).
fn copy(slot: &mut Event, e: &Event) {
    slot.stream_id.clone_from(&e.stream_id);
    slot.event_type.clone_from(&e.event_type);
    slot.event_id.clone_from(&e.event_id);
    slot.revision = e.revision;
    slot.position = e.position;
    slot.created_ms = e.created_ms;
    slot.content_type.clone_from(&e.content_type);
    slot.data.clone_from(&e.data);
    slot.metadata.clone_from(&e.metadata);
}

impl EventSource for SharedSource {
    fn read_batch(
        &mut self,
        out: &mut EventBuffer,
        max: usize,
        max_wait: Duration,
    ) -> Result<ReadBatch, SourceError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let read = match &mut self.mode {
            Mode::Own(source) => {
                let read = source.read_batch(out, max, max_wait)?;
                if let Some(last) = read.last {
                    self.last = Some(last);
                }
                // Caught up with a position the hub holds: read from it from now on.
                if (read.last.is_some() || read.at_end)
                    && let Some((id, cursor)) = self.hub.join(self.last)
                {
                    self.done = source.progress().done;
                    tracing::debug!(at = ?self.last.map(|p| p.commit), "joined the shared reader");
                    self.mode = Mode::Member { id, cursor };
                }
                read
            }
            Mode::Member { id, cursor } => {
                let (id, cursor) = (*id, *cursor);
                let budget = Budget::new(max, max_wait);
                let (read, next, left) = self.read_shared(id, cursor, out, &budget)?;
                if let Some(last) = read.last {
                    self.last = Some(last);
                }
                if left {
                    self.hub.leave(id);
                    tracing::debug!(at = ?self.last.map(|p| p.commit), "reading on its own");
                    let own = super::open(
                        &self.hub.spec,
                        self.last,
                        self.filter.clone(),
                        self.hub.follow,
                        &self.hub.retry,
                    )?;
                    self.mode = Mode::Own(own);
                } else if let Mode::Member { cursor, .. } = &mut self.mode {
                    *cursor = next;
                }
                read
            }
        };
        Ok(read)
    }

    fn is_shared(&self) -> bool {
        matches!(self.mode, Mode::Member { .. })
    }

    fn progress(&self) -> Progress {
        match &self.mode {
            Mode::Own(source) => source.progress(),
            Mode::Member { .. } => Progress {
                done: self.done,
                total: self.hub.lock().total.max(self.done),
            },
        }
    }
}

impl Drop for SharedSource {
    fn drop(&mut self) {
        if let Mode::Member { id, .. } = self.mode {
            self.hub.leave(id);
        }
    }
}
