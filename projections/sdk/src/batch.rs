//! Contract 0.2's packed batch (layout in `wit/v0.2/projection.wit`), read one event at
//! a time into one reused [`Event`]: its strings and buffers keep their capacity, so
//! reading an event allocates nothing once the first few have been read. And the ops,
//! packed the same way on their way back.

use crate::bindings::projector::projection0_1_0::types::Op;
use crate::{Event, Position, Value};

/// Ops packed one at a time in the layout `wit/v0.2` documents; the count goes in front
/// when done.
pub(crate) struct OpWriter {
    out: Vec<u8>,
    count: u32,
}

impl OpWriter {
    /// A writer with room for about `ops` ops.
    pub(crate) fn with_capacity(ops: usize) -> OpWriter {
        let mut out = Vec::with_capacity(64 * ops + 4);
        out.extend_from_slice(&[0; 4]);
        OpWriter { out, count: 0 }
    }

    /// One op: its kind (0 upsert, 1 delete, 2 increment), table, and row or key.
    pub(crate) fn op(&mut self, kind: u8, table: &str, values: &[Value]) {
        self.count += 1;
        self.out.push(kind);
        text_out(&mut self.out, table);
        len(&mut self.out, values.len());
        for v in values {
            v.encode_into(&mut self.out);
        }
    }

    /// An increment's deltas, right after its [`OpWriter::op`].
    pub(crate) fn deltas<'a>(
        &mut self,
        deltas: impl ExactSizeIterator<Item = (&'a str, &'a Value)>,
    ) {
        len(&mut self.out, deltas.len());
        for (column, by) in deltas {
            text_out(&mut self.out, column);
            by.encode_into(&mut self.out);
        }
    }

    /// The packed ops.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out[..4].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }
}

/// Pack `ops` in the layout `wit/v0.2` documents.
pub(crate) fn pack_ops(ops: &[Op]) -> Vec<u8> {
    let mut w = OpWriter::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Upsert(r) => w.op(0, &r.table, &r.row),
            Op::Delete(k) => w.op(1, &k.table, &k.key),
            Op::Increment(a) => {
                w.op(2, &a.table, &a.key);
                w.deltas(a.deltas.iter().map(|d| (d.column.as_str(), &d.by)));
            }
        }
    }
    w.finish()
}

fn len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn text_out(out: &mut Vec<u8>, s: &str) {
    len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Bytes before an event's strings: four u64 and six u32 lengths.
const HEAD: usize = 4 * 8 + 6 * 4;

/// Reads the events of a packed batch in order.
pub(crate) struct Batch<'a> {
    buf: &'a [u8],
    at: usize,
    left: u32,
}

/// An event with empty fields, to read into.
pub(crate) fn empty_event() -> Event {
    Event {
        stream_id: String::new(),
        event_type: String::new(),
        event_id: String::new(),
        revision: 0,
        position: Position {
            commit: 0,
            prepare: 0,
        },
        created_ms: 0,
        content_type: String::new(),
        data: Vec::new(),
        metadata: Vec::new(),
    }
}

