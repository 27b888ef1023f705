//! One ingest per source: the host reads and parses each event once and hands shared,
//! immutable chunks of events to every runner that reads at the head.
//!
//! Runners are lent the events their interests match ([`EventBuffer::lend`]), not given
//! copies: a batch holds the chunks it takes events from until the runner is done with
//! it, and a chunk's events go back to the hub's pool when its last holder lets go.
//!
//! A runner's [`SharedSource`] joins the source's [`Hub`] at its checkpoint when the hub
//! still holds that position (or opens the hub's source there when nobody reads);
//! otherwise it reads on its own (a new projection, a rebuild, a replay) and joins once
//! it has caught up with a position the hub holds. There is no reader thread: the member
//! that needs the next chunk first reads it for everyone (the others wait for it), so
//! parsing runs on the runners' own threads and never queues behind them for a core.
//! Likewise, at the end of a followed file one member watches for news for everyone
//! while the others wait to be woken by it (or until their batch's deadline): a hundred
//! idle projections cost one look at the file per `poll_ms`, not a hundred.
//! The hub keeps at most [`AHEAD`] chunks past the slowest member and [`HISTORY`] chunks
//! behind it (so a runner a little behind can still join): memory stays bounded. A member
//! that holds the others back for longer than [`PATIENCE`] is left behind and reads on
//! its own again, so a slow projection never stalls the others for long. Checkpoints are
//! the runners' own, as before: sharing changes where events come from, never what is
//! committed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{
    BadEvent, Budget, EventBuffer, EventSource, Filter, Lent, Progress, ReadBatch, SourceError,
};
use crate::wit::{Event, Position};

/// Events per chunk.
const CHUNK: usize = 1024;
/// Chunks the fastest member may read ahead of the slowest.
pub const AHEAD: u64 = 64;
/// Chunks kept behind the slowest member, for runners joining a little behind.
pub const HISTORY: u64 = 32;
/// How long the others wait for the slowest member before leaving it behind.
pub const PATIENCE: Duration = Duration::from_secs(2);
/// Spent chunks whose events are kept for reuse while catching up: as many as members
/// may hold between them (the window ahead, the history, a runner's batch of up to 64
/// chunks), so a runner letting go of a whole catch-up batch gives the reader back every
/// allocation...
const POOL: usize = (AHEAD + HISTORY) as usize + 64;
/// ...and once a read reaches the source's end, no more than this.
const LIVE_POOL: usize = 8;

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
    /// The source's progress after this chunk (its own unit: bytes, positions).
    done: u64,
    error: Option<ChunkError>,
    /// Where its events go when the last holder (the hub, or a runner's batch it lent
    /// them to) lets go.
    pool: Arc<Pool>,
}

impl AsRef<[Event]> for Chunk {
    fn as_ref(&self) -> &[Event] {
        &self.events
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.events));
    }
}

/// Events of chunks nobody holds any more, reused (their strings and buffers too), so
/// steady-state reading allocates little.
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<Event>>>);

impl Pool {
    fn give(&self, events: Vec<Event>) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL && events.capacity() > 0 {
            pool.push(events);
        }
    }

    fn take(&self) -> Vec<Event> {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pool.pop().unwrap_or_default()
    }

    /// Keep at most `keep` spent chunks (at the source's end: what a catch-up pooled,
    /// tens of megabytes, is not held while the host follows the source live).
    fn trim(&self, keep: usize) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pool.truncate(keep);
    }
}

/// Where a member reads next: chunk `seq`, event `index` in it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    index: usize,
}

/// A member's place, as the others see it.
struct Member {
    seq: u64,
    left_behind: bool,
}

struct State {
    chunks: VecDeque<Arc<Chunk>>,
    /// The seq the next chunk gets.
    next_seq: u64,
    /// Where the source has been read up to.
    head: Option<Position>,
    /// The last read stopped at the end of the source.
    at_end: bool,
    /// The source, unless it is out with the member reading it (`busy`) or closed.
    source: Option<Box<dyn EventSource>>,
    busy: bool,
    members: HashMap<u64, Member>,
    next_member: u64,
    /// Since when a member at the head has waited for the slowest, and the chunk the
    /// slowest was at then (the wait restarts when it moves).
    blocked: Option<(u64, Instant)>,
    /// The source's known total (for progress).
    total: u64,
}

