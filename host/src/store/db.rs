//! One build's database: the projection's tables, its checkpoint and dead letters in one
//! SQLite file, so a batch's ops and the checkpoint after them commit together.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};

use super::layout::build_path;
use super::ops::{OpError, OpLimits, validate};
use super::window::{MAX_ROWS, Pending, Window, inexact};
use crate::runtime::RowReader;
use crate::schema::{Schema, TableSchema};
use crate::wit::{Event, Op, Position, Value};

struct Sql<'a>(&'a Value);

impl ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The read model of one projection version: its tables and checkpoint.
///
/// Batches apply to the commit [`Window`] in memory; the window is written into the
/// open transaction at commit (or when it holds [`MAX_ROWS`] rows), with the checkpoint.
///
/// While catching up, [`Self::commit_in_background`] writes and commits a window on a
/// thread of its own while the next batches run: the writing connection goes with it,
/// and reads that the new window cannot answer look in the window being written, then
/// in SQLite through a second, read-only connection (which sees the last commit: the
/// window being written is exactly what that commit lacks). Anything else that needs
/// the writing connection first waits for it to come back.
pub struct ProjectionDb {
    /// Shared with the [`TableReader`]s lent to the module for `get`, which read through
    /// the window, the window in flight and SQLite (read-your-writes across commits).
    inner: Arc<Mutex<Inner>>,
    schema: Arc<Schema>,
    path: PathBuf,
    /// The checkpoint of the last batch applied, written at commit.
    pending: Option<Checkpoint>,
    /// A transaction is open (since [`Self::begin`]): batches may be applied.
    in_transaction: bool,
    /// `BEGIN` was run on the writing connection (something was written to it directly:
    /// a dead letter, a window too large to hold, a probe); such a transaction commits
    /// in place.
    begun: bool,
    /// The commit being written in the background: the connection and rows it wrote.
    committing: Option<JoinHandle<(Connection, rusqlite::Result<u64>)>>,
}

/// The connections and the rows not yet written to SQLite.
struct Inner {
    /// The writing connection; None while a commit is written in the background.
    conn: Option<Connection>,
    window: Window,
    /// The window a background commit is writing (reads look here after `window`).
    committing: Option<Arc<Window>>,
    /// Read-only, for reads while the writing connection is away (opened on first use).
    reader: Option<Connection>,
    scratch: Vec<u8>,
    /// Rows written by flushes and background commits (each the last state of a row
    /// over its window).
    rows_written: u64,
}

/// The error of a read or write after the writing connection was lost (its background
/// commit panicked or could not start).
fn lost() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
        Some("the database connection was lost in a failed background commit".into()),
    )
}

impl Inner {
    /// The writing connection (callers first wait for a background commit).
    fn conn(&self) -> rusqlite::Result<&Connection> {
        self.conn.as_ref().ok_or_else(lost)
    }
}

/// Where a projection stands in the source, committed with its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Position of the last event read.
    pub position: Position,
    /// Events read from the source so far (matched or not).
    pub events: u64,
}

/// Lock the connection; a poisoned lock still holds a usable connection (SQLite rolls
/// back what a panicking writer left half done when the transaction ends).
fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads rows of one build for a module's `get`: see [`ProjectionDb::reader`].
pub struct TableReader {
    inner: Arc<Mutex<Inner>>,
    schema: Arc<Schema>,
}

impl RowReader for TableReader {
    fn get(&mut self, table: &str, key: &[Value]) -> Result<Option<Vec<Value>>> {
        get_row(&mut lock(&self.inner), &self.schema, table, key)
    }
}

/// One row of a declared table by primary key: from the window, else from SQLite.
fn get_row(
    inner: &mut Inner,
    schema: &Schema,
    table: &str,
    key: &[Value],
) -> Result<Option<Vec<Value>>> {
    let Some((ti, t)) = schema.table(table) else {
        anyhow::bail!("get: table `{table}` is not declared in the manifest");
    };
    if key.len() != t.primary_key.len() {
        anyhow::bail!(
            "get on `{table}`: the key has {} columns, got {} values",
            t.primary_key.len(),
            key.len()
        );
    }
    if key.iter().any(|v| matches!(v, Value::Null)) {
        // `=` matches no row with NULL, in SQLite and so here.
        return Ok(None);
    }
    if let Some((v, c)) = inexact(t, key) {
        // SQLite would convert it and find the row, the window would not: the answer
        // would depend on where commits fall, so the read is refused, as a write is.
        anyhow::bail!(
            "get on `{table}`: key column `{}` ({}) cannot be matched by {}",
            c.name,
            crate::schema::sql_type(c.kind).to_lowercase(),
            super::ops::describe(v)
        );
    }
    if let Some(row) = inner.window.get(schema, ti, key) {
        return Ok(row);
    }
    let Inner {
        conn,
        committing,
        reader,
        scratch,
        ..
    } = inner;
    Ok(stored_row(
        committing, reader, conn, scratch, schema, ti, key,
    )?)
}