impl<'a> Batch<'a> {
    /// A reader over `buf`, which starts with its event count.
    pub(crate) fn new(buf: &'a [u8]) -> Result<Batch<'a>, String> {
        let mut b = Batch {
            buf,
            at: 0,
            left: 0,
        };
        b.left = b.u32()?;
        Ok(b)
    }

    /// Events not read yet.
    pub(crate) fn left(&self) -> u32 {
        self.left
    }

    /// Read the next event into `e`; `Ok(false)` after the last one.
    pub(crate) fn next_into(&mut self, e: &mut Event) -> Result<bool, String> {
        if self.left == 0 {
            return Ok(false);
        }
        self.left -= 1;
        // One bounds check for the fixed part and one for the six strings (not one per
        // field: this runs once per event in every module).
        let head = <&[u8; HEAD]>::try_from(self.take(HEAD)?)
            .map_err(|_| "malformed batch: short event header")?;
        let u64_at =
            |i: usize| u64::from_le_bytes(head[8 * i..8 * i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| {
            u32::from_le_bytes(head[32 + 4 * i..36 + 4 * i].try_into().unwrap_or_default()) as usize
        };
        e.revision = u64_at(0);
        e.position.commit = u64_at(1);
        e.position.prepare = u64_at(2);
        e.created_ms = u64_at(3);
        let lens = [0, 1, 2, 3, 4, 5].map(u32_at);
        let total = lens.iter().try_fold(0usize, |sum, &l| sum.checked_add(l));
        let mut rest = self.take(total.ok_or("malformed batch: string lengths overflow")?)?;
        let mut next = |n: usize| {
            let (s, tail) = rest.split_at(n);
            rest = tail;
            s
        };
        let [stream, kind, id, content, data, meta] = lens;
        text(&mut e.stream_id, next(stream), "stream-id")?;
        text(&mut e.event_type, next(kind), "event-type")?;
        text(&mut e.event_id, next(id), "event-id")?;
        text(&mut e.content_type, next(content), "content-type")?;
        bytes(&mut e.data, next(data));
        bytes(&mut e.metadata, next(meta));
        Ok(true)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or_else(|| {
            format!(
                "malformed batch: {n} bytes wanted at byte {} of {}",
                self.at,
                self.buf.len()
            )
        })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
}

/// The host packs these from its own `String`s, so they are UTF-8: as wit-bindgen does
/// when it lifts a `string`, release builds take them unchecked (checking them cost ~8%
/// of order-summary's runner instructions).
fn text(out: &mut String, b: &[u8], field: &str) -> Result<(), String> {
    if cfg!(debug_assertions) {
        std::str::from_utf8(b).map_err(|e| format!("malformed batch: {field}: {e}"))?;
    }
    out.clear();
    // SAFETY: UTF-8 (above); `out` was empty, so it stays valid UTF-8.
    unsafe { out.as_mut_vec().extend_from_slice(b) };
    Ok(())
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.clear();
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's layout, written out by hand (the host's `pack` is tested against
    /// this reader end to end by every Rust module the host runs).
    fn packed(events: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (events.len() as u32).to_le_bytes().to_vec();
        for (i, (kind, data)) in events.iter().enumerate() {
            for n in [i as u64, 100 + i as u64, 200 + i as u64, 300 + i as u64] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            let id = format!("id-{i}");
            let parts: [&[u8]; 6] = [b"s-1", kind.as_bytes(), id.as_bytes(), b"json", data, b""];
            for p in parts {
                out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            }
            for p in parts {
                out.extend_from_slice(p);
            }
        }
        out
    }

    #[test]
    fn reads_every_field_of_every_event_into_one_reused_event() {
        let buf = packed(&[("A", b"{\"n\":1}"), ("Bee", b"")]);
        let mut b = Batch::new(&buf).unwrap();
        let mut e = empty_event();
        assert!(b.next_into(&mut e).unwrap());
        assert_eq!(
            (e.event_type.as_str(), e.data.as_slice()),
            ("A", &b"{\"n\":1}"[..])
        );
        assert_eq!(
            (
                e.revision,
                e.position.commit,
                e.position.prepare,
                e.created_ms
            ),
            (0, 100, 200, 300)
        );
        assert!(b.next_into(&mut e).unwrap());
        assert_eq!(
            (
                e.stream_id.as_str(),
                e.event_type.as_str(),
                e.event_id.as_str()
            ),
            ("s-1", "Bee", "id-1")
        );
        assert_eq!(
            (e.content_type.as_str(), e.data.len(), e.revision),
            ("json", 0, 1)
        );
        assert!(!b.next_into(&mut e).unwrap());
    }

    #[test]
    fn a_truncated_batch_is_an_error_naming_where() {
        let buf = packed(&[("A", b"{}")]);
        let mut b = Batch::new(&buf[..buf.len() - 1]).unwrap();
        let err = b.next_into(&mut empty_event()).unwrap_err();
        assert!(
            err.contains("malformed batch") && err.contains("at byte"),
            "{err}"
        );
        assert!(Batch::new(&[1, 0]).is_err());
        // Cut inside the fixed header.
        let mut b = Batch::new(&buf[..20]).unwrap();
        let err = b.next_into(&mut empty_event()).unwrap_err();
        assert!(err.contains("56 bytes wanted at byte 4 of 20"), "{err}");
    }

    /// Lengths that cannot fit (each near 4 GiB, summing past a 32-bit `usize`) are an
    /// error, never a panic or a wrapped sum.
    #[test]
    fn lengths_past_the_batch_are_an_error() {
        let mut buf = 1u32.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 32]);
        for _ in 0..6 {
            buf.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        buf.extend_from_slice(b"some bytes");
        let mut b = Batch::new(&buf).unwrap();
        let err = b.next_into(&mut empty_event()).unwrap_err();
        assert!(err.starts_with("malformed batch"), "{err}");
    }
}
