//! Read-only SQL against the serving tables of one projection, as NDJSON.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::store::{Catalog, build_path};

/// Open the serving version's file. A cutover may delete the old file between reading
/// the catalog and opening it: then the catalog names the new version, so look again.
fn open_serving(data: &Path, projection: &str) -> Result<Connection> {
    let mut attempt = 0;
    loop {
        let catalog = Catalog::open_read_only(data)?;
        let entry = catalog
            .entry(projection)?
            .with_context(|| format!("no projection `{projection}` in {}", data.display()))?;
        let version = entry
            .serving_version
            .with_context(|| format!("projection `{projection}` has no serving version yet"))?;
        let path = build_path(data, projection, version, entry.serving_generation);
        match Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(conn) => return Ok(conn),
            Err(_) if attempt < 3 => attempt += 1,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
    }
}

/// Run `sql` on `projection`'s serving version; one JSON object per row to `out`.
/// Returns the number of rows. Anything but one read-only statement is refused.
pub fn query(data: &Path, projection: &str, sql: &str, out: &mut impl Write) -> Result<usize> {
    let conn = open_serving(data, projection)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // ATTACH counts as read-only to SQLite: forbid it, so a query sees this projection only.
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.execute_batch("PRAGMA query_only = 1")?;
    // Only queries: PRAGMA and the like count as "read-only" to SQLite but are not.
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if !["SELECT", "WITH", "VALUES", "EXPLAIN"].contains(&first.as_str()) {
        anyhow::bail!("only read-only statements (SELECT …) are allowed: {sql:?}");
    }
    let mut stmt = conn
        .prepare(sql)
        .with_context(|| format!("in query {sql:?}"))?;
    if !stmt.readonly() {
        anyhow::bail!("only read-only statements (SELECT …) are allowed: {sql:?}");
    }
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();
    let mut rows = stmt.query([])?;
    let mut count = 0;
    let mut line = String::new();
    while let Some(row) = rows.next()? {
        line.clear();
        line.push('{');
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(name);
            line.push(':');
            match row.get_ref(i)? {
                ValueRef::Null => line.push_str("null"),
                ValueRef::Integer(v) => line.push_str(&v.to_string()),
                ValueRef::Real(v) => line.push_str(
                    &serde_json::Number::from_f64(v).map_or("null".into(), |n| n.to_string()),
                ),
                ValueRef::Text(t) => {
                    line.push_str(&serde_json::to_string(&String::from_utf8_lossy(t))?)
                }
                ValueRef::Blob(b) => line.push_str(&serde_json::to_string(&hex::encode(b))?),
            }
        }
        line.push_str("}\n");
        out.write_all(line.as_bytes())?;
        count += 1;
    }
    Ok(count)
}
