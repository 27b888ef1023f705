//! The per-batch context: reads through an overlay of this batch's writes and
//! coalesces them into one op per touched row.

use rustc_hash::FxHashMap;

use crate::batch::OpWriter;
use crate::bindings::projector::projection0_1_0::read_model;
#[cfg(test)]
use crate::bindings::projector::projection0_1_0::types as wit;
use crate::value::IntoKey;
use crate::{Error, Kind, Manifest, Result, Value};

/// One declared table, as the SDK needs it at run time.
pub(crate) struct TableInfo {
    name: String,
    columns: Vec<(String, Kind, bool)>,
    primary_key: Vec<usize>,
    /// Whether a key column is REAL (its values need `key_bytes`).
    real_key: bool,
}

/// Where `name` is among `columns`. A scan: a table has a handful of columns, and
/// names of another length are passed over without comparing their bytes (in a module,
/// hashing the name cost more than this).
fn position(columns: &[(String, Kind, bool)], name: &str) -> Option<usize> {
    columns
        .iter()
        .position(|c| same(c.0.as_bytes(), name.as_bytes()))
}

/// `a == b` a word at a time: `==` on slices calls `memcmp`, which in a module
/// compares byte by byte, and names and keys are compared on every op. The last word
/// overlaps the one before it rather than ending in a loop over the bytes left.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8]| s.first_chunk().map(|w: &[u8; 8]| u64::from_le_bytes(*w));
    let last = |s: &[u8]| s.last_chunk().map(|w: &[u8; 8]| u64::from_le_bytes(*w));
    if a.len() >= 8 {
        let mut at = 0;
        while at + 8 < a.len() {
            if word(&a[at..]) != word(&b[at..]) {
                return false;
            }
            at += 8;
        }
        return last(a) == last(b);
    }
    let half = |s: &[u8]| s.first_chunk().map(|w: &[u8; 4]| u32::from_le_bytes(*w));
    let last_half = |s: &[u8]| s.last_chunk().map(|w: &[u8; 4]| u32::from_le_bytes(*w));
    if a.len() >= 4 {
        return half(a) == half(b) && last_half(a) == last_half(b);
    }
    a == b
}

/// The projection's tables, built once from its manifest.
pub(crate) struct Schema {
    tables: Vec<TableInfo>,
}

impl Schema {
    pub(crate) fn new(manifest: &Manifest) -> Self {
        let tables = manifest
            .tables
            .iter()
            .map(|t| {
                // Unknown key columns are the host's to reject when it validates the manifest.
                let primary_key: Vec<usize> = t
                    .primary_key
                    .iter()
                    .filter_map(|c| position(&t.columns, c))
                    .collect();
                let real_key = primary_key
                    .iter()
                    .any(|&c| matches!(t.columns[c].1, Kind::Real));
                TableInfo {
                    name: t.name.clone(),
                    columns: t.columns.clone(),
                    primary_key,
                    real_key,
                }
            })
            .collect();
        Schema { tables }
    }

    fn table(&self, name: &str) -> Result<usize> {
        self.tables
            .iter()
            .position(|t| same(t.name.as_bytes(), name.as_bytes()))
            .ok_or_else(|| Error(format!("table `{name}` is not declared in the manifest")))
    }
}

impl TableInfo {
    fn column(&self, name: &str) -> Result<usize> {
        position(&self.columns, name)
            .ok_or_else(|| Error(format!("table `{}` has no column `{name}`", self.name)))
    }

    /// A row holding the key and every other column's default.
    fn default_row(&self, key: &[Value]) -> Vec<Value> {
        let mut row: Vec<Value> = self
            .columns
            .iter()
            .map(|(_, kind, nullable)| match (kind, nullable) {
                (_, true) => Value::Null,
                (Kind::Integer, _) => Value::Integer(0),
                (Kind::Real, _) => Value::Real(0.0),
                (Kind::Text, _) => Value::Text(String::new()),
                (Kind::Blob, _) => Value::Blob(Vec::new()),
                (Kind::Json, _) => Value::Text("null".to_string()),
            })
            .collect();
        for (k, &col) in key.iter().zip(&self.primary_key) {
            row[col] = k.clone();
        }
        row
    }
}