/// A row the window does not hold: from the window a background commit is writing, else
/// from SQLite (through the writing connection when it is here, else the read-only one).
fn stored_row(
    committing: &Option<Arc<Window>>,
    reader: &Option<Connection>,
    conn: &Option<Connection>,
    scratch: &mut Vec<u8>,
    schema: &Schema,
    table: usize,
    key: &[Value],
) -> rusqlite::Result<Option<Vec<Value>>> {
    if let Some(row) = committing
        .as_ref()
        .and_then(|w| w.held(schema, table, key, scratch))
    {
        return Ok(row);
    }
    let conn = conn.as_ref().or(reader.as_ref()).ok_or_else(lost)?;
    read_row(conn, &schema.tables[table], key)
}

/// One stored row by primary key, through `conn` (the writing connection sees the open
/// transaction; the read-only one, the last commit).
fn read_row(
    conn: &Connection,
    t: &TableSchema,
    key: &[Value],
) -> rusqlite::Result<Option<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(&t.select_sql)?;
    for (i, v) in key.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, Sql(v))?;
    }
    let mut rows = stmt.raw_query();
    Ok(match rows.next()? {
        Some(row) => Some(
            (0..t.columns.len())
                .map(|i| row.get_ref(i).map(from_sql))
                .collect::<rusqlite::Result<_>>()?,
        ),
        None => None,
    })
}

pub(crate) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer. NORMAL: a crash of the process loses nothing
    // committed; a power loss may lose the last commits, never consistency.
    // The busy timeout first: switching to WAL needs a lock another connection may hold.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;
         PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=10000;
         PRAGMA mmap_size=268435456;",
    )
}

