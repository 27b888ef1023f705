//! The commit window: what the batches of the open transaction did to each row, held in
//! memory and written to SQLite once per row when the window is flushed.
//!
//! While catching up, one transaction spans many batches (`commit_events`). An order
//! touched by five events in that span is then written once, not five times, and a
//! module's `get` of a row written earlier in the span is answered from here without
//! asking SQLite. Values are kept as SQLite would return them (an integer in a REAL
//! column reads back as a real), so what a module sees never depends on where the
//! commits fall.

use rustc_hash::FxHashMap;

use super::ops::{OpError, fits};
use crate::schema::{ColumnSchema, Schema, TableSchema};
use crate::small_key::{self, SmallKey};
use crate::wit::{ColumnKind, Op, Value};

/// Rows held before they are written into the open transaction: bounds the memory of a
/// long window (a few hundred bytes per row of typical read models).
pub(crate) const MAX_ROWS: usize = 100_000;

/// The last state of one row in the window.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// The whole row (every declared column, in order): written as an upsert.
    Row(Vec<Value>),
    /// Deleted: the key, written as a delete.
    Deleted(Vec<Value>),
}

/// How to undo one change of the batch being applied.
#[derive(Debug, Clone)]
enum Undo {
    /// The batch added this slot (the last one at the time): remove it.
    Added(SmallKey),
    /// The batch replaced the state of this slot: put the old one back.
    Replaced(usize, Pending),
}

/// Rows touched since the last flush, in first-touch order (so flushes are deterministic).
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    index: FxHashMap<SmallKey, usize>,
    slots: Vec<(usize, Pending)>,
    undo: Vec<Undo>,
    scratch: Vec<u8>,
    /// Every key written since the tables were empty, when they were at open.
    written: Option<Written>,
}

/// The keys written since a build's tables were empty, as a Bloom filter (256 KiB per
/// build, taken at its first write): a key it has never seen is in no table, so `get`
/// answers "no row" without asking SQLite. A new build's rows are mostly new (an
/// `OrderCreated` looks its order up first), and a lookup that misses costs SQLite a
/// B-tree descent. A false positive only means asking SQLite; a filter never forgets a
/// key (deletes and undone batches leave theirs in), so it never says "no row" for a row
/// that is there.
#[derive(Debug, Clone, Default)]
struct Written(Vec<u64>);

/// Bits in the filter: ~3% false positives at 250k keys, 15% at 500k (each one a
/// lookup SQLite would have done anyway).
const WRITTEN_BITS: usize = 1 << 21;