/// A row read from (or about to be written to) one of the projection's tables.
#[derive(Debug, Clone)]
pub struct Row {
    table: usize,
    /// The overlay entry the row was read from, so saving it back needs no lookup.
    slot: Option<usize>,
    columns: &'static [(String, Kind, bool)],
    values: Vec<Value>,
}

impl Row {
    fn index(&self, column: &str) -> usize {
        match position(self.columns, column) {
            Some(i) => i,
            // A misspelt column is a bug in the projection, not bad input: fail loudly.
            None => panic!("no column `{column}` in this row's table"),
        }
    }

    /// The value of `column`.
    pub fn get(&self, column: &str) -> &Value {
        &self.values[self.index(column)]
    }

    /// The integer in `column` (0 when NULL).
    pub fn int(&self, column: &str) -> i64 {
        self.get(column).as_i64()
    }

    /// The real in `column` (0.0 when NULL).
    pub fn real(&self, column: &str) -> f64 {
        self.get(column).as_f64()
    }

    /// The text in `column` ("" when NULL).
    pub fn text(&self, column: &str) -> &str {
        self.get(column).as_str()
    }

    /// Set `column` to `value`.
    pub fn set(&mut self, column: &str, value: impl Into<Value>) -> &mut Self {
        let i = self.index(column);
        self.values[i] = value.into();
        self
    }

    /// Add `delta` to the integer in `column`.
    pub fn add(&mut self, column: &str, delta: i64) -> &mut Self {
        let i = self.index(column);
        self.values[i] = Value::Integer(self.values[i].as_i64().wrapping_add(delta));
        self
    }

    /// The column values, in declared order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The declared column names, in order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.0.as_str())
    }
}

/// What this batch did to one row.
#[derive(Clone)]
enum State {
    /// Read, not written: emits nothing.
    Clean(Option<Vec<Value>>),
    /// Whole row known: emits an upsert.
    Row(Vec<Value>),
    /// Deleted: emits a delete.
    Deleted,
    /// Only deltas known (never read): emits an increment.
    Deltas(Vec<(usize, Value)>),
}

#[derive(Clone)]
struct Entry {
    table: usize,
    key: Vec<Value>,
    state: State,
}

/// Reads a stored row: the host's `read-model.get`, or a stand-in in tests.
pub(crate) type BaseReader = fn(&str, &[Value]) -> Option<Vec<Value>>;

/// An overlay entry's encoded (table, key): three words when it is short (most keys),
/// so that a lookup hashes and compares words in place, and a new entry allocates
/// nothing; on the heap when longer.
#[derive(Clone, Debug)]
enum SlotKey {
    /// Up to 23 bytes, zero-padded, the length in the last byte.
    Short([u64; 3]),
    Long(Box<[u8]>),
}

impl SlotKey {
    /// The key of the bytes in `b` (which it pads, and gives back as they were).
    fn new(b: &mut Vec<u8>) -> SlotKey {
        let len = b.len();
        if len >= 24 {
            return SlotKey::Long(b.as_slice().into());
        }
        // Fixed-size copies only (a copy of varying length is a call in Wasm).
        b.extend_from_slice(&[0u8; 24]);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let key = SlotKey::Short([word(0), word(1), word(2) | (len as u64) << 56]);
        b.truncate(len);
        key
    }
}

impl PartialEq for SlotKey {
    fn eq(&self, other: &SlotKey) -> bool {
        match (self, other) {
            (SlotKey::Short(a), SlotKey::Short(b)) => a[0] == b[0] && a[1] == b[1] && a[2] == b[2],
            (SlotKey::Long(a), SlotKey::Long(b)) => same(a, b),
            _ => false,
        }
    }
}

impl Eq for SlotKey {}

impl std::hash::Hash for SlotKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            SlotKey::Short(w) => {
                h.write_u64(w[0]);
                h.write_u64(w[1]);
                h.write_u64(w[2]);
            }
            SlotKey::Long(b) => h.write(b),
        }
    }
}

/// Most overlay rows made room for up front, whatever the batch: bounds what a module
/// that touches few rows reserves and never uses.
const EXPECT_ROWS_MAX: usize = 32_768;

