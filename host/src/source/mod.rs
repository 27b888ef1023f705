//! Event sources: where a runner's events come from.
//!
//! Each runner reads at its own checkpoint, so projections progress independently.
//! Runners at the head share one reader per source ([`hub`]): each event is parsed once
//! per host; a runner behind it reads on its own until it catches up. Sources apply the
//! projection's interests before an event is built, so filtered events cost no
//! allocation and never cross into Wasm.
//!
//! What every source shares lives here: the event buffer, the filter, the batch budget
//! ([`Budget`]) and the errors ([`SourceError`]): a [`BadEvent`] follows the
//! projection's error policy, any other failure stops it.

pub mod esdb;
pub mod hub;
pub mod ndjson;
pub mod read_ahead;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::schema::Schema;
use crate::small_key::{same, starts_with};
use crate::wit::{Event, Position};

/// An event the source cannot turn into a WIT event (a malformed line, a record that
/// breaks the format): it is one event's problem, so the error policy may skip it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: malformed event: {reason}")]
pub struct BadEvent {
    /// Where it is, for people (`file:line`, or a server position).
    pub origin: String,
    /// Its position in the source.
    pub position: Position,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// One event is bad; the events after it can still be read.
    #[error(transparent)]
    BadEvent(#[from] BadEvent),
    /// The source itself failed (unreadable file, server gone for good).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// How much one `read_batch` may take: `max` matching events, 8× that many read in all
/// (so a projection that ignores most events still commits its checkpoint regularly),
/// and a deadline; an error met after good events waits for the next read.
pub struct Budget {
    max: usize,
    max_read: u64,
    deadline: Instant,
}

impl Budget {
    /// The budget of one read.
    pub fn new(max: usize, max_wait: Duration) -> Budget {
        Budget {
            max,
            max_read: (max as u64).saturating_mul(8).max(1),
            deadline: Instant::now() + max_wait,
        }
    }

    /// True while the batch may take another event.
    pub fn more(&self, out: &EventBuffer, batch: &ReadBatch) -> bool {
        out.len() < self.max && batch.read < self.max_read
    }

    /// When the read must hand over what it has.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// An error met while reading: returned at once when the batch is empty, otherwise
    /// kept in `pending` for the next read, so the good events before it go out first.
    pub fn fail(
        batch: &ReadBatch,
        e: SourceError,
        pending: &mut Option<SourceError>,
    ) -> Result<(), SourceError> {
        if batch.last.is_none() {
            return Err(e);
        }
        *pending = Some(e);
        Ok(())
    }
}

/// What one read produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadBatch {
    /// Position of the last event read (delivered or filtered out); None if nothing new.
    pub last: Option<Position>,
    /// Events read from the source, matched or not.
    pub read: u64,
    /// True when the read stopped at the current end of the source.
    pub at_end: bool,
}

/// How far a source has got, for progress display.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    /// Done so far.
    pub done: u64,
    /// Out of this.
    pub total: u64,
}

/// A stream of events in global order.
pub trait EventSource: Send {
    /// Append up to `max` matching events to `out`, reading for at most `max_wait`.
    fn read_batch(
        &mut self,
        out: &mut EventBuffer,
        max: usize,
        max_wait: Duration,
    ) -> Result<ReadBatch, SourceError>;
    /// Bytes (or positions) done out of the known total.
    fn progress(&self) -> Progress;
    /// True when the events come from the host's shared reader.
    fn is_shared(&self) -> bool {
        false
    }
}

/// Events a shared reader lends to every batch that matches them: immutable, and alive
/// while any batch still holds them (a hub chunk's).
pub type Lent = Arc<dyn AsRef<[Event]> + Send + Sync>;

/// Where one event of a batch is.
#[derive(Clone, Copy)]
enum Slot {
    /// In the buffer's own events.
    Own(u32),
    /// In lent events `lent[chunk]`, at `index`.
    Lent { chunk: u32, index: u32 },
}

/// A batch of events: read into the buffer's own events (their strings and buffers are
/// reused from batch to batch, so steady-state reading allocates nothing per event), or
/// lent by the host's shared reader (no copy at all).
#[derive(Default)]
pub struct EventBuffer {
    events: Vec<Event>,
    /// Own events in use.
    len: usize,
    lent: Vec<Lent>,
    /// The batch, in order.
    order: Vec<Slot>,
}

