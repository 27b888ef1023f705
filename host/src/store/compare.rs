//! Comparing two builds of a projection table by table, in SQL (the old build attached
//! read-only to the new one): rows added, removed and changed by primary key. Cheap for
//! large tables: each count is one join on the primary-key index.

use std::path::Path;

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

/// How one table differs between the serving build and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableComparison {
    /// The table.
    pub table: String,
    /// Rows in the serving build.
    pub old_rows: u64,
    /// Rows in the new build.
    pub new_rows: u64,
    /// Keys only the new build has.
    pub added: u64,
    /// Keys only the serving build has.
    pub removed: u64,
    /// Keys in both whose rows differ (0 when the columns changed: then only counts).
    pub changed: u64,
}

/// A declared table as stored in a build's `_projector_meta`.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    name: String,
    columns: Vec<String>,
    key: Vec<String>,
}

fn declared(conn: &Connection, schema: &str) -> Result<Vec<Declared>> {
    let json: String = conn.query_row(
        &format!("SELECT value FROM {schema}._projector_meta WHERE key = 'tables'"),
        [],
        |r| r.get(0),
    )?;
    let raw: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    Ok(raw
        .iter()
        .map(|t| Declared {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            columns: t["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c[0].as_str().map(String::from))
                .collect(),
            key: t["primary_key"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(String::from))
                .collect(),
        })
        .collect())
}

fn count(conn: &Connection, sql: &str) -> Result<u64> {
    Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
}

/// Compare every table of the build at `old` with the build at `new` (database files).
/// Names come from the manifests, validated as plain identifiers at load.
pub fn compare_builds(old: &Path, new: &Path) -> Result<Vec<TableComparison>> {
    let conn = Connection::open_with_flags(
        new,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening {}", new.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let uri = format!("file:{}?mode=ro", old.display());
    conn.execute("ATTACH DATABASE ?1 AS old", [uri])
        .with_context(|| format!("attaching {}", old.display()))?;
    let (olds, news) = (declared(&conn, "old")?, declared(&conn, "main")?);
    let mut out = Vec::new();
    for t in &news {
        let new_rows = count(&conn, &format!("SELECT count(*) FROM main.\"{}\"", t.name))?;
        let Some(o) = olds.iter().find(|o| o.name == t.name) else {
            out.push(TableComparison {
                table: t.name.clone(),
                new_rows,
                added: new_rows,
                ..Default::default()
            });
            continue;
        };
        let old_rows = count(&conn, &format!("SELECT count(*) FROM old.\"{}\"", t.name))?;
        let mut c = TableComparison {
            table: t.name.clone(),
            old_rows,
            new_rows,
            ..Default::default()
        };
        if o.key == t.key {
            let on = t
                .key
                .iter()
                .map(|k| format!("n.\"{k}\" = o.\"{k}\""))
                .collect::<Vec<_>>()
                .join(" AND ");
            let both = count(
                &conn,
                &format!(
                    "SELECT count(*) FROM main.\"{0}\" n JOIN old.\"{0}\" o ON {on}",
                    t.name
                ),
            )?;
            c.added = new_rows - both.min(new_rows);
            c.removed = old_rows - both.min(old_rows);
            if o.columns == t.columns {
                let differ = t
                    .columns
                    .iter()
                    .map(|k| format!("n.\"{k}\" IS NOT o.\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                c.changed = count(
                    &conn,
                    &format!(
                        "SELECT count(*) FROM main.\"{0}\" n JOIN old.\"{0}\" o ON {on} WHERE {differ}",
                        t.name
                    ),
                )?;
            }
        } else {
            // Another key: rows cannot be matched, only counted.
            c.added = new_rows;
            c.removed = old_rows;
        }
        out.push(c);
    }
    for o in olds
        .iter()
        .filter(|o| !news.iter().any(|t| t.name == o.name))
    {
        let old_rows = count(&conn, &format!("SELECT count(*) FROM old.\"{}\"", o.name))?;
        out.push(TableComparison {
            table: o.name.clone(),
            old_rows,
            removed: old_rows,
            ..Default::default()
        });
    }
    Ok(out)
}