impl ProjectionDb {
    /// Open (or create) build `generation` of `schema`'s projection version under `data`.
    pub fn open(data: &Path, schema: Arc<Schema>, generation: u32) -> Result<ProjectionDb> {
        let path = build_path(data, &schema.name, schema.version, generation);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        tune(&conn).with_context(|| format!("configuring {}", path.display()))?;
        conn.set_prepared_statement_cache_capacity(256);
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _projector_checkpoint (
                 id INTEGER PRIMARY KEY CHECK (id = 0),
                 commit_position INTEGER NOT NULL, prepare_position INTEGER NOT NULL, events INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS _projector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS _projector_dead_letters (
                 commit_position INTEGER NOT NULL, prepare_position INTEGER NOT NULL,
                 event_id TEXT, event_type TEXT, stream_id TEXT, error TEXT NOT NULL);",
        )?;
        let stored: Option<String> = conn
            .query_row(
                "SELECT value FROM _projector_meta WHERE key = 'tables'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match stored {
            Some(t) if t != schema.tables_json => anyhow::bail!(
                "projection `{}` version {} changed its tables without a version bump; bump the manifest version to rebuild",
                schema.name,
                schema.version
            ),
            Some(_) => {}
            None => {
                let tx = conn.unchecked_transaction()?;
                for t in &schema.tables {
                    for sql in &t.create_sql {
                        tx.execute(sql, [])
                            .with_context(|| format!("creating table `{}`", t.name))?;
                    }
                }
                tx.execute(
                    "INSERT INTO _projector_meta (key, value) VALUES ('tables', ?1)",
                    [&schema.tables_json],
                )?;
                tx.commit()?;
            }
        }
        let mut empty = true;
        for t in &schema.tables {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM \"{}\")", t.name);
            empty &= !conn.query_row(&sql, [], |r| r.get::<_, bool>(0))?;
        }
        let window = if empty {
            Window::over_empty_tables()
        } else {
            Window::default()
        };
        Ok(ProjectionDb {
            inner: Arc::new(Mutex::new(Inner {
                conn: Some(conn),
                window,
                committing: None,
                reader: None,
                scratch: Vec::new(),
                rows_written: 0,
            })),
            schema,
            path,
            pending: None,
            in_transaction: false,
            begun: false,
            committing: None,
        })
    }

    /// Wait for the background commit, if one is being written; if it failed, the
    /// batches applied since are given up too (they built on it) and the error returned.
    fn settle(&mut self) -> Result<()> {
        let Some(handle) = self.committing.take() else {
            return Ok(());
        };
        let joined = handle.join();
        let mut inner = lock(&self.inner);
        inner.committing = None;
        let failed = match joined {
            Ok((conn, written)) => {
                inner.conn = Some(conn);
                match written {
                    Ok(n) => {
                        inner.rows_written += n;
                        return Ok(());
                    }
                    Err(e) => anyhow::Error::from(e),
                }
            }
            Err(_) => anyhow::anyhow!("the background commit panicked"),
        };
        drop(inner);
        self.abandon();
        Err(failed.context("committing"))
    }

    /// Run `BEGIN` on the writing connection if it has not been yet (after waiting for
    /// a background commit).
    fn ensure_begun(&mut self) -> Result<()> {
        self.settle()?;
        if !self.begun {
            lock(&self.inner).conn()?.execute_batch("BEGIN")?;
            self.begun = true;
        }
        Ok(())
    }

    /// The committed checkpoint, or None before the first batch.
    pub fn checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        self.settle()?;
        Ok(lock(&self.inner)
            .conn()?
            .query_row("SELECT commit_position, prepare_position, events FROM _projector_checkpoint WHERE id = 0", [], |r| {
                Ok(Checkpoint {
                    position: Position { commit: r.get::<_, i64>(0)? as u64, prepare: r.get::<_, i64>(1)? as u64 },
                    events: r.get::<_, i64>(2)? as u64,
                })
            })
            .optional()?)
    }

    /// Read one row by primary key, as the module's `get` sees it (uncommitted batches too).
    pub fn get(&self, table: &str, key: &[Value]) -> Result<Option<Vec<Value>>> {
        get_row(&mut lock(&self.inner), &self.schema, table, key)
    }

    /// A reader of this database's rows for a module's `get`, sharing the window and the
    /// connection (and so seeing the batches not yet committed).
    pub fn reader(&self) -> TableReader {
        TableReader {
            inner: self.inner.clone(),
            schema: self.schema.clone(),
        }
    }

    /// Rows written to SQLite so far by this handle: the ops applied, coalesced per row
    /// over each commit window.
    pub fn rows_written(&self) -> u64 {
        lock(&self.inner).rows_written
    }

    /// Start a transaction that may span several batches (committed by [`Self::commit`]).
    /// SQLite's `BEGIN` waits for the first write that needs it.
    pub fn begin(&mut self) -> Result<()> {
        self.in_transaction = true;
        Ok(())
    }

    /// Write the window and the checkpoint, and commit every batch applied since
    /// [`Self::begin`], before returning; false when none was open. On failure nothing
    /// of them is kept.
    pub fn commit(&mut self) -> Result<bool> {
        if !self.in_transaction {
            self.settle()?;
            return Ok(false);
        }
        self.ensure_begun()?;
        let mut inner = lock(&self.inner);
        let written = flush(&mut inner, &self.schema).and_then(|()| {
            let conn = inner.conn()?;
            if let Some(cp) = self.pending.take() {
                write_checkpoint(conn, cp)?;
            }
            conn.execute_batch("COMMIT")
        });
        if let Err(e) = written {
            drop(inner);
            self.abandon();
            return Err(anyhow::Error::from(e).context("committing"));
        }
        self.in_transaction = false;
        self.begun = false;
        Ok(true)
    }

    /// As [`Self::commit`], but written and committed on a thread of its own while the
    /// next batches run (the previous background commit is waited for first; its error,
    /// if any, is returned here). Commits in place when the transaction was begun.
    pub fn commit_in_background(&mut self) -> Result<bool> {
        self.settle()?;
        if !self.in_transaction {
            return Ok(false);
        }
        if self.begun {
            return self.commit();
        }
        let mut inner = lock(&self.inner);
        if inner.reader.is_none() {
            inner.reader = Some(open_reader(&self.path)?);
        }
        let conn = inner.conn.take().ok_or_else(lost)?;
        let rows = Arc::new(inner.window.take_rows());
        inner.committing = Some(rows.clone());
        drop(inner);
        let (schema, checkpoint) = (self.schema.clone(), self.pending.take());
        let handle = std::thread::Builder::new()
            .name(format!("commit-{}", self.schema.name))
            .spawn(move || {
                let written = write_and_commit(&conn, &schema, &rows, checkpoint);
                (conn, written)
            });
        match handle {
            Ok(h) => self.committing = Some(h),
            Err(e) => {
                // No thread: the connection went with the closure; nothing was written.
                self.abandon();
                return Err(anyhow::Error::from(e).context("starting a background commit"));
            }
        }
        self.in_transaction = false;
        Ok(true)
    }

    /// Validate every op, then apply them to the window with the checkpoint: the batch
    /// lands whole or not at all. Returns the number of ops applied.
    pub fn apply_batch(
        &mut self,
        ops: Vec<Op>,
        checkpoint: Checkpoint,
        limits: OpLimits,
    ) -> Result<usize, OpError> {
        if ops.len() > limits.max_ops {
            return Err(OpError::TooManyOps {
                count: ops.len(),
                limit: limits.max_ops,
            });
        }
        let schema = self.schema.clone();
        let mut plan = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            plan.push(validate(&schema, index, op, limits)?);
        }
        let count = ops.len();
        let mut inner = lock(&self.inner);
        let Inner {
            conn,
            window,
            committing,
            reader,
            scratch,
            ..
        } = &mut *inner;
        window.apply(&schema, ops, &plan, |table, key| {
            Ok(stored_row(
                committing, reader, conn, scratch, &schema, table, key,
            )?)
        })?;
        self.pending = Some(checkpoint);
        if window.len() >= MAX_ROWS {
            drop(inner);
            // Into the open transaction (not committed): memory stays bounded.
            let flushed = match self.ensure_begun() {
                Ok(()) => flush(&mut lock(&self.inner), &schema).map_err(OpError::from),
                Err(e) => Err(OpError::Sql(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(format!("{e:#}")),
                ))),
            };
            if let Err(e) = flushed {
                self.abandon();
                return Err(e);
            }
        }
        Ok(count)
    }

    /// Give up the open transaction after a failed write: nothing of it is kept.
    fn abandon(&mut self) {
        let mut inner = lock(&self.inner);
        inner.window.reset();
        inner.committing = None;
        if self.begun
            && let Some(conn) = &inner.conn
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::debug!("rolling back after a failed write: {e}");
        }
        self.pending = None;
        self.in_transaction = false;
        self.begun = false;
    }

    /// Run `f`, then undo whatever it wrote (to find which event of a failed batch fails).
    pub fn rolled_back<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> Result<R> {
        self.ensure_begun()?;
        let window = {
            let inner = lock(&self.inner);
            inner.conn()?.execute_batch("SAVEPOINT probe")?;
            inner.window.clone()
        };
        let pending = self.pending;
        let r = f(self);
        let mut inner = lock(&self.inner);
        inner
            .conn()?
            .execute_batch("ROLLBACK TO probe; RELEASE probe")?;
        inner.window = window;
        self.pending = pending;
        Ok(r)
    }

    /// Record an event the projection could not handle (in the open transaction).
    pub fn dead_letter(
        &mut self,
        position: Position,
        event: Option<&Event>,
        error: &str,
    ) -> Result<()> {
        self.ensure_begun()?;
        lock(&self.inner)
            .conn()?
            .prepare_cached(
                "INSERT INTO _projector_dead_letters (commit_position, prepare_position, event_id, event_type, stream_id, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                position.commit as i64,
                position.prepare as i64,
                event.map(|e| &e.event_id),
                event.map(|e| &e.event_type),
                event.map(|e| &e.stream_id),
                error
            ])?;
        Ok(())
    }

    /// Dead letters, oldest position first: (row id, position).
    pub fn dead_letters(&mut self) -> Result<Vec<(i64, Position)>> {
        self.settle()?;
        let inner = lock(&self.inner);
        let mut stmt = inner
            .conn()?
            .prepare("SELECT rowid, commit_position, prepare_position FROM _projector_dead_letters ORDER BY commit_position")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                Position {
                    commit: r.get::<_, i64>(1)? as u64,
                    prepare: r.get::<_, i64>(2)? as u64,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Settle a dead letter: remove it (`error` None) or record why it still fails.
    pub fn settle_dead_letter(&mut self, rowid: i64, error: Option<&str>) -> Result<()> {
        // In the transaction with the retried event's rows: both land or neither does.
        self.ensure_begun()?;
        let inner = lock(&self.inner);
        let conn = inner.conn()?;
        match error {
            None => conn.execute(
                "DELETE FROM _projector_dead_letters WHERE rowid = ?1",
                [rowid],
            )?,
            Some(e) => conn.execute(
                "UPDATE _projector_dead_letters SET error = ?2 WHERE rowid = ?1",
                params![rowid, e],
            )?,
        };
        Ok(())
    }
}

/// Write every row of the window into the open transaction, once each, by statements
/// prepared once per table.
fn flush(inner: &mut Inner, schema: &Schema) -> rusqlite::Result<()> {
    if inner.window.len() == 0 {
        return Ok(());
    }
    inner.rows_written += write_rows(inner.conn()?, schema, inner.window.rows())?;
    inner.window.clear_rows();
    Ok(())
}

/// Write `rows` into the open transaction, once each, by statements prepared once per
/// table; returns how many.
fn write_rows<'a>(
    conn: &Connection,
    schema: &Schema,
    rows: impl Iterator<Item = &'a (usize, Pending)>,
) -> rusqlite::Result<u64> {
    let mut upserts = Vec::with_capacity(schema.tables.len());
    let mut deletes = Vec::with_capacity(schema.tables.len());
    for t in &schema.tables {
        upserts.push(conn.prepare_cached(&t.upsert_sql)?);
        deletes.push(conn.prepare_cached(&t.delete_sql)?);
    }
    let mut written = 0;
    for (table, state) in rows {
        let (stmt, values) = match state {
            Pending::Row(row) => (&mut upserts[*table], row),
            Pending::Deleted(key) => (&mut deletes[*table], key),
        };
        for (i, v) in values.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, Sql(v))?;
        }
        stmt.raw_execute()?;
        written += 1;
    }
    Ok(written)
}

