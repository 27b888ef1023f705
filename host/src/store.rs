//! SQLite read models: one database file per projection version, the checkpoint in
//! the same file, so a batch's ops and the checkpoint after them commit together.
//!
//! Layout under the data dir:
//! - `catalog.sqlite`: which version of each projection serves, and its state;
//! - `<projection>/v<version>.sqlite`: that version's tables and checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};

use crate::runtime::wit::{ColumnKind, Op, Position, Value};
use crate::schema::{Schema, TableSchema};

/// Why a batch's ops were refused; nothing of the batch was written.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("op {index}: table `{table}` is not declared in the manifest")]
    UndeclaredTable { index: usize, table: String },
    #[error("op {index} on `{table}`: {reason}")]
    Invalid {
        index: usize,
        table: String,
        reason: String,
    },
    #[error("the batch returned {count} ops, over the limit of {limit}")]
    TooManyOps { count: usize, limit: usize },
    #[error("writing the batch failed: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Output caps applied to every batch.
#[derive(Debug, Clone, Copy)]
pub struct OpLimits {
    /// Ops one batch may carry.
    pub max_ops: usize,
    /// Bytes one text or blob value may hold.
    pub max_value_bytes: usize,
    /// Bytes of text and blobs one row may hold.
    pub max_row_bytes: usize,
}

impl From<&crate::runtime::Limits> for OpLimits {
    fn from(l: &crate::runtime::Limits) -> Self {
        OpLimits {
            max_ops: l.max_ops_per_batch,
            max_value_bytes: l.max_value_bytes,
            max_row_bytes: l.max_row_bytes,
        }
    }
}

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

/// Check one value against its column: kind, NULL-ability, size, JSON validity.
fn check_value(
    col: &crate::schema::ColumnSchema,
    v: &Value,
    limits: OpLimits,
) -> Result<(), String> {
    let ok = match (v, col.kind) {
        (Value::Null, _) => col.nullable,
        (Value::Integer(_), ColumnKind::Integer | ColumnKind::Real) => true,
        (Value::Real(r), ColumnKind::Real) => r.is_finite(),
        (Value::Text(s), ColumnKind::Text) => s.len() <= limits.max_value_bytes,
        (Value::Text(s), ColumnKind::Json) => {
            s.len() <= limits.max_value_bytes
                && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
        }
        (Value::Blob(b), ColumnKind::Blob) => b.len() <= limits.max_value_bytes,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let size = match v {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 0,
    };
    Err(if size > limits.max_value_bytes {
        format!(
            "column `{}`: value of {size} bytes is over the {} byte limit",
            col.name, limits.max_value_bytes
        )
    } else if matches!(v, Value::Null) {
        format!("column `{}` is NOT NULL", col.name)
    } else {
        format!(
            "column `{}` ({}) cannot hold {}",
            col.name,
            crate::schema::sql_type(col.kind).to_lowercase(),
            describe(v)
        )
    })
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(r) if !r.is_finite() => "a non-finite real",
        Value::Real(_) => "a real",
        Value::Text(_) => "text (or invalid JSON)",
        Value::Blob(_) => "a blob",
    }
}

/// The read model of one projection version: its tables and checkpoint.
pub struct ProjectionDb {
    conn: Connection,
    schema: Arc<Schema>,
    /// Increment SQL per (table, delta columns), built once per shape.
    increment_sql: HashMap<(usize, Vec<usize>), String>,
    in_transaction: bool,
}

/// Where a projection stands in the source, committed with its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Position of the last event read.
    pub position: Position,
    /// Events read from the source so far (matched or not).
    pub events: u64,
}

impl PartialEq for Position {
    fn eq(&self, o: &Self) -> bool {
        self.commit == o.commit && self.prepare == o.prepare
    }
}
impl Eq for Position {}
impl Default for Position {
    fn default() -> Self {
        Position {
            commit: 0,
            prepare: 0,
        }
    }
}