impl State {
    /// The source is open: here, or out with the member reading it.
    fn is_open(&self) -> bool {
        self.source.is_some() || self.busy
    }
}

/// The shared ingest of one source (a file, or one `$all` subscription).
pub struct Hub {
    spec: String,
    follow: bool,
    retry: super::esdb::RetrySettings,
    state: Mutex<State>,
    changed: Condvar,
    pool: Arc<Pool>,
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
                source: None,
                busy: false,
                members: HashMap::new(),
                next_member: 0,
                blocked: None,
                total: 0,
            }),
            changed: Condvar::new(),
            pool: Arc::default(),
        });
        hubs.insert(k, Arc::downgrade(&hub));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait at most `d` for another member's news.
    fn wait<'a>(&self, s: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(s, d)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }

    /// Join after `at`: the member's id and cursor, or None when the hub does not hold
    /// that position (the runner reads on its own meanwhile).
    fn join(&self, at: Option<Position>) -> Option<(u64, Cursor)> {
        let mut s = self.lock();
        let cursor = if !s.is_open() {
            let source = match super::open(
                &self.spec,
                at,
                Filter::everything(),
                self.follow,
                &self.retry,
            ) {
                Ok(source) => source,
                Err(e) => {
                    tracing::debug!("no shared source ({e:#}); reading on its own");
                    return None;
                }
            };
            s.chunks.clear();
            s.head = at;
            s.at_end = false;
            s.source = Some(source);
            s.blocked = None;
            tracing::debug!(source = %self.spec, from = ?at.map(|p| p.commit), "shared source opened");
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
        {
            let mut s = self.lock();
            s.members.remove(&id);
            if s.members.is_empty() && !s.busy {
                // Nobody reads: close the source and free the chunks.
                s.source = None;
                s.chunks.clear();
            }
        }
        self.changed.notify_all();
    }

    /// Read the next chunk for every member (the caller holds the lock in `s`, and
    /// gets it back); waits until `deadline` at most for events. With `watch`, at the
    /// end of a followed source that answers at once (a file), it looks again every
    /// `watch` meanwhile: one member watches the end for all, while the others wait for
    /// news.
    fn read_next<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        deadline: Instant,
        watch: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        let Some(mut source) = s.source.take() else {
            return s;
        };
        s.busy = true;
        let mut buf = EventBuffer::reuse(self.pool.take());
        drop(s);
        let read = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = source.read_batch(&mut buf, CHUNK, left);
            let nothing_yet = matches!(&read, Ok(r) if r.at_end && r.last.is_none());
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(poll) = watch.filter(|_| self.follow && nothing_yet && !left.is_zero()) else {
                break read;
            };
            std::thread::sleep(poll.min(left));
        };
        let progress = source.progress();
        if matches!(&read, Ok(r) if r.at_end) {
            // Before taking the hub's lock: dropping a catch-up's pool takes a while.
            self.pool.trim(LIVE_POOL);
        }
        let mut s = self.lock();
        s.busy = false;
        s.total = progress.total;
        let (chunk_last, events, error) = match read {
            Ok(read) => {
                s.at_end = read.at_end;
                s.source = Some(source);
                match read.last {
                    Some(last) => (Some(last), buf.into_events(), None),
                    None => {
                        // No news: one waiting member takes over watching the end
                        // (waking them all would only have them queue for the lock).
                        self.changed.notify_one();
                        return s;
                    }
                }
            }
            Err(SourceError::BadEvent(bad)) => {
                s.source = Some(source);
                (Some(bad.position), Vec::new(), Some(ChunkError::Bad(bad)))
            }
            Err(SourceError::Failed(e)) => {
                // Members read the failure (the source stays closed); whoever joins
                // next opens it again.
                (
                    s.head,
                    Vec::new(),
                    Some(ChunkError::Failed(format!("{e:#}"))),
                )
            }
        };
        let chunk = Chunk {
            seq: s.next_seq,
            after: s.head,
            events,
            last: chunk_last,
            done: progress.done,
            error,
            pool: Arc::clone(&self.pool),
        };
        add(&mut s, chunk);
        self.changed.notify_all();
        s
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
        // Its events go back to the pool when the last batch holding them lets go.
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
    /// How often this member, watching the end of a followed file for all, looks again.
    poll: Duration,
}