/// A background commit: `BEGIN`, the rows, the checkpoint, `COMMIT` (or `ROLLBACK` and
/// the error). Returns the rows written.
fn write_and_commit(
    conn: &Connection,
    schema: &Schema,
    rows: &Window,
    checkpoint: Option<Checkpoint>,
) -> rusqlite::Result<u64> {
    conn.execute_batch("BEGIN")?;
    let written = write_rows(conn, schema, rows.rows()).and_then(|n| {
        if let Some(cp) = checkpoint {
            write_checkpoint(conn, cp)?;
        }
        conn.execute_batch("COMMIT").map(|()| n)
    });
    if written.is_err()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::debug!("rolling back a failed background commit: {e}");
    }
    written
}

/// The read-only connection of a build, for reads while a commit is written.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} to read", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA cache_size=-16384; PRAGMA mmap_size=268435456;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn write_checkpoint(conn: &Connection, cp: Checkpoint) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO _projector_checkpoint (id, commit_position, prepare_position, events) VALUES (0, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET commit_position = excluded.commit_position,
           prepare_position = excluded.prepare_position, events = excluded.events",
    )?;
    stmt.execute(params![
        cp.position.commit as i64,
        cp.position.prepare as i64,
        cp.events as i64
    ])?;
    Ok(())
}