/// The projection's view of its tables while it handles a batch.
pub struct Ctx {
    schema: &'static Schema,
    /// Where rows this batch has not touched come from.
    base: BaseReader,
    /// Touched rows, in first-touch order so the emitted ops are deterministic.
    entries: Vec<Entry>,
    index: FxHashMap<SlotKey, usize>,
    /// Rows to make room for when the first is touched.
    expect_rows: usize,
    scratch: Vec<u8>,
}

impl Ctx {
    pub(crate) fn new(schema: &'static Schema) -> Self {
        Self::with_base(schema, read_model::get)
    }

    /// A context reading untouched rows through `base`.
    pub(crate) fn with_base(schema: &'static Schema, base: BaseReader) -> Self {
        Ctx {
            schema,
            base,
            entries: Vec::new(),
            index: FxHashMap::default(),
            expect_rows: 0,
            scratch: Vec::new(),
        }
    }

    /// The batch has `events` events: when the first row is touched, the overlay makes
    /// room for one row per two of them (the shop modules write 0.25–0.4 rows per
    /// event), at most [`EXPECT_ROWS_MAX`]. Grown step by step, a large batch's overlay
    /// was rehashed and copied a dozen times: 2% of a shop module's instructions.
    pub(crate) fn expect_events(&mut self, events: usize) {
        self.expect_rows = (events / 2).min(EXPECT_ROWS_MAX);
    }

