//! Read-only SQL against the serving tables of one projection: as NDJSON (the CLI) or
//! as columns and rows (the HTTP API), with a row cap and a time cap.

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

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No such projection, or it serves nothing yet.
    #[error("{0}")]
    NotFound(String),
    /// Not one read-only statement.
    #[error("only one read-only statement (SELECT …) is allowed: {0}")]
    Refused(String),
    /// SQLite refused or failed the statement.
    #[error("{0}")]
    Sql(String),
    /// It ran past the time cap.
    #[error("the query ran past its {0} ms limit")]
    TooSlow(u64),
}

/// Caps on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Rows returned at most (the answer says when it was cut).
    pub max_rows: usize,
    /// Milliseconds of SQLite work at most.
    pub timeout_ms: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_rows: 10_000,
            timeout_ms: 5_000,
        }
    }
}

/// A query's answer as a table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryTable {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, as JSON values (blobs as hex).
    pub rows: Vec<Vec<serde_json::Value>>,
    /// True when rows past `max_rows` were left out.
    pub truncated: bool,
}

/// Run `sql` on `projection`'s serving build under `limits`; one JSON object per row
/// to `ndjson` if given, else collected as a table.
pub fn query_with(
    data: &Path,
    projection: &str,
    sql: &str,
    limits: QueryLimits,
    mut ndjson: Option<&mut dyn Write>,
) -> Result<QueryTable, QueryError> {
    let conn =
        open_serving(data, projection).map_err(|e| QueryError::NotFound(format!("{e:#}")))?;
    let sql_err = |e: rusqlite::Error| QueryError::Sql(e.to_string());
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_err)?;
    // ATTACH counts as read-only to SQLite: forbid it, so a query sees this projection only.
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(sql_err)?;
    conn.execute_batch("PRAGMA query_only = 1")
        .map_err(sql_err)?;
    // Only queries: PRAGMA and the like count as "read-only" to SQLite but are not.
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if !["SELECT", "WITH", "VALUES", "EXPLAIN"].contains(&first.as_str()) {
        return Err(QueryError::Refused(format!("{sql:?}")));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(limits.timeout_ms);
    conn.progress_handler(10_000, Some(move || std::time::Instant::now() > deadline));
    let mut stmt = conn.prepare(sql).map_err(|e| match e {
        rusqlite::Error::MultipleStatement => QueryError::Refused(format!("{sql:?}")),
        e => QueryError::Sql(format!("in query {sql:?}: {e}")),
    })?;
    if !stmt.readonly() {
        return Err(QueryError::Refused(format!("{sql:?}")));
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
    let keys: Vec<String> = columns
        .iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();
    let timed_out = |e: rusqlite::Error| {
        if std::time::Instant::now() > deadline {
            QueryError::TooSlow(limits.timeout_ms)
        } else {
            QueryError::Sql(e.to_string())
        }
    };
    let mut rows = stmt.query([]).map_err(timed_out)?;
    let mut table = QueryTable {
        columns,
        rows: Vec::new(),
        truncated: false,
    };
    let mut count = 0;
    let mut line = String::new();
    while let Some(row) = rows.next().map_err(timed_out)? {
        if count == limits.max_rows {
            table.truncated = true;
            break;
        }
        count += 1;
        let values: Vec<serde_json::Value> = (0..keys.len())
            .map(|i| row.get_ref(i).map(json))
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_err)?;
        match ndjson.as_mut() {
            Some(out) => {
                line.clear();
                line.push('{');
                for (i, (k, v)) in keys.iter().zip(&values).enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(k);
                    line.push(':');
                    line.push_str(&v.to_string());
                }
                line.push_str("}\n");
                out.write_all(line.as_bytes())
                    .map_err(|e| QueryError::Sql(format!("writing the answer: {e}")))?;
            }
            None => table.rows.push(values),
        }
    }
    Ok(table)
}

/// One SQLite value as JSON (blobs as hex).
fn json(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(v) => v.into(),
        ValueRef::Real(v) => {
            serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
        }
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => hex::encode(b).into(),
    }
}

/// Run `sql` on `projection`'s serving version; one JSON object per row to `out`.
/// Returns the number of rows. Anything but one read-only statement is refused.
pub fn query(data: &Path, projection: &str, sql: &str, out: &mut impl Write) -> Result<usize> {
    let limits = QueryLimits {
        max_rows: usize::MAX,
        timeout_ms: 24 * 3600 * 1000,
    };
    let mut counter = Counting {
        inner: out,
        lines: 0,
    };
    query_with(data, projection, sql, limits, Some(&mut counter))?;
    Ok(counter.lines)
}

/// Counts the lines written through it.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    lines: usize,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines += buf.iter().filter(|b| **b == b'\n').count();
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The declared tables of `projection`'s serving build: name, columns (name, kind,
/// nullable), primary key and indexes, as JSON.
pub fn tables(data: &Path, projection: &str) -> Result<serde_json::Value> {
    let conn = open_serving(data, projection)?;
    let stored: String = conn.query_row(
        "SELECT value FROM _projector_meta WHERE key = 'tables'",
        [],
        |r| r.get(0),
    )?;
    let raw: Vec<serde_json::Value> = serde_json::from_str(&stored)?;
    Ok(raw
        .into_iter()
        .map(|t| {
            let columns: Vec<serde_json::Value> = t["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| serde_json::json!({"name": c[0], "kind": c[1], "nullable": c[2]}))
                .collect();
            serde_json::json!({
                "name": t["name"],
                "columns": columns,
                "primary_key": t["primary_key"],
                "indexes": t["indexes"],
            })
        })
        .collect())
}