impl Drop for ProjectionDb {
    fn drop(&mut self) {
        // A background commit finishes (or fails, and is rolled back) before the file
        // is let go.
        if let Err(e) = self.settle() {
            tracing::warn!(projection = %self.schema.name, "{e:#}");
        }
        // Uncommitted batches are simply not there on the next start; say so if it happens.
        if self.in_transaction {
            tracing::debug!(projection = %self.schema.name, "closing with an open transaction: rolled back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{AddOp, Column, ColumnKind, Delta, Interests, Manifest, RowOp, Table};

    const LIMITS: OpLimits = OpLimits {
        max_ops: 100,
        max_value_bytes: 100,
        max_row_bytes: 400,
    };

    fn open(dir: &Path) -> ProjectionDb {
        let col = |name: &str, kind| Column {
            name: name.into(),
            kind,
            nullable: false,
        };
        let schema = Schema::new(&Manifest {
            name: "p".into(),
            version: 1,
            interests: Interests {
                event_types: vec![],
                stream_prefixes: vec![],
            },
            tables: vec![
                Table {
                    name: "t".into(),
                    columns: vec![col("k", ColumnKind::Text), col("n", ColumnKind::Integer)],
                    primary_key: vec!["k".into()],
                    indexes: vec![],
                },
                // A REAL key and columns SQLite converts, and a nullable counter.
                Table {
                    name: "u".into(),
                    columns: vec![
                        col("k", ColumnKind::Real),
                        col("x", ColumnKind::Real),
                        Column {
                            name: "c".into(),
                            kind: ColumnKind::Integer,
                            nullable: true,
                        },
                    ],
                    primary_key: vec!["k".into()],
                    indexes: vec![],
                },
            ],
        })
        .expect("valid manifest");
        ProjectionDb::open(dir, Arc::new(schema), 1).expect("open")
    }

    fn cp(n: u64) -> Checkpoint {
        Checkpoint {
            position: Position::at(n),
            events: n,
        }
    }

    fn row(k: &str, n: i64) -> Op {
        Op::Upsert(RowOp {
            table: "t".into(),
            row: vec![Value::Text(k.into()), Value::Integer(n)],
        })
    }

    fn inc(k: &str, n: i64) -> Op {
        Op::Increment(AddOp {
            table: "t".into(),
            key: vec![Value::Text(k.into())],
            deltas: vec![Delta {
                column: "n".into(),
                by: Value::Integer(n),
            }],
        })
    }

    /// `n` of row `k`, as a module's `get` sees it.
    fn n(db: &ProjectionDb, k: &str) -> Option<i64> {
        match db.get("t", &[Value::Text(k.into())]).expect("get")?.get(1) {
            Some(Value::Integer(n)) => Some(*n),
            other => panic!("n of {k}: {other:?}"),
        }
    }

    #[test]
    fn a_failed_batch_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        db.begin().expect("begin");
        db.apply_batch(vec![row("a", 1)], cp(1), LIMITS)
            .expect("batch");
        // Refused by validation, after good ops.
        let refused = [
            row("a", 2),
            row("b", 1),
            Op::Upsert(RowOp {
                table: "t".into(),
                row: vec![],
            }),
        ];
        assert!(db.apply_batch(refused.to_vec(), cp(2), LIMITS).is_err());
        // Refused while applying (the sum overflows the INTEGER column), after good ops.
        let overflow = [row("b", 1), inc("a", 2), row("c", i64::MAX), inc("c", 1)];
        let err = db
            .apply_batch(overflow.to_vec(), cp(3), LIMITS)
            .expect_err("overflow");
        assert!(
            matches!(&err, OpError::Invalid { index: 3, reason, .. } if reason.contains("integer overflow")),
            "{err}"
        );
        assert_eq!(
            (n(&db, "a"), n(&db, "b"), n(&db, "c")),
            (Some(1), None, None)
        );
        db.commit().expect("commit");
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(cp(1)));
    }

    #[test]
    fn batches_after_a_background_commit_read_its_rows_and_commit_on_top_of_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        db.begin().expect("begin");
        db.apply_batch(vec![row("a", 1), row("gone", 1)], cp(1), LIMITS)
            .expect("batch");
        db.commit().expect("commit");
        // Another writer holds the write lock: the background commit below cannot write
        // until it lets go, so the batches after it surely run while it is in flight.
        let other = Connection::open(build_path(dir.path(), "p", 1, 1)).expect("open");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        db.begin().expect("begin");
        let delete = Op::Delete(crate::wit::KeyOp {
            table: "t".into(),
            key: vec![Value::Text("gone".into())],
        });
        db.apply_batch(vec![inc("a", 1), row("b", 7), delete], cp(2), LIMITS)
            .expect("batch");
        assert!(db.commit_in_background().expect("started"));
        db.begin().expect("begin");
        // Read from the window in flight (a, b, gone), not from SQLite (a = 1, no b).
        assert_eq!(
            (n(&db, "a"), n(&db, "b"), n(&db, "gone")),
            (Some(2), Some(7), None)
        );
        db.apply_batch(
            vec![inc("a", 10), inc("b", 1), inc("gone", 1)],
            cp(3),
            LIMITS,
        )
        .expect("batch");
        other.execute_batch("COMMIT").expect("unlock");
        db.commit().expect("commit");
        let stored = |k: &str| -> i64 {
            other
                .query_row("SELECT n FROM t WHERE k = ?1", [k], |r| r.get(0))
                .expect("row")
        };
        assert_eq!((stored("a"), stored("b"), stored("gone")), (12, 8, 1));
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(cp(3)));
    }

    #[test]
    fn a_dead_letter_is_settled_only_with_the_transaction_that_settles_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        db.begin().expect("begin");
        db.dead_letter(Position::at(5), None, "boom")
            .expect("dead letter");
        db.commit().expect("commit");
        let letters = db.dead_letters().expect("letters");
        assert_eq!(letters.len(), 1);
        // Retried: its rows and its removal go in one transaction, never committed here.
        db.begin().expect("begin");
        db.apply_batch(vec![row("a", 1)], cp(6), LIMITS)
            .expect("batch");
        db.settle_dead_letter(letters[0].0, None).expect("settle");
        drop(db);
        let mut db = open(dir.path());
        assert_eq!(db.dead_letters().expect("letters").len(), 1);
        assert_eq!(n(&db, "a"), None);
    }

    #[test]
    fn a_failed_background_commit_is_reported_and_gives_up_the_batches_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        db.begin().expect("begin");
        db.apply_batch(vec![row("a", 1)], cp(1), LIMITS)
            .expect("batch");
        db.commit().expect("commit");
        // From here on, every new row is refused by SQLite.
        let other = Connection::open(build_path(dir.path(), "p", 1, 1)).expect("open");
        other
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
            )
            .expect("trigger");
        db.begin().expect("begin");
        db.apply_batch(vec![row("b", 1)], cp(2), LIMITS)
            .expect("batch");
        assert!(db.commit_in_background().expect("started"));
        // A batch built on the failing commit: it must not land either.
        db.begin().expect("begin");
        db.apply_batch(vec![inc("a", 5)], cp(3), LIMITS)
            .expect("batch");
        let err = db.commit().expect_err("the background commit failed");
        assert!(format!("{err:#}").contains("disk says no"), "{err:#}");
        assert!(
            !db.commit().expect("nothing left"),
            "later batches are given up"
        );
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(cp(1)));
        assert_eq!((n(&db, "a"), n(&db, "b")), (Some(1), None));
    }

    #[test]
    fn get_reads_the_batches_of_the_open_transaction_before_they_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        let mut reader = db.reader();
        db.begin().expect("begin");
        db.apply_batch(vec![row("a", 1), inc("b", 3)], cp(1), LIMITS)
            .expect("batch");
        db.apply_batch(vec![inc("a", 4)], cp(2), LIMITS)
            .expect("batch");
        let got = reader.get("t", &[Value::Text("a".into())]).expect("get");
        assert!(
            matches!(got.as_deref(), Some([_, Value::Integer(5)])),
            "{got:?}"
        );
        assert_eq!(
            n(&db, "b"),
            Some(3),
            "an increment of a missing row starts at 0"
        );
        let other = Connection::open(build_path(dir.path(), "p", 1, 1)).expect("open");
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(
            count(&other),
            0,
            "nothing is visible outside before the commit"
        );
        db.commit().expect("commit");
        assert_eq!(count(&other), 2);
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(cp(2)));
    }

    #[test]
    fn a_probe_undoes_what_it_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        db.begin().expect("begin");
        db.apply_batch(vec![inc("a", 1)], cp(1), LIMITS)
            .expect("batch");
        let seen = db
            .rolled_back(|db| {
                db.apply_batch(vec![inc("a", 10), row("b", 1)], cp(2), LIMITS)
                    .expect("probe");
                n(db, "a")
            })
            .expect("probe");
        assert_eq!(seen, Some(11));
        assert_eq!((n(&db, "a"), n(&db, "b")), (Some(1), None));
        db.commit().expect("commit");
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(cp(1)));
    }

    fn op(table: &str, kind: &str, key: Value, rest: Vec<Value>) -> Op {
        match kind {
            "upsert" => Op::Upsert(RowOp {
                table: table.into(),
                row: std::iter::once(key).chain(rest).collect(),
            }),
            "delete" => Op::Delete(crate::wit::KeyOp {
                table: table.into(),
                key: vec![key],
            }),
            _ => Op::Increment(AddOp {
                table: table.into(),
                key: vec![key],
                deltas: ["x", "c"]
                    .iter()
                    .zip(rest)
                    .map(|(c, by)| Delta {
                        column: c.to_string(),
                        by,
                    })
                    .collect(),
            }),
        }
    }

    #[test]
    fn what_a_module_reads_does_not_depend_on_where_commits_fall() {
        use Value::{Integer as I, Null, Real as R, Text as T};
        let limits = OpLimits {
            max_ops: 1000,
            ..LIMITS
        };
        let batches: Vec<Vec<Op>> = vec![
            vec![
                row("a", 1),
                inc("b", 2),
                op("u", "upsert", I(1), vec![I(3), Null]),
            ],
            vec![inc("a", 5), op("u", "inc", R(1.0), vec![I(2), I(7)])],
            vec![
                Op::Delete(crate::wit::KeyOp {
                    table: "t".into(),
                    key: vec![T("b".into())],
                }),
                op("u", "inc", I(2), vec![R(0.5)]),
            ],
            vec![inc("b", 4), op("u", "delete", R(1.0), vec![]), row("c", 9)],
            vec![op("u", "inc", I(1), vec![I(1), I(1)]), inc("c", -9)],
        ];
        let keys_t = ["a", "b", "c"].map(|k| vec![T(k.into())]);
        let keys_u = [I(1), R(2.0)].map(|k| vec![k]);
        let seen = |db: &ProjectionDb| -> String {
            let mut out = String::new();
            for k in &keys_t {
                out += &format!("{:?};", db.get("t", k).expect("get"));
            }
            for k in &keys_u {
                out += &format!("{:?};", db.get("u", k).expect("get"));
            }
            out
        };
        let each = tempfile::tempdir().expect("tempdir");
        let once = tempfile::tempdir().expect("tempdir");
        let (mut each, mut once) = (open(each.path()), open(once.path()));
        once.begin().expect("begin");
        for (i, ops) in batches.into_iter().enumerate() {
            each.begin().expect("begin");
            each.apply_batch(ops.clone(), cp(i as u64 + 1), limits)
                .expect("batch");
            each.commit().expect("commit");
            once.apply_batch(ops, cp(i as u64 + 1), limits)
                .expect("batch");
            assert_eq!(seen(&each), seen(&once), "after batch {i}");
        }
        once.commit().expect("commit");
        assert_eq!(seen(&each), seen(&once));
        assert_eq!(
            seen(&once),
            "Some([Value::Text(\"a\"), Value::Integer(6)]);\
             Some([Value::Text(\"b\"), Value::Integer(4)]);\
             Some([Value::Text(\"c\"), Value::Integer(0)]);\
             Some([Value::Real(1.0), Value::Real(1.0), Value::Integer(1)]);\
             Some([Value::Real(2.0), Value::Real(0.5), Value::Null]);"
        );
    }

    #[test]
    fn a_long_window_is_written_into_the_open_transaction_not_kept_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        let limits = OpLimits {
            max_ops: 10_000,
            ..LIMITS
        };
        db.begin().expect("begin");
        let rows = MAX_ROWS + 5_000;
        for b in 0..rows / 5_000 {
            let ops = (0..5_000)
                .map(|i| inc(&format!("k{}", b * 5_000 + i), 1))
                .collect();
            db.apply_batch(ops, cp(b as u64 + 1), limits)
                .expect("batch");
        }
        assert!(lock(&db.inner).window.len() < MAX_ROWS);
        let other = Connection::open(build_path(dir.path(), "p", 1, 1)).expect("open");
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count(&other), 0, "nothing is visible before the commit");
        db.apply_batch(vec![inc("k0", 1)], cp(100), limits)
            .expect("batch");
        assert_eq!(
            n(&db, "k0"),
            Some(2),
            "a flushed row is read back from SQLite"
        );
        db.commit().expect("commit");
        assert_eq!(count(&other), rows as i64);
        assert_eq!(db.checkpoint().expect("checkpoint"), Some(cp(100)));
    }

    /// Whether the window answers a `get` of `k` in table `t` without asking SQLite.
    fn answered_in_memory(db: &ProjectionDb, k: &str) -> bool {
        let schema = db.schema.clone();
        lock(&db.inner)
            .window
            .get(&schema, 0, &[Value::Text(k.into())])
            .is_some()
    }

    #[test]
    fn a_build_begun_empty_answers_keys_it_never_wrote_and_still_finds_every_row_it_did() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = open(dir.path());
        for batch in 0..10 {
            db.begin().expect("begin");
            let ops = (0..100)
                .map(|i| row(&format!("k{}", batch * 100 + i), i))
                .collect();
            db.apply_batch(ops, cp(batch as u64 + 1), LIMITS)
                .expect("batch");
            db.commit().expect("commit");
        }
        // Committed, so out of the window: every row is found (the filter never hides
        // one), and keys never written are answered without SQLite.
        assert!((0..1000).all(|i| n(&db, &format!("k{i}")) == Some(i % 100)));
        assert!((1000..2000).all(|i| n(&db, &format!("k{i}")).is_none()));
        let unseen = (1000..2000).filter(|i| answered_in_memory(&db, &format!("k{i}")));
        assert!(unseen.count() > 990, "misses are answered in memory");
        // A key of another kind than its column is refused: SQLite would convert `5` and
        // find '5' once committed, the window would not before, so the answer would
        // depend on where commits fall. NULL matches no row, as in SQLite.
        db.begin().expect("begin");
        db.apply_batch(vec![row("5", 7)], cp(11), LIMITS)
            .expect("batch");
        let by_integer = db.get("t", &[Value::Integer(5)]).unwrap_err().to_string();
        assert!(
            by_integer.contains("key column `k` (text) cannot be matched by an integer"),
            "{by_integer}"
        );
        db.commit().expect("commit");
        assert!(db.get("t", &[Value::Integer(5)]).is_err(), "committed too");
        assert!(db.get("t", &[Value::Null]).expect("get").is_none());
        assert!(
            db.get("t", &[Value::Text("5".into())])
                .expect("get")
                .is_some()
        );
        drop(db);
        // Reopened with rows in its tables: the filter is gone, misses ask SQLite.
        let db = open(dir.path());
        assert!(!answered_in_memory(&db, "k5000"));
        assert_eq!((n(&db, "k999"), n(&db, "k5000")), (Some(99), None));
    }
}