    fn info(&self, table: usize) -> &'static TableInfo {
        &self.schema.tables[table]
    }

    fn check_key(&self, table: usize, key: &[Value]) -> Result<()> {
        let info = self.info(table);
        if key.len() != info.primary_key.len() {
            return Err(Error(format!(
                "table `{}` has a {}-column primary key, got {} values",
                info.name,
                info.primary_key.len(),
                key.len()
            )));
        }
        Ok(())
    }

    /// The overlay slot for a row, created empty (absent) when first touched. The key
    /// is only copied for a new slot.
    fn slot<'v>(
        &mut self,
        table: usize,
        key: impl Iterator<Item = &'v Value> + Clone,
    ) -> (usize, bool) {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&(table as u32).to_le_bytes());
        let info = &self.schema.tables[table];
        if info.real_key {
            for (v, &c) in key.clone().zip(&info.primary_key) {
                key_bytes(v, info.columns[c].1, &mut self.scratch);
            }
        } else {
            for v in key.clone() {
                v.encode_into(&mut self.scratch);
            }
        }
        let slot_key = SlotKey::new(&mut self.scratch);
        if let Some(&i) = self.index.get(&slot_key) {
            return (i, false);
        }
        let i = self.entries.len();
        if i == 0 {
            // The first touched row: make room for the rest (a module that touches no
            // row reserves nothing).
            self.entries.reserve(self.expect_rows);
            self.index.reserve(self.expect_rows);
        }
        self.index.insert(slot_key, i);
        self.entries.push(Entry {
            table,
            key: key.cloned().collect(),
            state: State::Deltas(Vec::new()),
        });
        (i, true)
    }

    fn row(&self, table: usize, slot: Option<usize>, values: Vec<Value>) -> Row {
        let info = self.info(table);
        Row {
            table,
            slot,
            columns: &info.columns,
            values,
        }
    }

    /// Read a row by primary key: this batch's writes first, then the host's tables.
    pub fn get(&mut self, table: &str, key: impl IntoKey) -> Result<Option<Row>> {
        let t = self.schema.table(table)?;
        let key = key.into_key().0;
        self.check_key(t, &key)?;
        let (i, fresh) = self.slot(t, key.iter());
        self.settle(i, fresh, &key)?;
        let current = match &self.entries[i].state {
            State::Clean(row) => row.clone(),
            State::Row(row) => Some(row.clone()),
            // Deltas are settled above.
            State::Deleted | State::Deltas(_) => None,
        };
        Ok(current.map(|values| self.row(t, Some(i), values)))
    }

    /// Change a row where it is: `f` gets the row (this batch's writes first, then the
    /// host's tables) and what it changes is written back, without the copy that
    /// [`Ctx::get`] and [`Ctx::save`] make. False, and `f` is not called, when there is no
    /// such row. The primary key cannot change here: if `f` changes a key column, its
    /// old value is put back (the other changes stay) and `update` returns an error; to
    /// move a row, get it and upsert it under its new key. An error from `f` is returned
    /// as it is, with the changes `f` made before it.
    pub fn update(
        &mut self,
        table: &str,
        key: impl IntoKey,
        f: impl FnOnce(&mut Row) -> Result<()>,
    ) -> Result<bool> {
        let t = self.schema.table(table)?;
        let key = key.into_key().0;
        self.check_key(t, &key)?;
        let (i, fresh) = self.slot(t, key.iter());
        self.settle(i, fresh, &key)?;
        let info = self.info(t);
        // Taken out for `f` and put back below. The placeholder (no deltas) emits no op,
        // should `f` panic where a panic is caught.
        let taken = std::mem::replace(&mut self.entries[i].state, State::Deltas(Vec::new()));
        let values = match taken {
            State::Clean(Some(row)) | State::Row(row) => row,
            other => {
                self.entries[i].state = other;
                return Ok(false);
            }
        };
        // The key as the row holds it: a REAL key may hold another form of the key the
        // caller gave (1.0 for 1, 0.0 for -0.0); any other key is held as given.
        let held: Option<Vec<Value>> = info.real_key.then(|| {
            info.primary_key
                .iter()
                .map(|&c| values[c].clone())
                .collect()
        });
        let held = held.unwrap_or(key);
        let mut row = self.row(t, Some(i), values);
        let done = f(&mut row);
        let mut values = row.values;
        let moved = info
            .primary_key
            .iter()
            .zip(&held)
            .find(|&(&c, k)| !same_key(&values[c], k))
            .map(|(&c, _)| c);
        if moved.is_some() {
            for (&c, k) in info.primary_key.iter().zip(held) {
                values[c] = k;
            }
        }
        self.entries[i].state = State::Row(values);
        if let Some(c) = moved {
            return Err(Error(format!(
                "update on `{}` cannot change the primary key column `{}`: get the row and upsert it under its new key",
                info.name, info.columns[c].0
            )));
        }
        done.map(|()| true)
    }

    /// Make entry `i` hold what a read of its row sees: deltas recorded blind become the
    /// row they make from the stored one (or from defaults); a row first touched here
    /// (`fresh`) becomes the stored row as it is. On an error the deltas stay.
    fn settle(&mut self, i: usize, fresh: bool, key: &[Value]) -> Result<()> {
        let entry = &self.entries[i];
        let State::Deltas(deltas) = &entry.state else {
            return Ok(());
        };
        let info = self.info(entry.table);
        let base = (self.base)(&info.name, key);
        let settled = if fresh {
            State::Clean(base)
        } else {
            let mut row = base.unwrap_or_else(|| info.default_row(key));
            for (col, by) in deltas {
                row[*col] = add(&row[*col], by)?;
            }
            State::Row(row)
        };
        self.entries[i].state = settled;
        Ok(())
    }

    /// Insert or replace a whole row: one value per declared column, in order.
    pub fn upsert(&mut self, table: &str, values: Vec<Value>) -> Result<()> {
        let t = self.schema.table(table)?;
        let info = self.info(t);
        if values.len() != info.columns.len() {
            return Err(Error(format!(
                "table `{}` has {} columns, upsert gave {} values",
                info.name,
                info.columns.len(),
                values.len()
            )));
        }
        let (i, _) = self.slot(t, info.primary_key.iter().map(|&c| &values[c]));
        self.entries[i].state = State::Row(values);
        Ok(())
    }

    /// Write back a row obtained from [`Ctx::get`] (or built with [`Ctx::new_row`]).
    pub fn save(&mut self, row: Row) -> Result<()> {
        let info = self.info(row.table);
        if let Some(entry) = row.slot.map(|i| &mut self.entries[i]) {
            // Straight back into the entry it came from, unless its key was changed.
            let kept = |(&c, k): (&usize, &Value)| same_key(&row.values[c], k);
            if entry.table == row.table && info.primary_key.iter().zip(&entry.key).all(kept) {
                entry.state = State::Row(row.values);
                return Ok(());
            }
        }
        self.upsert(&info.name, row.values)
    }

    /// A row of `table` with this key and every other column at its default.
    pub fn new_row(&self, table: &str, key: impl IntoKey) -> Result<Row> {
        let t = self.schema.table(table)?;
        let key = key.into_key().0;
        self.check_key(t, &key)?;
        Ok(self.row(t, None, self.info(t).default_row(&key)))
    }

    /// Delete a row by primary key.
    pub fn delete(&mut self, table: &str, key: impl IntoKey) -> Result<()> {
        let t = self.schema.table(table)?;
        let key = key.into_key().0;
        self.check_key(t, &key)?;
        let (i, _) = self.slot(t, key.iter());
        self.entries[i].state = State::Deleted;
        Ok(())
    }

    /// Add to numeric columns of a row without reading it (created with defaults if missing).
    pub fn increment(
        &mut self,
        table: &str,
        key: impl IntoKey,
        deltas: &[(&str, Value)],
    ) -> Result<()> {
        let t = self.schema.table(table)?;
        let key = key.into_key().0;
        self.check_key(t, &key)?;
        let info = self.info(t);
        let mut cols = Vec::with_capacity(deltas.len());
        for (name, by) in deltas {
            let col = info.column(name)?;
            if info.primary_key.contains(&col) {
                return Err(Error(format!(
                    "cannot increment key column `{name}` of `{}`",
                    info.name
                )));
            }
            cols.push((col, by.clone()));
        }
        let (i, _) = self.slot(t, key.iter());
        let entry = &mut self.entries[i];
        match &mut entry.state {
            State::Row(row) => apply(row, cols)?,
            State::Clean(Some(row)) => {
                let mut row = std::mem::take(row);
                apply(&mut row, cols)?;
                entry.state = State::Row(row);
            }
            State::Clean(None) | State::Deleted => {
                let mut row = info.default_row(&key);
                apply(&mut row, cols)?;
                entry.state = State::Row(row);
            }
            State::Deltas(pending) => {
                for (col, by) in cols {
                    match pending.iter_mut().find(|(c, _)| *c == col) {
                        Some((_, sum)) => *sum = add(sum, &by)?,
                        None => pending.push((col, by)),
                    }
                }
            }
        }
        Ok(())
    }

    /// The coalesced ops of the batch, packed: at most one per touched row, in
    /// first-touch order.
    pub(crate) fn pack_ops(&self) -> Vec<u8> {
        let mut w = OpWriter::with_capacity(self.entries.len());
        for e in &self.entries {
            let info = self.info(e.table);
            match &e.state {
                State::Clean(_) => {}
                State::Row(row) => w.op(0, &info.name, row),
                State::Deleted => w.op(1, &info.name, &e.key),
                State::Deltas(d) if d.is_empty() => {}
                State::Deltas(d) => {
                    w.op(2, &info.name, &e.key);
                    w.deltas(
                        d.iter()
                            .map(|(col, by)| (info.columns[*col].0.as_str(), by)),
                    );
                }
            }
        }
        w.finish()
    }

    /// The coalesced ops of the batch as values (what [`Ctx::pack_ops`] packs).
    #[cfg(test)]
    pub(crate) fn into_ops(self) -> Vec<wit::Op> {
        let schema = self.schema;
        self.entries
            .into_iter()
            .filter_map(|e| {
                let table = schema.tables[e.table].name.clone();
                match e.state {
                    State::Clean(_) => None,
                    State::Row(row) => Some(wit::Op::Upsert(wit::RowOp { table, row })),
                    State::Deleted => Some(wit::Op::Delete(wit::KeyOp { table, key: e.key })),
                    State::Deltas(d) if d.is_empty() => None,
                    State::Deltas(d) => Some(wit::Op::Increment(wit::AddOp {
                        table,
                        key: e.key,
                        deltas: d
                            .into_iter()
                            .map(|(col, by)| wit::Delta {
                                column: schema.tables[e.table].columns[col].0.clone(),
                                by,
                            })
                            .collect(),
                    })),
                }
            })
            .collect()
    }
}

