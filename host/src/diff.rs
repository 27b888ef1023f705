//! `projector diff`: run two modules over the same events in temporary databases and
//! compare their tables row by row: the preview before shipping a new version.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::runtime::{Limits, Runtime};
use crate::schema::Schema;
use crate::store::version_path;

/// How one table differs between the old and the new module.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// Rows only the new module wrote.
    pub added: u64,
    /// Rows only the old module wrote.
    pub removed: u64,
    /// Rows with the same key and other values.
    pub changed: u64,
    /// Rows equal in both.
    pub same: u64,
    /// A few examples, `+ row`, `- row` or `~ old -> new`.
    pub examples: Vec<String>,
}

/// Examples kept per table.
const EXAMPLES: usize = 3;

/// Run `old` and `new` over `source` and compare every table either declares.
pub fn diff(old: &Path, new: &Path, source: &str, limits: &Limits) -> Result<Vec<TableDiff>> {
    let work = tempfile::tempdir().context("creating a temporary folder")?;
    let runtime = Runtime::new(limits.clone(), None)?;
    let mut sides = Vec::new();
    for (label, module) in [("old", old), ("new", new)] {
        let wasm =
            std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
        let schema = runtime
            .load(&wasm)
            .with_context(|| format!("loading {}", module.display()))?
            .schema()
            .clone();
        let data = work.path().join(label);
        crate::verify::run_into(&wasm, source, limits, 10_000, &data)
            .with_context(|| format!("running the {label} module {}", module.display()))?;
        sides.push(tables(&data, &schema)?);
    }
    let new_side = sides.pop().unwrap_or_default();
    let old_side = sides.pop().unwrap_or_default();
    let mut names: Vec<&String> = old_side.keys().chain(new_side.keys()).collect();
    names.sort();
    names.dedup();
    let empty = BTreeMap::new();
    Ok(names
        .into_iter()
        .map(|name| {
            compare(
                name,
                old_side.get(name).unwrap_or(&empty),
                new_side.get(name).unwrap_or(&empty),
            )
        })
        .collect())
}

/// Rows of one table: primary key (as JSON) → the whole row (as JSON).
type Rows = BTreeMap<String, String>;

fn compare(table: &str, old: &Rows, new: &Rows) -> TableDiff {
    let mut d = TableDiff {
        table: table.to_string(),
        ..TableDiff::default()
    };
    let example = |d: &mut TableDiff, e: String| {
        if d.examples.len() < EXAMPLES {
            d.examples.push(e);
        }
    };
    for (key, row) in old {
        match new.get(key) {
            None => {
                d.removed += 1;
                example(&mut d, format!("- {row}"));
            }
            Some(n) if n != row => {
                d.changed += 1;
                example(&mut d, format!("~ {row} -> {n}"));
            }
            Some(_) => d.same += 1,
        }
    }
    for (key, row) in new {
        if !old.contains_key(key) {
            d.added += 1;
            example(&mut d, format!("+ {row}"));
        }
    }
    d
}

/// Every declared table of `schema`'s version under `data`, keyed by primary key.
fn tables(data: &Path, schema: &Schema) -> Result<BTreeMap<String, Rows>> {
    let path = version_path(data, &schema.name, schema.version);
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = BTreeMap::new();
    for t in &schema.tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{}\"", t.name))?;
        let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows = stmt.query([])?;
        let mut table = Rows::new();
        while let Some(row) = rows.next()? {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                obj.insert(name.clone(), json(row.get_ref(i)?));
            }
            let key: Vec<&serde_json::Value> = t
                .primary_key
                .iter()
                .map(|&i| &obj[&t.columns[i].name])
                .collect();
            table.insert(
                serde_json::to_string(&key)?,
                serde_json::Value::Object(obj.clone()).to_string(),
            );
        }
        out.insert(t.name.clone(), table);
    }
    Ok(out)
}

fn json(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => f.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => hex::encode(b).into(),
    }
}