fn tune(conn: &Connection) -> rusqlite::Result<()> {
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

/// The file of one projection version's first build under the data dir.
pub fn version_path(data: &Path, name: &str, version: u32) -> PathBuf {
    build_path(data, name, version, 0)
}

/// The file of one build of a projection version: `v<version>.sqlite` for the first,
/// `v<version>.<generation>.sqlite` for each replay of the same version.
pub fn build_path(data: &Path, name: &str, version: u32, generation: u32) -> PathBuf {
    match generation {
        0 => data.join(name).join(format!("v{version}.sqlite")),
        g => data.join(name).join(format!("v{version}.{g}.sqlite")),
    }
}

/// The builds (version, generation) of `name` that have files under the data dir, ascending.
pub fn builds_on_disk(data: &Path, name: &str) -> Vec<(u32, u32)> {
    let mut builds: Vec<(u32, u32)> = std::fs::read_dir(data.join(name))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let file = e.ok()?.file_name().into_string().ok()?;
            let stem = file.strip_prefix('v')?.strip_suffix(".sqlite")?;
            match stem.split_once('.') {
                None => Some((stem.parse().ok()?, 0)),
                Some((v, g)) => Some((v.parse().ok()?, g.parse().ok()?)),
            }
        })
        .collect();
    builds.sort_unstable();
    builds
}

/// After a cutover: delete every build of `name` but the serving one and the `keep`
/// newest others (kept for rollback). Returns the builds deleted.
pub fn prune_builds(data: &Path, name: &str, keep: usize) -> Result<Vec<(u32, u32)>> {
    let serving = Catalog::open(data)?
        .entry(name)?
        .and_then(|e| Some((e.serving_version?, e.serving_generation)));
    let mut old: Vec<(u32, u32)> = builds_on_disk(data, name)
        .into_iter()
        .filter(|b| Some(*b) != serving)
        .collect();
    old.reverse();
    let doomed: Vec<(u32, u32)> = old.into_iter().skip(keep).collect();
    for &(v, g) in &doomed {
        remove_build(data, name, v, g)?;
    }
    Ok(doomed)
}

/// `projector drop`: delete every version of a projection and its catalog entry. Refused
/// while a host runs on the data folder (it holds `host.lock`).
pub fn drop_projection(data: &Path, name: &str) -> Result<()> {
    let _lock =
        HostLock::acquire(data).context("stop the host first (its runners may hold the files)")?;
    let catalog = Catalog::open(data)?;
    let known = catalog.forget(name)?;
    let folder = data.join(name);
    if !known && !folder.exists() {
        anyhow::bail!("no projection `{name}` in {}", data.display());
    }
    if folder.exists() {
        std::fs::remove_dir_all(&folder)
            .with_context(|| format!("removing {}", folder.display()))?;
    }
    Ok(())
}

/// An exclusive lock on a data folder: one host (or one `drop`) at a time.
pub struct HostLock {
    /// Held open: the lock lasts as long as the file handle.
    _file: std::fs::File,
}

impl HostLock {
    /// Take the lock, or fail saying that another process holds it.
    pub fn acquire(data: &Path) -> Result<HostLock> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating data dir {}", data.display()))?;
        let path = data.join("host.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(HostLock { _file: file }),
            Err(_) => anyhow::bail!(
                "another projector process is using {} (it holds {})",
                data.display(),
                path.display()
            ),
        }
    }
}