/// A key value's bytes, one for every value the host takes for the same key: an
/// integer in a REAL column is the real it converts to, and -0.0 is 0.0 (otherwise two
/// entries of one batch would be one row in the host, and a read would depend on where
/// batches fall).
fn key_bytes(v: &Value, kind: Kind, out: &mut Vec<u8>) {
    match (v, kind) {
        (Value::Integer(i), Kind::Real) => Value::Real(*i as f64).encode_into(out),
        (Value::Real(r), _) if *r == 0.0 => Value::Real(0.0).encode_into(out),
        _ => v.encode_into(out),
    }
}

/// Whether two key values are one key: what `Value::encode_into` tells apart.
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Integer(x), Value::Integer(y)) => x == y,
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
        (Value::Text(x), Value::Text(y)) => same(x.as_bytes(), y.as_bytes()),
        (Value::Blob(x), Value::Blob(y)) => same(x, y),
        _ => false,
    }
}

fn apply(row: &mut [Value], deltas: Vec<(usize, Value)>) -> Result<()> {
    for (col, by) in deltas {
        row[col] = add(&row[col], &by)?;
    }
    Ok(())
}

/// Numeric addition with the host's semantics: NULL counts as zero, integers stay exact.
fn add(a: &Value, b: &Value) -> Result<Value> {
    Ok(match (a, b) {
        (Value::Null, Value::Integer(y)) => Value::Integer(*y),
        (Value::Null, Value::Real(y)) => Value::Real(*y),
        (Value::Integer(x), Value::Integer(y)) => Value::Integer(
            x.checked_add(*y)
                .ok_or_else(|| Error(format!("integer overflow adding {y} to {x}")))?,
        ),
        (Value::Integer(_) | Value::Real(_), Value::Integer(_) | Value::Real(_)) => {
            Value::Real(a.as_f64() + b.as_f64())
        }
        _ => return Err(Error("increment needs numeric values".to_string())),
    })
}