impl EventBuffer {
    /// Forget the events (keeping own allocations, giving lent events back).
    pub fn clear(&mut self) {
        self.len = 0;
        self.lent.clear();
        self.order.clear();
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Keep only the first `len` events.
    pub fn truncate(&mut self, len: usize) {
        self.order.truncate(len);
    }

    /// A buffer over events given back (their allocations are reused; none is in it).
    pub fn reuse(events: Vec<Event>) -> EventBuffer {
        EventBuffer {
            events,
            ..EventBuffer::default()
        }
    }

    /// The buffer's own events, given away (for a chunk shared by several runners);
    /// lent events are not among them.
    pub fn into_events(mut self) -> Vec<Event> {
        self.events.truncate(self.len);
        self.events
    }

    /// Event `i` of the batch.
    pub fn get(&self, i: usize) -> Option<&Event> {
        self.order.get(i).map(|&slot| self.at(slot))
    }

    fn at(&self, slot: Slot) -> &Event {
        match slot {
            Slot::Own(i) => &self.events[i as usize],
            Slot::Lent { chunk, index } => {
                &AsRef::<[Event]>::as_ref(&*self.lent[chunk as usize])[index as usize]
            }
        }
    }

    /// The batch's events, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> + ExactSizeIterator {
        self.order.iter().map(|&slot| self.at(slot))
    }

    /// The batch as a slice of references (what a module is called with).
    pub fn refs(&self) -> Vec<&Event> {
        self.iter().collect()
    }

    /// Add event `index` of `events` (lent, not copied).
    pub fn lend(&mut self, events: &Lent, index: usize) {
        let same = self.lent.last().is_some_and(|l| Arc::ptr_eq(l, events));
        if !same {
            self.lent.push(Arc::clone(events));
        }
        self.order.push(Slot::Lent {
            chunk: (self.lent.len() - 1) as u32,
            index: index as u32,
        });
    }

    /// The next event to fill in: a recycled one (holding stale values) or a new one.
    pub fn next_slot(&mut self) -> &mut Event {
        if self.len == self.events.len() {
            self.events.push(Event::default());
        }
        self.order.push(Slot::Own(self.len as u32));
        self.len += 1;
        &mut self.events[self.len - 1]
    }
}

/// A projection's interests, as a predicate on (stream, event type).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub(crate) event_types: Vec<String>,
    pub(crate) stream_prefixes: Vec<String>,
    /// Every event, system events too (the shared reader's filter).
    pub(crate) everything: bool,
}

impl Filter {
    /// The filter of a projection's manifest.
    pub fn of(schema: &Schema) -> Filter {
        Filter {
            event_types: schema.event_types.clone(),
            stream_prefixes: schema.stream_prefixes.clone(),
            everything: false,
        }
    }

    /// Every event the source has, system events included. (An EventStoreDB server
    /// still leaves system events out of a subscription that does not name them.)
    pub fn everything() -> Filter {
        Filter {
            everything: true,
            ..Filter::default()
        }
    }

    /// True when the interests name a system event type or stream (`$…`).
    pub fn wants_system_events(&self) -> bool {
        self.event_types.iter().any(|t| t.starts_with('$'))
            || self.stream_prefixes.iter().any(|p| p.starts_with('$'))
    }

    /// Does the projection want this event? System events (`$…`) only when named.
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        if self.everything {
            return true;
        }
        let type_ok = if self.event_types.is_empty() {
            !event_type.starts_with('$')
        } else {
            let event_type = event_type.as_bytes();
            self.event_types
                .iter()
                .any(|t| same(t.as_bytes(), event_type))
        };
        let stream_ok = if self.stream_prefixes.is_empty() {
            !stream.starts_with('$')
        } else {
            self.stream_prefixes
                .iter()
                .any(|p| starts_with(stream.as_bytes(), p.as_bytes()))
        };
        type_ok && stream_ok
    }
}

/// True when `spec` names an EventStoreDB / KurrentDB server rather than a file.
pub fn is_esdb(spec: &str) -> bool {
    [
        "esdb://",
        "esdb+discover://",
        "kurrentdb://",
        "kurrentdb+discover://",
    ]
    .iter()
    .any(|s| spec.starts_with(s))
}

/// A runner's source after `from`: the host's shared reader of `spec` when `shared`
/// (and the projection names no system events, which the shared subscription to an
/// EventStoreDB server does not receive), else a reader of its own. `poll`: how often
/// the shared reader looks for news at the end of a followed file.
pub fn open_for_runner(
    spec: &str,
    from: Option<Position>,
    filter: Filter,
    follow: bool,
    poll: std::time::Duration,
    retry: &esdb::RetrySettings,
    shared: bool,
) -> Result<Box<dyn EventSource>> {
    if shared && !filter.wants_system_events() {
        return Ok(Box::new(hub::SharedSource::open(
            spec, from, filter, follow, poll, retry,
        )?));
    }
    open(spec, from, filter, follow, retry)
}

/// Open the source named by `spec` (an NDJSON file path or an EventStoreDB connection
/// string), after `from`.
pub fn open(
    spec: &str,
    from: Option<Position>,
    filter: Filter,
    follow: bool,
    retry: &esdb::RetrySettings,
) -> Result<Box<dyn EventSource>> {
    if is_esdb(spec) {
        return Ok(Box::new(esdb::EsdbSource::open(
            spec,
            from,
            filter,
            follow,
            retry.clone(),
        )?));
    }
    Ok(Box::new(ndjson::NdjsonSource::open(
        spec.as_ref(),
        from,
        filter,
        follow,
    )?))
}