impl SharedSource {
    /// A source for a runner after `from` with `filter`: it joins `spec`'s hub, or reads
    /// on its own until it can. Following, it looks for news every `poll` at the end.
    pub fn open(
        spec: &str,
        from: Option<Position>,
        filter: Filter,
        follow: bool,
        poll: Duration,
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
            poll,
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
                let mut tried_end = false;
                loop {
                    if s.members.get(&id).is_none_or(|m| m.left_behind) {
                        return Ok((batch, cursor, true));
                    }
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
                    if !s.is_open() {
                        // The source failed (the members have read why): read alone.
                        return Ok((batch, cursor, true));
                    }
                    let wait = budget.deadline().saturating_duration_since(Instant::now());
                    if tried_end || wait.is_zero() {
                        // At the end, hand over what there is; catching up, the batch
                        // filled until its deadline, as a source of one's own would.
                        // Having read every chunk of a hub at the source's end (while
                        // another member watched it), this member is at the end too.
                        batch.at_end = tried_end || s.at_end;
                        if !tried_end && s.at_end && !s.busy && s.is_open() {
                            // Nobody watches the end: this member may have been the one
                            // woken to take over (with no time left), so pass it on.
                            self.hub.changed.notify_one();
                        }
                        break None;
                    }
                    let slowest = slowest(&s);
                    if s.busy && batch.read > 0 && s.at_end {
                        // Another member watches the source's end: hand over what
                        // there is now, not when its watch is over.
                        batch.at_end = true;
                        break None;
                    } else if s.busy {
                        // Another member is reading the next chunk.
                        s = self.hub.wait(s, wait);
                    } else if s.next_seq.saturating_sub(slowest) >= AHEAD {
                        // Far enough ahead of the slowest member: wait for it, but not
                        // for long.
                        let since = match s.blocked {
                            Some((at, since)) if at == slowest => since,
                            _ => {
                                let now = Instant::now();
                                s.blocked = Some((slowest, now));
                                now
                            }
                        };
                        if since.elapsed() >= PATIENCE {
                            for m in s.members.values_mut().filter(|m| m.seq == slowest) {
                                m.left_behind = true;
                            }
                            s.blocked = None;
                            tracing::info!(source = %self.hub.spec, "a projection held the others back for {PATIENCE:?}; it reads on its own until it catches up");
                        } else {
                            let left = PATIENCE.saturating_sub(since.elapsed());
                            s = self.hub.wait(s, wait.min(left));
                        }
                    } else {
                        s.blocked = None;
                        let at_end_before = s.next_seq;
                        // A batch with events in it goes to its runner at the end,
                        // not after a watch for more.
                        let watch = (batch.read == 0).then_some(self.poll);
                        s = self.hub.read_next(s, budget.deadline(), watch);
                        tried_end = s.next_seq == at_end_before && s.at_end;
                    }
                }
            };
            let Some(chunk) = chunk else {
                return Ok((batch, cursor, false));
            };
            let lent: Lent = chunk.clone();
            while cursor.index < chunk.events.len() {
                if !budget.more(out, &batch) {
                    return Ok((batch, cursor, false));
                }
                let e = &chunk.events[cursor.index];
                cursor.index += 1;
                batch.read += 1;
                batch.last = Some(e.position);
                if self.filter.matches(&e.stream_id, &e.event_type) {
                    out.lend(&lent, cursor.index - 1);
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
                    // The whole chunk is through: its end may be a server checkpoint
                    // past its events.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::esdb::RetrySettings;

    /// A file of `n` events, one line each, `data` naming its line.
    fn file(n: usize) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("e.ndjson");
        let text: String = (1..=n)
            .map(|i| {
                format!(
                    "{{\"stream\":\"s-{}\",\"type\":\"T\",\"data\":{{\"line\":{i}}}}}\n",
                    i % 7
                )
            })
            .collect();
        std::fs::write(&path, text).expect("write");
        let spec = path.to_string_lossy().into_owned();
        (dir, spec)
    }

    fn member(spec: &str) -> SharedSource {
        open_member(spec, false)
    }

    /// A member reading from the start, following the file or not.
    fn open_member(spec: &str, follow: bool) -> SharedSource {
        SharedSource::open(
            spec,
            None,
            Filter::everything(),
            follow,
            Duration::from_millis(20),
            &RetrySettings::default(),
        )
        .expect("open")
    }

    fn read(src: &mut SharedSource, buf: &mut EventBuffer, max: usize) -> ReadBatch {
        buf.clear();
        src.read_batch(buf, max, Duration::from_secs(5))
            .expect("read")
    }

    /// Read `src` until it has handed over `n` events.
    fn read_through(src: &mut SharedSource, n: u64) {
        let mut buf = EventBuffer::default();
        let mut got = 0;
        while got < n {
            got += read(src, &mut buf, 1000).read;
        }
    }

    fn line(e: &Event) -> String {
        String::from_utf8_lossy(&e.data).into_owned()
    }

    #[test]
    fn members_are_lent_the_same_events_not_copies() {
        let (_dir, spec) = file(3000);
        let (mut a, mut b) = (member(&spec), member(&spec));
        let (mut from_a, mut from_b) = (EventBuffer::default(), EventBuffer::default());
        read(&mut a, &mut from_a, 2500);
        read(&mut b, &mut from_b, 2500);
        assert!(a.is_shared() && b.is_shared());
        assert_eq!((from_a.len(), from_b.len()), (2500, 2500));
        for (i, (x, y)) in from_a.iter().zip(from_b.iter()).enumerate() {
            assert!(std::ptr::eq(x, y), "event {i} was copied");
            assert_eq!(x.position.commit, i as u64 + 1);
            assert_eq!(line(x), format!("{{\"line\":{}}}", i + 1));
        }
    }

    /// The only member of a file of `chunks` chunks: a first batch of `held` chunks,
    /// kept, then read on to the last event (not past it), so the hub trims what lies
    /// behind. Returns the batch held and the last one read.
    fn hold_then_read_on(
        chunks: usize,
        held: usize,
    ) -> (tempfile::TempDir, SharedSource, EventBuffer, EventBuffer) {
        let n = CHUNK * chunks;
        let (dir, spec) = file(n);
        let mut a = member(&spec);
        let (mut first, mut rest) = (EventBuffer::default(), EventBuffer::default());
        read(&mut a, &mut first, CHUNK * held);
        let mut read_so_far = first.len();
        while read_so_far < n {
            read_so_far += read(&mut a, &mut rest, CHUNK * 4).read as usize;
        }
        (dir, a, first, rest)
    }

    #[test]
    fn lent_events_outlive_the_hub_trimming_them_and_then_go_back_to_its_pool() {
        let (_dir, a, mut first, _rest) = hold_then_read_on(HISTORY as usize + 8, 2);
        let hub = Arc::clone(&a.hub);
        let oldest = hub.lock().chunks.front().map(|c| c.seq);
        assert!(oldest > Some(2), "the first chunks are trimmed: {oldest:?}");
        // The batch still holds them, whole.
        assert_eq!(first.len(), CHUNK * 2);
        for (i, e) in first.iter().enumerate() {
            assert_eq!(line(e), format!("{{\"line\":{}}}", i + 1));
        }
        let pooled = || hub.pool.0.lock().map(|p| p.len()).unwrap_or(0);
        let before = pooled();
        assert!(before < POOL, "the pool has room");
        first.clear();
        assert!(pooled() > before, "the trimmed chunks' events are reused");
    }

    #[test]
    fn the_pool_keeps_a_catch_up_batch_and_gives_it_back_at_the_end() {
        let (_dir, mut a, mut big, mut rest) = hold_then_read_on(HISTORY as usize + 24, 20);
        let hub = Arc::clone(&a.hub);
        let pooled = || hub.pool.0.lock().map(|p| p.len()).unwrap_or(0);
        // The batch lets go of its twenty chunks, which the hub trimmed: all pooled.
        big.clear();
        assert!(pooled() >= 20, "a catch-up batch pooled: {}", pooled());
        // At the source's end, the pool keeps no more than a live host needs.
        rest.clear();
        assert!(read(&mut a, &mut rest, CHUNK).at_end);
        assert!(pooled() <= LIVE_POOL, "pooled at the end: {}", pooled());
    }

    #[test]
    fn following_a_file_one_member_watches_its_end_and_every_member_gets_the_news() {
        let (_dir, spec) = file(100);
        let mut members: Vec<SharedSource> = (0..3).map(|_| open_member(&spec, true)).collect();
        for m in &mut members {
            read_through(m, 100);
        }
        // Every member waits at the end at once: those that waited for the watcher's
        // news are at the end too (not merely out of time), so their runners count as
        // caught up.
        let members: Vec<SharedSource> = std::thread::scope(|s| {
            let handles: Vec<_> = members
                .into_iter()
                .map(|mut m| {
                    s.spawn(move || {
                        let mut buf = EventBuffer::default();
                        let t0 = Instant::now();
                        let r = m
                            .read_batch(&mut buf, 1000, Duration::from_millis(300))
                            .expect("read");
                        assert!(r.at_end && r.read == 0, "at the end: {r:?}");
                        // Watched or waited for news (each looking for itself would
                        // have come back at once).
                        assert!(t0.elapsed() >= Duration::from_millis(250));
                        m
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("member"))
                .collect()
        });
        // Lines appended while they wait reach every member, once, in order.
        std::thread::scope(|s| {
            let handles: Vec<_> = members
                .into_iter()
                .map(|mut m| {
                    s.spawn(move || {
                        let mut buf = EventBuffer::default();
                        let mut seen = Vec::new();
                        while seen.len() < 2 {
                            buf.clear();
                            m.read_batch(&mut buf, 1000, Duration::from_secs(1))
                                .expect("read");
                            seen.extend(buf.iter().map(|e| e.position.commit));
                        }
                        seen
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(100));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&spec)
                .expect("append");
            std::io::Write::write_all(
                &mut f,
                b"{\"stream\":\"s-1\",\"type\":\"T\",\"data\":{}}\n{\"stream\":\"s-2\",\"type\":\"T\",\"data\":{}}\n",
            )
            .expect("write");
            for h in handles {
                assert_eq!(h.join().expect("member"), vec![101, 102]);
            }
        });
    }

    #[test]
    fn a_member_holding_events_hands_them_over_while_another_watches_the_end() {
        let (_dir, spec) = file(100);
        let (mut watcher, mut behind) = (open_member(&spec, true), open_member(&spec, true));
        read_through(&mut watcher, 100);
        let mut buf = EventBuffer::default();
        assert_eq!(read(&mut behind, &mut buf, 50).read, 50);
        std::thread::scope(|s| {
            let watching = s.spawn(move || {
                let mut buf = EventBuffer::default();
                watcher
                    .read_batch(&mut buf, 1000, Duration::from_secs(3))
                    .expect("watch")
            });
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            buf.clear();
            let r = behind
                .read_batch(&mut buf, 1000, Duration::from_secs(5))
                .expect("read");
            assert_eq!((r.read, r.at_end), (50, true));
            assert_eq!(buf.iter().last().map(|e| e.position.commit), Some(100));
            // At once, not when the other's three-second watch is over.
            assert!(
                t0.elapsed() < Duration::from_millis(1500),
                "{:?}",
                t0.elapsed()
            );
            let watched = watching.join().expect("watcher");
            assert!(watched.at_end && watched.read == 0);
        });
    }
}
