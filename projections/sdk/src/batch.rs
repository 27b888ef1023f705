//! Contract 0.2's packed batch (layout in `wit/v0.2/projection.wit`), read one event at
//! a time into one reused [`Event`]: its strings and buffers keep their capacity, so
//! reading an event allocates nothing once the first few have been read. And the ops,
//! packed the same way on their way back.

use crate::bindings::projector::projection0_1_0::types::Op;
use crate::{Event, Position};

/// Pack `ops` in the layout `wit/v0.2` documents.
pub(crate) fn pack_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * ops.len() + 4);
    len(&mut out, ops.len());
    for op in ops {
        let (kind, table, values) = match op {
            Op::Upsert(r) => (0, &r.table, &r.row),
            Op::Delete(k) => (1, &k.table, &k.key),
            Op::Increment(a) => (2, &a.table, &a.key),
        };
        out.push(kind);
        text_out(&mut out, table);
        len(&mut out, values.len());
        for v in values {
            v.encode_into(&mut out);
        }
        if let Op::Increment(a) = op {
            len(&mut out, a.deltas.len());
            for d in &a.deltas {
                text_out(&mut out, &d.column);
                d.by.encode_into(&mut out);
            }
        }
    }
    out
}

fn len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn text_out(out: &mut Vec<u8>, s: &str) {
    len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

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

    /// Read the next event into `e`; `Ok(false)` after the last one.
    pub(crate) fn next_into(&mut self, e: &mut Event) -> Result<bool, String> {
        if self.left == 0 {
            return Ok(false);
        }
        self.left -= 1;
        e.revision = self.u64()?;
        e.position.commit = self.u64()?;
        e.position.prepare = self.u64()?;
        e.created_ms = self.u64()?;
        let mut lens = [0usize; 6];
        for l in &mut lens {
            *l = self.u32()? as usize;
        }
        let [stream, kind, id, content, data, meta] = lens;
        text(&mut e.stream_id, self.take(stream)?, "stream-id")?;
        text(&mut e.event_type, self.take(kind)?, "event-type")?;
        text(&mut e.event_id, self.take(id)?, "event-id")?;
        text(&mut e.content_type, self.take(content)?, "content-type")?;
        bytes(&mut e.data, self.take(data)?);
        bytes(&mut e.metadata, self.take(meta)?);
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

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
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
    }
}
