//! The catalog: which build of each projection serves queries, and its state.
//! One writer records into it (the registry, or an offline command holding the host
//! lock); runners only report.

use std::path::Path;

use anyhow::{Context as _, Result};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};

use super::db::tune;

/// Where a projection stands, as the catalog records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectionState {
    /// Started; catching up with the source (or rebuilding its serving build).
    Running,
    /// Has reached the end of the source; follows it live.
    CaughtUp,
    /// Stopped at a position by `replay --until`; its tables serve as of there. Holds
    /// across restarts until `projector resume` (or another replay).
    Paused,
    /// A fault or a pause was cleared by `projector resume`; it runs at the next start
    /// (at once, with a host running).
    Resumed,
    /// Stopped cleanly: the host shut down or its module was removed.
    Stopped,
    /// Stopped by an error (the reason says which event and why). Sticky: the same
    /// module is not run again until new code ships or `projector resume`.
    Faulted,
}

impl ProjectionState {
    /// The name stored in the catalog and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionState::Running => "running",
            ProjectionState::CaughtUp => "caught-up",
            ProjectionState::Paused => "paused",
            ProjectionState::Resumed => "resumed",
            ProjectionState::Stopped => "stopped",
            ProjectionState::Faulted => "faulted",
        }
    }

    /// Every state, in the order above.
    pub const ALL: [ProjectionState; 6] = [
        ProjectionState::Running,
        ProjectionState::CaughtUp,
        ProjectionState::Paused,
        ProjectionState::Resumed,
        ProjectionState::Stopped,
        ProjectionState::Faulted,
    ];
}

impl std::fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for ProjectionState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for ProjectionState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = v.as_str()?;
        ProjectionState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown projection state {text:?}").into()))
    }
}

/// A projection's counters as last recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Events read from the source (matched or not).
    pub events_read: u64,
    /// Ops written to the read model.
    pub ops_written: u64,
    /// Fuel the module consumed.
    pub fuel_used: u64,
    /// Largest linear memory an instance grew to, in bytes.
    pub peak_memory: u64,
    /// Events skipped or dead-lettered under the error policy.
    pub events_failed: u64,
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
    /// Where it stands.
    pub state: ProjectionState,
    /// Why it faulted or paused.
    pub reason: Option<String>,
    /// The version last started.
    pub running_version: Option<u32>,
    /// SHA-256 of the module last started.
    pub module_sha256: Option<String>,
    /// Counters as last recorded.
    pub accounting: Accounting,
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
             VALUES (?1, ?2, ?2, ?3, ?4, NULL)
             ON CONFLICT (name) DO UPDATE SET running_version = ?2, module_sha256 = ?3, state = ?4, reason = NULL",
            params![name, version, module_sha256, ProjectionState::Running],
        )?;
        Ok(())
    }

    /// Clear a fault or a pause so the next start runs the projection again; false if it
    /// was neither faulted nor paused.
    pub fn resume(&self, name: &str) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE projections SET state = ?2, reason = NULL WHERE name = ?1 AND state IN (?3, ?4)",
            params![
                name,
                ProjectionState::Resumed,
                ProjectionState::Faulted,
                ProjectionState::Paused
            ],
        )?;
        Ok(changed == 1)
    }

    /// Record a projection's accounting (for status pages; written at each commit).
    pub fn account(&self, name: &str, a: Accounting) -> Result<()> {
        self.conn.execute(
            "UPDATE projections SET events_read = ?2, ops_written = ?3, fuel_used = ?4,
               peak_memory_bytes = ?5, failed_events = ?6 WHERE name = ?1",
            params![
                name,
                a.events_read as i64,
                a.ops_written as i64,
                a.fuel_used as i64,
                a.peak_memory as i64,
                a.events_failed as i64
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
             VALUES (?1, ?2, ?3, ?2, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET serving_version = ?2, serving_generation = ?3,
               running_version = ?2, module_sha256 = ?4, state = ?5, reason = NULL",
            params![name, version, generation, module_sha256, ProjectionState::CaughtUp],
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

    /// Record a state change with its reason.
    pub fn set_state(
        &self,
        name: &str,
        state: ProjectionState,
        reason: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE projections SET state = ?2, reason = ?3 WHERE name = ?1",
            params![name, state, reason],
        )?;
        Ok(())
    }

    /// Every projection's entry, by name.
    pub fn entries(&self) -> Result<Vec<CatalogEntry>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM projections ORDER BY name")?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for n in names {
            out.extend(self.entry(&n)?);
        }
        Ok(out)
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
                        accounting: Accounting {
                            events_read: r.get::<_, i64>(6)? as u64,
                            ops_written: r.get::<_, i64>(7)? as u64,
                            fuel_used: r.get::<_, i64>(8)? as u64,
                            peak_memory: r.get::<_, i64>(9)? as u64,
                            events_failed: r.get::<_, i64>(10)? as u64,
                        },
                    })
                },
            )
            .optional()?)
    }
}
