//! Contract `projector:projection@0.2.0` (`wit/v0.2`): contract 0.1 with the batch
//! ([`pack`]) and the ops ([`unpack_ops`]) each packed into one byte list. Its types and
//! imports are 0.1's own bindings, so one linker and one set of host traits serve both
//! versions.
// Generated items carry the WIT file's own documentation, where it has some.
#![allow(missing_docs)]

use super::since_v0_1::types::{AddOp, Delta, Event, KeyOp, Op, RowOp, Value};

wasmtime::component::bindgen!({
    path: ["../wit/v0.1", "../wit/v0.2"],
    world: "projector:projection/projection@0.2.0",
    imports: { default: trappable },
    with: {
        "projector:projection/types@0.1.0": super::since_v0_1::types,
        "projector:projection/read-model@0.1.0": super::since_v0_1::read_model,
        "projector:projection/log@0.1.0": super::since_v0_1::log,
    },
});

/// Pack `events` into `out` (cleared first) in the layout `wit/v0.2` documents.
pub fn pack(events: &[&Event], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        for n in [
            e.revision,
            e.position.commit,
            e.position.prepare,
            e.created_ms,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let parts: [&[u8]; 6] = [
            e.stream_id.as_bytes(),
            e.event_type.as_bytes(),
            e.event_id.as_bytes(),
            e.content_type.as_bytes(),
            &e.data,
            &e.metadata,
        ];
        for p in parts {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        for p in parts {
            out.extend_from_slice(p);
        }
    }
}

/// The ops a module returned, from the layout `wit/v0.2` documents. The bytes come from
/// the module: anything malformed is an error naming the byte, never a panic.
pub fn unpack_ops(bytes: &[u8]) -> Result<Vec<Op>, String> {
    let mut r = Reader { buf: bytes, at: 0 };
    let count = r.len()?;
    // Each op takes at least 9 bytes: no allocation beyond what the bytes could hold.
    let mut ops = Vec::with_capacity(count.min(bytes.len() / 9));
    for _ in 0..count {
        let kind = r.take(1)?[0];
        let table = r.text()?;
        let values = r.values()?;
        ops.push(match kind {
            0 => Op::Upsert(RowOp { table, row: values }),
            1 => Op::Delete(KeyOp { table, key: values }),
            2 => {
                let n = r.len()?;
                let mut deltas = Vec::with_capacity(n.min(r.left() / 5));
                for _ in 0..n {
                    let column = r.text()?;
                    deltas.push(Delta {
                        column,
                        by: r.value()?,
                    });
                }
                Op::Increment(AddOp {
                    table,
                    key: values,
                    deltas,
                })
            }
            k => return Err(format!("unknown op kind {k} before byte {}", r.at)),
        });
    }
    if r.left() > 0 {
        return Err(format!("{} bytes after the last op", r.left()));
    }
    Ok(ops)
}

/// Reads packed ops, checking every length against what is left.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "{n} bytes wanted at byte {} of {}",
                self.at,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn eight(&mut self) -> Result<[u8; 8], String> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(b)
    }

    fn len(&mut self) -> Result<usize, String> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b) as usize)
    }

    fn text(&mut self) -> Result<String, String> {
        let at = self.at;
        let n = self.len()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("text at byte {at}: {e}"))
    }

    fn values(&mut self) -> Result<Vec<Value>, String> {
        let n = self.len()?;
        // A value takes at least one byte.
        let mut values = Vec::with_capacity(n.min(self.left()));
        for _ in 0..n {
            values.push(self.value()?);
        }
        Ok(values)
    }

    fn value(&mut self) -> Result<Value, String> {
        Ok(match self.take(1)?[0] {
            0 => Value::Null,
            1 => Value::Integer(i64::from_le_bytes(self.eight()?)),
            2 => Value::Real(f64::from_bits(u64::from_le_bytes(self.eight()?))),
            3 => Value::Text(self.text()?),
            4 => {
                let n = self.len()?;
                Value::Blob(self.take(n)?.to_vec())
            }
            t => return Err(format!("unknown value tag {t} before byte {}", self.at)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Position;

    #[test]
    fn packs_the_count_then_each_event_fixed_fields_lengths_and_bytes() {
        let e = Event {
            stream_id: "order-1".into(),
            event_type: "OrderPlaced".into(),
            event_id: "e1".into(),
            revision: 3,
            position: Position {
                commit: 10,
                prepare: 9,
            },
            created_ms: 77,
            content_type: "application/json".into(),
            data: b"{}".to_vec(),
            metadata: Vec::new(),
        };
        let mut out = vec![0xff; 3]; // cleared first
        pack(&[&e.clone(), &e], &mut out);
        let u32_at = |i: usize| u32::from_le_bytes(out[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(out[i..i + 8].try_into().unwrap());
        assert_eq!(u32_at(0), 2);
        assert_eq!(
            [u64_at(4), u64_at(12), u64_at(20), u64_at(28)],
            [3, 10, 9, 77]
        );
        let lens: Vec<u32> = (0..6).map(|i| u32_at(36 + 4 * i)).collect();
        assert_eq!(lens, [7, 11, 2, 16, 2, 0]);
        assert_eq!(&out[60..78], b"order-1OrderPlaced");
        let per_event = 32 + 24 + (7 + 11 + 2 + 16 + 2);
        assert_eq!(out.len(), 4 + 2 * per_event);
    }

    /// Ops packed by hand in the documented layout.
    fn packed_ops() -> Vec<u8> {
        let mut b = 3u32.to_le_bytes().to_vec();
        let text = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        // upsert orders ['o1', 2.5, NULL]
        b.push(0);
        text(&mut b, "orders");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.push(3);
        text(&mut b, "o1");
        b.push(2);
        b.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
        b.push(0);
        // delete orders [x'ff']
        b.push(1);
        text(&mut b, "orders");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(0xff);
        // increment counts [7] by n += -1
        b.push(2);
        text(&mut b, "counts");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&7i64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        text(&mut b, "n");
        b.push(1);
        b.extend_from_slice(&(-1i64).to_le_bytes());
        b
    }

    #[test]
    fn unpacks_each_kind_of_op_and_value() {
        let ops = unpack_ops(&packed_ops()).unwrap();
        let shown: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(ops.len(), 3, "{shown:?}");
        assert!(matches!(&ops[0], Op::Upsert(r) if r.table == "orders"
            && matches!(r.row.as_slice(), [Value::Text(k), Value::Real(x), Value::Null] if k == "o1" && *x == 2.5)));
        assert!(
            matches!(&ops[1], Op::Delete(k) if matches!(k.key.as_slice(), [Value::Blob(b)] if b == &[0xff]))
        );
        assert!(matches!(&ops[2], Op::Increment(a) if a.table == "counts"
            && matches!(a.key.as_slice(), [Value::Integer(7)])
            && a.deltas.len() == 1 && a.deltas[0].column == "n"
            && matches!(a.deltas[0].by, Value::Integer(-1))));
    }

    #[test]
    fn malformed_ops_are_errors_naming_where_never_panics() {
        let good = packed_ops();
        // Every truncation, and every single corrupted byte, is an error or a clean
        // parse; none panics or allocates what the bytes could not hold.
        for n in 0..good.len() {
            let err = unpack_ops(&good[..n]).unwrap_err();
            assert!(err.contains("byte"), "{err}");
        }
        for i in 0..good.len() {
            for x in [0x00, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = x;
                let _ = unpack_ops(&bad);
            }
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            unpack_ops(&trailing)
                .unwrap_err()
                .contains("after the last op")
        );
        let mut kind = good;
        kind[4] = 9;
        assert!(unpack_ops(&kind).unwrap_err().contains("unknown op kind 9"));
        let huge = u32::MAX.to_le_bytes();
        assert!(unpack_ops(&huge).is_err());
    }
}