/// Delete one build's files (database, WAL and shared memory).
pub fn remove_build(data: &Path, name: &str, version: u32, generation: u32) -> Result<()> {
    let db = build_path(data, name, version, generation);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", db.display()));
            }
            _ => {}
        }
    }
    Ok(())
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
        Ok(ProjectionDb {
            conn,
            schema,
            increment_sql: HashMap::new(),
            in_transaction: false,
        })
    }

    /// The committed checkpoint, or None before the first batch.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self
            .conn
            .query_row("SELECT commit_position, prepare_position, events FROM _projector_checkpoint WHERE id = 0", [], |r| {
                Ok(Checkpoint {
                    position: Position { commit: r.get::<_, i64>(0)? as u64, prepare: r.get::<_, i64>(1)? as u64 },
                    events: r.get::<_, i64>(2)? as u64,
                })
            })
            .optional()?)
    }

    /// Read one row by primary key, through the open transaction.
    pub fn get(&mut self, table: &str, key: &[Value]) -> Result<Option<Vec<Value>>> {
        let Some((_, t)) = self.schema.table(table) else {
            anyhow::bail!("get: table `{table}` is not declared in the manifest");
        };
        if key.len() != t.primary_key.len() {
            anyhow::bail!(
                "get on `{table}`: the key has {} columns, got {} values",
                t.primary_key.len(),
                key.len()
            );
        }
        let mut stmt = self.conn.prepare_cached(&t.select_sql)?;
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

    /// Start a transaction that may span several batches (committed by [`Self::commit`]).
    pub fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN")?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Commit every batch applied since [`Self::begin`].
    pub fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            self.conn.execute_batch("COMMIT")?;
            self.in_transaction = false;
        }
        Ok(())
    }

    /// Validate every op, then apply them and the checkpoint inside one savepoint:
    /// the batch lands whole or not at all. Returns the number of ops written.
    pub fn apply_batch(
        &mut self,
        ops: &[Op],
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
        self.conn.execute_batch("SAVEPOINT batch")?;
        match self.write(ops, &plan, checkpoint) {
            Ok(()) => {
                self.conn.execute_batch("RELEASE batch")?;
                Ok(ops.len())
            }
            Err(e) => {
                self.conn
                    .execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                Err(e)
            }
        }
    }

    /// Record an event the projection could not handle (in the open transaction).
    pub fn dead_letter(
        &mut self,
        position: Position,
        event: Option<&crate::runtime::wit::Event>,
        error: &str,
    ) -> Result<()> {
        self.conn
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
    pub fn dead_letters(&self) -> Result<Vec<(i64, Position)>> {
        let mut stmt = self
            .conn
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
        match error {
            None => self.conn.execute(
                "DELETE FROM _projector_dead_letters WHERE rowid = ?1",
                [rowid],
            )?,
            Some(e) => self.conn.execute(
                "UPDATE _projector_dead_letters SET error = ?2 WHERE rowid = ?1",
                params![rowid, e],
            )?,
        };
        Ok(())
    }

    fn write(
        &mut self,
        ops: &[Op],
        plan: &[(usize, Vec<usize>)],
        cp: Checkpoint,
    ) -> Result<(), OpError> {
        for (op, (table, delta_cols)) in ops.iter().zip(plan) {
            let t: &TableSchema = &self.schema.tables[*table];
            match op {
                Op::Upsert(r) => {
                    let mut stmt = self.conn.prepare_cached(&t.upsert_sql)?;
                    for (i, v) in r.row.iter().enumerate() {
                        stmt.raw_bind_parameter(i + 1, Sql(v))?;
                    }
                    stmt.raw_execute()?;
                }
                Op::Delete(k) => {
                    let mut stmt = self.conn.prepare_cached(&t.delete_sql)?;
                    for (i, v) in k.key.iter().enumerate() {
                        stmt.raw_bind_parameter(i + 1, Sql(v))?;
                    }
                    stmt.raw_execute()?;
                }
                Op::Increment(a) => {
                    let sql = self
                        .increment_sql
                        .entry((*table, delta_cols.clone()))
                        .or_insert_with(|| t.increment_sql(delta_cols));
                    let mut stmt = self.conn.prepare_cached(sql)?;
                    let n = a.key.len();
                    for (i, v) in a.key.iter().enumerate() {
                        stmt.raw_bind_parameter(i + 1, Sql(v))?;
                    }
                    for (i, d) in a.deltas.iter().enumerate() {
                        stmt.raw_bind_parameter(n + i + 1, Sql(&d.by))?;
                    }
                    stmt.raw_execute()?;
                }
            }
        }
        let mut stmt = self.conn.prepare_cached(
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
}

impl Drop for ProjectionDb {
    fn drop(&mut self) {
        // Uncommitted batches are simply not there on the next start; say so if it happens.
        if self.in_transaction {
            tracing::debug!(projection = %self.schema.name, "closing with an open transaction: rolled back");
        }
    }
}

/// Check an op against the declared tables; returns (table index, delta column indexes).
fn validate(
    schema: &Schema,
    index: usize,
    op: &Op,
    limits: OpLimits,
) -> Result<(usize, Vec<usize>), OpError> {
    let name = match op {
        Op::Upsert(r) => &r.table,
        Op::Delete(k) => &k.table,
        Op::Increment(a) => &a.table,
    };
    let Some((ti, t)) = schema.table(name) else {
        return Err(OpError::UndeclaredTable {
            index,
            table: name.clone(),
        });
    };
    let invalid = |reason: String| OpError::Invalid {
        index,
        table: name.clone(),
        reason,
    };
    let check_key = |key: &[Value]| -> Result<(), OpError> {
        if key.len() != t.primary_key.len() {
            return Err(invalid(format!(
                "the key has {} columns, got {} values",
                t.primary_key.len(),
                key.len()
            )));
        }
        for (v, &c) in key.iter().zip(&t.primary_key) {
            check_value(&t.columns[c], v, limits).map_err(invalid)?;
        }
        Ok(())
    };
    match op {
        Op::Upsert(r) => {
            if r.row.len() != t.columns.len() {
                return Err(invalid(format!(
                    "the table has {} columns, the row has {} values",
                    t.columns.len(),
                    r.row.len()
                )));
            }
            for (v, c) in r.row.iter().zip(&t.columns) {
                check_value(c, v, limits).map_err(invalid)?;
            }
            let bytes: usize = r
                .row
                .iter()
                .map(|v| match v {
                    Value::Text(s) => s.len(),
                    Value::Blob(b) => b.len(),
                    _ => 0,
                })
                .sum();
            if bytes > limits.max_row_bytes {
                return Err(invalid(format!(
                    "row of {bytes} bytes is over the {} byte limit",
                    limits.max_row_bytes
                )));
            }
            Ok((ti, Vec::new()))
        }
        Op::Delete(k) => {
            check_key(&k.key)?;
            Ok((ti, Vec::new()))
        }
        Op::Increment(a) => {
            check_key(&a.key)?;
            if a.deltas.is_empty() {
                return Err(invalid("increment with no deltas".into()));
            }
            let mut cols = Vec::with_capacity(a.deltas.len());
            for d in &a.deltas {
                let Some(&c) = t.by_name.get(&d.column) else {
                    return Err(invalid(format!("no column `{}`", d.column)));
                };
                if t.primary_key.contains(&c) || cols.contains(&c) {
                    return Err(invalid(format!(
                        "column `{}` cannot be incremented here",
                        d.column
                    )));
                }
                let numeric = match (t.columns[c].kind, &d.by) {
                    (ColumnKind::Integer, Value::Integer(_)) => true,
                    (ColumnKind::Real, Value::Integer(_)) => true,
                    (ColumnKind::Real, Value::Real(r)) => r.is_finite(),
                    _ => false,
                };
                if !numeric {
                    return Err(invalid(format!(
                        "column `{}` cannot be incremented by {}",
                        d.column,
                        describe(&d.by)
                    )));
                }
                cols.push(c);
            }
            Ok((ti, cols))
        }
    }
}

/// The catalog: which version of each projection serves queries, and how it is doing.
pub struct Catalog {
    conn: Connection,
}

/// A projection's state as recorded in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The projection.
    pub name: String,
    /// The version queries read, once one has caught up.
    pub serving_version: Option<u32>,
    /// Which build of the serving version (0, or the count of replays of that version).
    pub serving_generation: u32,
    /// `running`, `caught-up`, `stopped` or `faulted`.
    pub state: String,
    /// Why it faulted.
    pub reason: Option<String>,
    /// The version last started.
    pub running_version: Option<u32>,
    /// SHA-256 of the module last started.
    pub module_sha256: Option<String>,
    /// Accounting at the last commit: events read, ops written, fuel used, peak memory
    /// in bytes, events skipped or dead-lettered.
    pub accounting: [u64; 5],
}

impl Catalog {
    /// Open (or create) the catalog under `data`.
    pub fn open(data: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating data dir {}", data.display()))?;
        let path = data.join("catalog.sqlite");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        tune(&conn)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS projections (
                 name TEXT PRIMARY KEY, serving_version INTEGER, running_version INTEGER,
                 module_sha256 TEXT, state TEXT NOT NULL, reason TEXT,
                 events_read INTEGER NOT NULL DEFAULT 0, ops_written INTEGER NOT NULL DEFAULT 0,
                 fuel_used INTEGER NOT NULL DEFAULT 0, peak_memory_bytes INTEGER NOT NULL DEFAULT 0,
                 failed_events INTEGER NOT NULL DEFAULT 0,
                 serving_generation INTEGER NOT NULL DEFAULT 0)",
        )?;
        // Catalogs written before replays existed lack the generation column.
        let has_generation = conn
            .prepare(
                "SELECT 1 FROM pragma_table_info('projections') WHERE name = 'serving_generation'",
            )?
            .exists([])?;
        if !has_generation {
            conn.execute_batch(
                "ALTER TABLE projections ADD COLUMN serving_generation INTEGER NOT NULL DEFAULT 0",
            )?;
        }
        Ok(Catalog { conn })
    }

    /// Open the catalog read-only (for queries).
    pub fn open_read_only(data: &Path) -> Result<Catalog> {
        let path = data.join("catalog.sqlite");
        if !path.exists() {
            anyhow::bail!(
                "no Projector data in {} (no catalog.sqlite): run `projector run` first",
                data.display()
            );
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Catalog { conn })
    }

    /// Record that `version` of `name` is running; it serves at once if nothing else does.
    pub fn started(&self, name: &str, version: u32, module_sha256: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO projections (name, serving_version, running_version, module_sha256, state, reason)
             VALUES (?1, ?2, ?2, ?3, 'running', NULL)
             ON CONFLICT (name) DO UPDATE SET running_version = ?2, module_sha256 = ?3, state = 'running', reason = NULL",
            params![name, version, module_sha256],
        )?;
        Ok(())
    }

    /// Clear a fault or a pause so the next start runs the projection again; false if it
    /// was neither faulted nor paused.
    pub fn resume(&self, name: &str) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE projections SET state = 'resumed', reason = NULL WHERE name = ?1 AND state IN ('faulted', 'paused')",
            [name],
        )?;
        Ok(changed == 1)
    }

    /// Record a projection's accounting (for status pages; written at each commit).
    pub fn account(&self, name: &str, stats: &crate::runner::Stats) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        self.conn.execute(
            "UPDATE projections SET events_read = ?2, ops_written = ?3, fuel_used = ?4,
               peak_memory_bytes = ?5, failed_events = ?6 WHERE name = ?1",
            params![
                name,
                stats.events_read.load(Relaxed) as i64,
                stats.ops_written.load(Relaxed) as i64,
                stats.fuel_used.load(Relaxed) as i64,
                stats.peak_memory.load(Relaxed) as i64,
                stats.events_failed.load(Relaxed) as i64
            ],
        )?;
        Ok(())
    }

    /// Point readers at build `generation` of `version` (atomic: one row update).
    pub fn serve(&self, name: &str, version: u32, generation: u32) -> Result<()> {
        self.conn.execute(
            "UPDATE projections SET serving_version = ?2, serving_generation = ?3 WHERE name = ?1",
            params![name, version, generation],
        )?;
        Ok(())
    }

    /// A rebuilt version takes over: it serves and runs, in one row update.
    pub fn cut_over(
        &self,
        name: &str,
        version: u32,
        generation: u32,
        module_sha256: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO projections (name, serving_version, serving_generation, running_version, module_sha256, state)
             VALUES (?1, ?2, ?3, ?2, ?4, 'caught-up')
             ON CONFLICT (name) DO UPDATE SET serving_version = ?2, serving_generation = ?3,
               running_version = ?2, module_sha256 = ?4, state = 'caught-up', reason = NULL",
            params![name, version, generation, module_sha256],
        )?;
        Ok(())
    }

    /// The build of `version` a runner continues: the serving one, else the first.
    pub fn generation_of(&self, name: &str, version: u32) -> Result<u32> {
        Ok(self
            .entry(name)?
            .filter(|e| e.serving_version == Some(version))
            .map_or(0, |e| e.serving_generation))
    }

    /// Forget a projection (its files are removed by the caller).
    pub fn forget(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM projections WHERE name = ?1", [name])?
            == 1)
    }

    /// Record a state change (`caught-up`, `stopped`, `faulted`) with its reason.
    pub fn set_state(&self, name: &str, state: &str, reason: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE projections SET state = ?2, reason = ?3 WHERE name = ?1",
            params![name, state, reason],
        )?;
        Ok(())
    }

    /// One projection's entry.
    pub fn entry(&self, name: &str) -> Result<Option<CatalogEntry>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, serving_version, state, reason, running_version, module_sha256,
                        events_read, ops_written, fuel_used, peak_memory_bytes, failed_events,
                        serving_generation
                 FROM projections WHERE name = ?1",
                [name],
                |r| {
                    Ok(CatalogEntry {
                        name: r.get(0)?,
                        serving_version: r.get(1)?,
                        serving_generation: r.get(11)?,
                        state: r.get(2)?,
                        reason: r.get(3)?,
                        running_version: r.get(4)?,
                        module_sha256: r.get(5)?,
                        accounting: [6, 7, 8, 9, 10]
                            .map(|i| r.get::<_, i64>(i).unwrap_or(0) as u64),
                    })
                },
            )
            .optional()?)
    }
}