impl Written {
    fn bits(key: &[u8]) -> [usize; 3] {
        use std::hash::Hasher as _;
        let mut h = rustc_hash::FxHasher::default();
        h.write(key);
        // Two well-mixed hashes (splitmix64's finalizer) give three probes.
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^ (z >> 31)
        };
        let (a, b) = (mix(h.finish()), mix(h.finish() ^ 0x9e3779b97f4a7c15) | 1);
        [0u64, 1, 2].map(|i| (a.wrapping_add(i.wrapping_mul(b)) as usize) % WRITTEN_BITS)
    }

    fn insert(&mut self, key: &[u8]) {
        if self.0.is_empty() {
            self.0 = vec![0; WRITTEN_BITS / 64];
        }
        for bit in Self::bits(key) {
            self.0[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, key: &[u8]) -> bool {
        !self.0.is_empty()
            && Self::bits(key)
                .iter()
                .all(|&bit| self.0[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// The first value of `key` (with its column) that is not of the kind its column
/// stores, so that its encoding would not equal the encoding of the stored key it
/// matches in SQLite (SQLite would convert, say, an integer for a text column; the
/// window, which holds rows by their exact values, would miss it).
pub(crate) fn inexact<'k>(
    t: &'k TableSchema,
    key: &'k [Value],
) -> Option<(&'k Value, &'k ColumnSchema)> {
    key.iter()
        .zip(&t.primary_key)
        .map(|(v, &c)| (v, &t.columns[c]))
        .find(|(v, c)| !fits(v, c.kind))
}

impl Window {
    /// A window for tables that are empty: it remembers every key written from here on.
    pub(crate) fn over_empty_tables() -> Window {
        Window {
            written: Some(Written::default()),
            ..Window::default()
        }
    }

    /// Forget the rows held (the transaction they belonged to was rolled back); the keys
    /// written stay remembered.
    pub(crate) fn reset(&mut self) {
        let written = self.written.take();
        *self = Window {
            written,
            ..Window::default()
        };
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Move the rows held into a window of their own (to be written while this one
    /// goes on); this one keeps the keys written, and makes room for as many rows: while
    /// catching up the next window holds as many, and room made once spares the index
    /// its rehashing at every doubling.
    pub(crate) fn take_rows(&mut self) -> Window {
        self.undo.clear();
        let rows = self.slots.len();
        let taken = Window {
            index: std::mem::take(&mut self.index),
            slots: std::mem::take(&mut self.slots),
            ..Window::default()
        };
        self.index.reserve(rows);
        self.slots.reserve(rows);
        taken
    }

    /// Forget the rows held, once written into the open transaction (their room stays,
    /// for the rows that follow).
    pub(crate) fn clear_rows(&mut self) {
        self.undo.clear();
        self.index.clear();
        self.slots.clear();
    }

    /// Every row held, in first-touch order (table index, last state).
    pub(crate) fn rows(&self) -> impl Iterator<Item = &(usize, Pending)> {
        self.slots.iter()
    }

    /// The row of `table` keyed `key` if this window holds it (`Some(None)`: deleted);
    /// `scratch` takes the encoded key.
    pub(crate) fn held(
        &self,
        schema: &Schema,
        table: usize,
        key: &[Value],
        scratch: &mut Vec<u8>,
    ) -> Option<Option<Vec<Value>>> {
        let t = &schema.tables[table];
        encode_key(scratch, table, t, key.iter().zip(&t.primary_key));
        let &slot = small_key::get(&self.index, scratch)?;
        Some(match &self.slots[slot].1 {
            Pending::Row(row) => Some(row.clone()),
            Pending::Deleted(_) => None,
        })
    }

    /// The row of `table` keyed `key` as the window has it: `Some(None)` when deleted or
    /// never written since the tables were empty, `None` when only SQLite knows. The key
    /// is of its columns' kinds (`get_row` refuses others, validation others' writes).
    pub(crate) fn get(
        &mut self,
        schema: &Schema,
        table: usize,
        key: &[Value],
    ) -> Option<Option<Vec<Value>>> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let row = self.held(schema, table, key, &mut scratch);
        self.scratch = scratch;
        // `scratch` holds the encoded key.
        row.or_else(|| self.never_written().then_some(None))
    }

    /// True when the key in `scratch` was never written since the tables were empty.
    fn never_written(&self) -> bool {
        self.written
            .as_ref()
            .is_some_and(|w| !w.may_hold(&self.scratch))
    }

    /// Apply one batch's validated ops (`plan` from [`super::ops::validate`]), all or
    /// nothing. `stored` reads a row the window does not hold (an increment needs it).
    pub(crate) fn apply(
        &mut self,
        schema: &Schema,
        ops: Vec<Op>,
        plan: &[(usize, Vec<usize>)],
        mut stored: impl FnMut(usize, &[Value]) -> Result<Option<Vec<Value>>, OpError>,
    ) -> Result<(), OpError> {
        self.undo.clear();
        for (index, (op, (table, delta_cols))) in ops.into_iter().zip(plan).enumerate() {
            let t = &schema.tables[*table];
            let next = match op {
                Op::Upsert(r) => {
                    let mut row = r.row;
                    for (v, c) in row.iter_mut().zip(&t.columns) {
                        if let (Value::Integer(i), ColumnKind::Real) = (&*v, c.kind) {
                            *v = Value::Real(*i as f64);
                        }
                    }
                    Pending::Row(row)
                }
                Op::Delete(k) => Pending::Deleted(k.key),
                Op::Increment(a) => {
                    // One lookup: the slot found here is the one `put_at` changes.
                    encode_key(
                        &mut self.scratch,
                        *table,
                        t,
                        a.key.iter().zip(&t.primary_key),
                    );
                    let slot = small_key::get(&self.index, &self.scratch).copied();
                    let current = match slot.map(|s| &self.slots[s].1) {
                        Some(Pending::Row(row)) => Some(row.clone()),
                        Some(Pending::Deleted(_)) => None,
                        None if self.never_written() => None,
                        None => match stored(*table, &a.key) {
                            Ok(row) => row,
                            Err(e) => {
                                self.rollback();
                                return Err(e);
                            }
                        },
                    };
                    let mut row = current.unwrap_or_else(|| default_row(t, &a.key));
                    for (d, &c) in a.deltas.iter().zip(delta_cols) {
                        if let Err(reason) = add(&mut row[c], &d.by, t.columns[c].kind) {
                            self.rollback();
                            return Err(OpError::Invalid {
                                index,
                                table: t.name.clone(),
                                reason: format!("column `{}`: {reason}", t.columns[c].name),
                            });
                        }
                    }
                    // `scratch` still holds the key (`stored` has a buffer of its own).
                    self.put_at(slot, *table, Pending::Row(row));
                    continue;
                }
            };
            self.put(*table, t, next);
        }
        self.undo.clear();
        Ok(())
    }

    /// Set a row's state, remembering how to undo it.
    fn put(&mut self, table: usize, t: &TableSchema, next: Pending) {
        match &next {
            Pending::Row(row) => {
                let key = t.primary_key.iter().map(|&c| &row[c]);
                encode_key(&mut self.scratch, table, t, key.zip(&t.primary_key))
            }
            Pending::Deleted(key) => {
                encode_key(&mut self.scratch, table, t, key.iter().zip(&t.primary_key))
            }
        }
        let slot = small_key::get(&self.index, &self.scratch).copied();
        self.put_at(slot, table, next);
    }

    /// Set the state of the row keyed by `scratch`, held in `slot` (None: not held),
    /// remembering how to undo it.
    fn put_at(&mut self, slot: Option<usize>, table: usize, next: Pending) {
        match slot {
            Some(slot) => {
                let old = std::mem::replace(&mut self.slots[slot].1, next);
                self.undo.push(Undo::Replaced(slot, old));
            }
            None => {
                // A key held is already in the filter: it went in when first put.
                if let Some(w) = &mut self.written {
                    w.insert(&self.scratch);
                }
                let key = SmallKey::new(&self.scratch);
                self.index.insert(key.clone(), self.slots.len());
                self.slots.push((table, next));
                self.undo.push(Undo::Added(key));
            }
        }
    }

    /// Undo what the batch being applied changed so far.
    fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Added(key) => {
                    self.index.remove(key.as_bytes());
                    self.slots.pop();
                }
                Undo::Replaced(slot, old) => self.slots[slot].1 = old,
            }
        }
    }
}

/// A row holding `key` and every other column's default, as SQLite fills a new row.
fn default_row(t: &TableSchema, key: &[Value]) -> Vec<Value> {
    let mut row: Vec<Value> = t
        .columns
        .iter()
        .map(|c| match (c.nullable, c.kind) {
            (true, _) => Value::Null,
            (false, ColumnKind::Integer) => Value::Integer(0),
            (false, ColumnKind::Real) => Value::Real(0.0),
            (false, ColumnKind::Text) => Value::Text(String::new()),
            (false, ColumnKind::Blob) => Value::Blob(Vec::new()),
            (false, ColumnKind::Json) => Value::Text("null".into()),
        })
        .collect();
    for (v, &c) in key.iter().zip(&t.primary_key) {
        row[c] = match (v, t.columns[c].kind) {
            (Value::Integer(i), ColumnKind::Real) => Value::Real(*i as f64),
            _ => v.clone(),
        };
    }
    row
}

/// `cell = COALESCE(cell, 0) + by`: what the WIT contract says an increment does.
fn add(cell: &mut Value, by: &Value, kind: ColumnKind) -> Result<(), &'static str> {
    let sum = match (kind, &*cell, by) {
        (ColumnKind::Integer, Value::Integer(a), Value::Integer(b)) => {
            Value::Integer(a.checked_add(*b).ok_or("integer overflow")?)
        }
        (ColumnKind::Integer, Value::Null, Value::Integer(b)) => Value::Integer(*b),
        (ColumnKind::Real, current, by) => Value::Real(as_real(current) + as_real(by)),
        // Validation lets no other delta through; a stored value of another kind cannot be.
        _ => return Err("cannot be incremented by this value"),
    };
    *cell = sum;
    Ok(())
}

fn as_real(v: &Value) -> f64 {
    match v {
        Value::Integer(i) => *i as f64,
        Value::Real(r) => *r,
        _ => 0.0,
    }
}

/// The bytes identifying a row: its table and key values, compared as SQLite compares
/// them in that column (an integer key in a REAL column is the real it converts to).
fn encode_key<'a>(
    out: &mut Vec<u8>,
    table: usize,
    t: &TableSchema,
    key: impl Iterator<Item = (&'a Value, &'a usize)>,
) {
    out.clear();
    out.extend_from_slice(&(table as u32).to_le_bytes());
    for (v, &c) in key {
        match (v, t.columns[c].kind) {
            (Value::Null, _) => out.push(0),
            (Value::Integer(i), ColumnKind::Real) => real(out, *i as f64),
            (Value::Integer(i), _) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            (Value::Real(r), _) => real(out, *r),
            (Value::Text(s), _) => bytes(out, 3, s.as_bytes()),
            (Value::Blob(b), _) => bytes(out, 4, b),
        }
    }
}

fn real(out: &mut Vec<u8>, r: f64) {
    // -0.0 and 0.0 are one key to SQLite.
    let r = if r == 0.0 { 0.0 } else { r };
    out.push(2);
    out.extend_from_slice(&r.to_bits().to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}