#[cfg(test)]
mod tests {
    //! The overlay on the host target, with the stored rows injected.
    use super::*;
    use crate::{Kind, Table};

    fn schema() -> &'static Schema {
        let m = Manifest::new("t", 1).table(
            Table::new("orders")
                .column("id", Kind::Text)
                .column("status", Kind::Text)
                .column("n", Kind::Integer)
                .primary_key(["id"]),
        );
        Box::leak(Box::new(Schema::new(&m)))
    }

    #[test]
    fn same_agrees_with_equality_at_every_length() {
        let words: Vec<String> = (0..20)
            .flat_map(|n| {
                let plain = "a".repeat(n);
                // One byte differs, at each end and in the middle.
                let ends = [0, n / 2, n.saturating_sub(1)].map(|at| {
                    let mut b = plain.clone().into_bytes();
                    if let Some(c) = b.get_mut(at) {
                        *c = b'b';
                    }
                    String::from_utf8(b).unwrap_or_default()
                });
                [vec![plain], ends.to_vec()].concat()
            })
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// A REAL key takes an integer or -0.0 for the same key the host would.
    #[test]
    fn an_integer_or_negative_zero_in_a_real_key_is_the_same_row() {
        let m = Manifest::new("t", 1).table(
            Table::new("points")
                .column("x", Kind::Real)
                .column("n", Kind::Integer)
                .primary_key(["x"]),
        );
        let schema: &'static Schema = Box::leak(Box::new(Schema::new(&m)));
        let mut ctx = Ctx::with_base(schema, |_, _| None);
        ctx.upsert("points", vec![Value::Integer(1), 5i64.into()])
            .unwrap();
        ctx.upsert("points", vec![Value::Real(0.0), 6i64.into()])
            .unwrap();
        let one = ctx.get("points", Value::Real(1.0)).unwrap();
        assert_eq!(one.expect("written as integer 1").int("n"), 5);
        let zero = ctx.get("points", Value::Real(-0.0)).unwrap();
        assert_eq!(zero.expect("written as 0.0").int("n"), 6);
        ctx.increment("points", Value::Integer(0), &[("n", 1i64.into())])
            .unwrap();
        // `update` by the other form of the same key: the row held, its key unchanged.
        assert!(
            ctx.update("points", Value::Real(0.0), |r| {
                r.add("n", 10);
                Ok(())
            })
            .unwrap()
        );
        let ops = ops(ctx);
        assert_eq!(ops.len(), 2, "two rows, not four: {ops:?}");
        assert!(ops[1].contains("Integer(17)"), "{ops:?}");
        assert!(ops[1].contains("Real(0.0)"), "the key as written: {ops:?}");
    }

    /// The store holds one order, `stored`, with n = 10.
    fn stored(table: &str, key: &[Value]) -> Option<Vec<Value>> {
        (table == "orders" && matches!(key, [Value::Text(k)] if k == "stored")).then(|| {
            vec![
                Value::Text("stored".into()),
                Value::Text("old".into()),
                Value::Integer(10),
            ]
        })
    }

    /// The ops as text; and packed directly, they are what packing them as values gives.
    fn ops(ctx: Ctx) -> Vec<String> {
        let values = Ctx {
            entries: ctx.entries.clone(),
            index: ctx.index.clone(),
            scratch: Vec::new(),
            ..ctx
        };
        let packed = ctx.pack_ops();
        let ops = values.into_ops();
        assert_eq!(packed, crate::batch::pack_ops(&ops));
        ops.iter().map(|o| format!("{o:?}")).collect()
    }

    #[test]
    fn short_and_long_keys_each_find_their_own_row() {
        let mut ctx = Ctx::with_base(schema(), |_, _| None);
        // Encoded with the table and lengths, these run from 10 bytes to 45, either
        // side of the 23 held in place; the long ones differ only past byte 23.
        let ids = [
            "a",
            "ab",
            "abcdefghijklmn",
            "abcdefghijklmno",
            "abcdefghijklmnop",
        ]
        .into_iter()
        .map(String::from)
        .chain(["x".repeat(30) + "1", "x".repeat(30) + "2"])
        .collect::<Vec<_>>();
        for (n, id) in ids.iter().enumerate() {
            ctx.upsert(
                "orders",
                vec![id.as_str().into(), "s".into(), (n as i64).into()],
            )
            .unwrap();
        }
        for (n, id) in ids.iter().enumerate() {
            let row = ctx.get("orders", id.as_str()).unwrap().expect("written");
            assert_eq!(row.int("n"), n as i64, "{id}");
        }
        assert_eq!(ops(ctx).len(), ids.len());
    }

    #[test]
    fn update_changes_a_row_where_it_is_and_only_a_row_that_is_there() {
        let mut ctx = Ctx::with_base(schema(), stored);
        // No such row: `f` is not called, nothing is written.
        let called = std::cell::Cell::new(false);
        let found = ctx.update("orders", "o9", |_| {
            called.set(true);
            Ok(())
        });
        assert_eq!((found.unwrap(), called.get()), (false, false));
        // A stored row, then a row written earlier in the batch.
        assert!(
            ctx.update("orders", "stored", |r| {
                r.add("n", 1).set("status", "confirmed");
                Ok(())
            })
            .unwrap()
        );
        ctx.upsert("orders", vec!["o1".into(), "created".into(), 1i64.into()])
            .unwrap();
        assert!(
            ctx.update("orders", "o1", |r| {
                r.add("n", 2);
                Ok(())
            })
            .unwrap()
        );
        assert_eq!(ctx.get("orders", "o1").unwrap().unwrap().int("n"), 3);
        // Deleted in this batch: not there.
        ctx.delete("orders", "o1").unwrap();
        assert!(!ctx.update("orders", "o1", |_| Ok(())).unwrap());
        // Blind increments first: resolved against the stored row, as `get` does.
        ctx.increment("orders", "stored", &[("n", 5i64.into())])
            .unwrap();
        assert!(
            ctx.update("orders", "stored", |r| {
                assert_eq!(r.int("n"), 16, "stored 10, +1 above, +5 blind");
                Ok(())
            })
            .unwrap()
        );
        let ops = ops(ctx);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(
            ops[0].contains("confirmed") && ops[0].contains("Integer(16)"),
            "{ops:?}"
        );
        assert!(ops[1].contains("Delete"), "{ops:?}");
    }

    #[test]
    fn update_keeps_the_key_and_says_when_f_changed_it() {
        let mut ctx = Ctx::with_base(schema(), stored);
        let moved = ctx
            .update("orders", "stored", |r| {
                r.set("id", "elsewhere").add("n", 1);
                Ok(())
            })
            .unwrap_err()
            .0;
        assert!(
            moved.contains("cannot change the primary key column `id`"),
            "{moved}"
        );
        let row = ctx
            .get("orders", "stored")
            .unwrap()
            .expect("still under its key");
        assert_eq!((row.text("id"), row.int("n")), ("stored", 11));
        assert!(ctx.get("orders", "elsewhere").unwrap().is_none());
        // An error from `f` comes back as it is.
        let failed = ctx.update("orders", "stored", |_| Err(Error("no".into())));
        assert_eq!(failed.unwrap_err().0, "no");
    }

    #[test]
    fn a_later_event_reads_what_an_earlier_one_wrote() {
        let mut ctx = Ctx::with_base(schema(), stored);
        assert!(ctx.get("orders", "o1").unwrap().is_none());
        ctx.upsert("orders", vec!["o1".into(), "created".into(), 1i64.into()])
            .unwrap();
        let mut row = ctx
            .get("orders", "o1")
            .unwrap()
            .expect("written in this batch");
        assert_eq!(row.get("status").as_str(), "created");
        row.set("status", "confirmed");
        ctx.save(row).unwrap();
        let ops = ops(ctx);
        assert_eq!(ops.len(), 1, "one op per touched row: {ops:?}");
        assert!(ops[0].contains("confirmed"), "{ops:?}");
    }

    #[test]
    fn increments_resolve_against_the_stored_row_and_deletes_hide_it() {
        let mut ctx = Ctx::with_base(schema(), stored);
        ctx.increment("orders", "stored", &[("n", 5i64.into())])
            .unwrap();
        let row = ctx.get("orders", "stored").unwrap().expect("stored row");
        assert_eq!(
            row.int("n"),
            15,
            "blind increment applied to the stored row"
        );
        ctx.delete("orders", "stored").unwrap();
        assert!(ctx.get("orders", "stored").unwrap().is_none());
        let ops = ops(ctx);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(
            ops[0].starts_with("Op::Delete") || ops[0].contains("Delete"),
            "{ops:?}"
        );
    }

    #[test]
    fn a_missing_row_incremented_starts_from_defaults() {
        let mut ctx = Ctx::with_base(schema(), stored);
        ctx.increment("orders", "new", &[("n", 2i64.into())])
            .unwrap();
        ctx.increment("orders", "new", &[("n", 3i64.into())])
            .unwrap();
        assert_eq!(
            ctx.get("orders", "new").unwrap().expect("created").int("n"),
            5
        );
        assert!(ctx.get("nope", "x").is_err(), "undeclared table");
    }

    #[test]
    fn blind_increments_leave_as_one_increment_per_row() {
        let mut ctx = Ctx::with_base(schema(), stored);
        ctx.increment("orders", "a", &[("n", 2i64.into())]).unwrap();
        ctx.increment("orders", "a", &[("n", 3i64.into())]).unwrap();
        ctx.delete("orders", "gone").unwrap();
        let _ = ctx.get("orders", "stored").unwrap();
        let ops = ops(ctx);
        assert_eq!(ops.len(), 2, "a read alone writes nothing: {ops:?}");
        assert!(
            ops[0].contains("Increment") && ops[0].contains("Integer(5)"),
            "{ops:?}"
        );
        assert!(
            ops[1].contains("Delete") && ops[1].contains("gone"),
            "{ops:?}"
        );
    }

    /// A row saved back goes to the entry it was read from; one whose key column was
    /// changed is a new row, and the row it was read from stays as stored.
    #[test]
    fn a_saved_row_whose_key_changed_is_a_new_row() {
        let mut ctx = Ctx::with_base(schema(), stored);
        let mut row = ctx.get("orders", "stored").unwrap().expect("stored row");
        row.add("n", 1);
        ctx.save(row.clone()).unwrap();
        assert_eq!(
            ctx.get("orders", "stored").unwrap().expect("row").int("n"),
            11
        );
        row.set("id", "copy").add("n", 1);
        ctx.save(row).unwrap();
        assert_eq!(
            ctx.get("orders", "stored").unwrap().expect("row").int("n"),
            11
        );
        assert_eq!(
            ctx.get("orders", "copy").unwrap().expect("row").int("n"),
            12
        );
        let ops = ops(ctx);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(
            ops[0].contains("\"stored\"") && ops[0].contains("Integer(11)"),
            "{ops:?}"
        );
        assert!(
            ops[1].contains("\"copy\"") && ops[1].contains("Integer(12)"),
            "{ops:?}"
        );
    }
}
