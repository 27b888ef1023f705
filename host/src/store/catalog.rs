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

/// One build of a projection: version, generation, and the module it was made with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Build {
    /// The manifest version.
    pub version: u32,
    /// Which build of that version.
    pub generation: u32,
    /// SHA-256 of its module.
    pub sha256: String,
}

/// A build held back from taking over by the release rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The held build.
    pub build: Build,
    /// Which rules held it.
    pub reason: String,
    /// The comparison with the serving build, as JSON.
    pub comparison: String,
}

/// A projection's release record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// A build waiting for `projector promote`.
    pub held: Option<Held>,
    /// The build a rollback stepped back from (its module is not run again until new
    /// code ships or `projector promote`).
    pub rolled_back: Option<Build>,
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

/// A module file the running host refused: what `projector status` and
/// `GET /api/modules/refused` show until the file loads or is removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefusedModule {
    /// The file, as the host found it in its modules folder.
    pub file: String,
    /// Why it was refused (what was wrong, and where).
    pub reason: String,
    /// When, in milliseconds since the epoch.
    pub since_ms: i64,
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        // Releases: a held build waiting for `promote`, and the build a rollback left.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS releases (
                 name TEXT PRIMARY KEY, held_version INTEGER, held_generation INTEGER,
                 held_sha256 TEXT, held_reason TEXT, comparison TEXT,
                 rolled_back_version INTEGER, rolled_back_generation INTEGER,
                 rolled_back_sha256 TEXT, previous_version INTEGER, previous_generation INTEGER,
                 failed_rebuild TEXT)",
        )?;
        // Module files the running host refused, until they load or go.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS refused_modules (
                 file TEXT PRIMARY KEY, reason TEXT NOT NULL, since_ms INTEGER NOT NULL)",
        )?;
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
        // Remember what served until now: the build `rollback` returns to.
        if let Some(e) = self.entry(name)?
            && let Some(v) = e.serving_version
            && (v, e.serving_generation) != (version, generation)
        {
            self.conn.execute(
                "INSERT INTO releases (name, previous_version, previous_generation) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET previous_version = ?2, previous_generation = ?3",
                params![name, v, e.serving_generation],
            )?;
        }
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

    /// The release record of `name`: a held build, a rolled-back build.
    pub fn release(&self, name: &str) -> Result<Release> {
        let row = self
            .conn
            .query_row(
                "SELECT held_version, held_generation, held_sha256, held_reason, comparison,
                        rolled_back_version, rolled_back_generation, rolled_back_sha256
                 FROM releases WHERE name = ?1",
                [name],
                |r| {
                    let held = match (
                        r.get::<_, Option<u32>>(0)?,
                        r.get::<_, Option<u32>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ) {
                        (Some(version), Some(generation), Some(sha256)) => Some(Held {
                            build: Build {
                                version,
                                generation,
                                sha256,
                            },
                            reason: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            comparison: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        }),
                        _ => None,
                    };
                    let rolled_back = match (
                        r.get::<_, Option<u32>>(5)?,
                        r.get::<_, Option<u32>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ) {
                        (Some(version), Some(generation), Some(sha256)) => Some(Build {
                            version,
                            generation,
                            sha256,
                        }),
                        _ => None,
                    };
                    Ok(Release { held, rolled_back })
                },
            )
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    /// The build that served before the serving one (set at each cutover).
    pub fn previous(&self, name: &str) -> Result<Option<(u32, u32)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT previous_version, previous_generation FROM releases WHERE name = ?1",
                [name],
                |r| Ok(r.get::<_, Option<u32>>(0)?.zip(r.get::<_, Option<u32>>(1)?)),
            )
            .optional()?
            .flatten())
    }

    /// Record a build held back from taking over (None: nothing is held).
    pub fn set_held(&self, name: &str, held: Option<&Held>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO releases (name, held_version, held_generation, held_sha256, held_reason, comparison)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET held_version = ?2, held_generation = ?3,
               held_sha256 = ?4, held_reason = ?5, comparison = ?6",
            params![
                name,
                held.map(|h| h.build.version),
                held.map(|h| h.build.generation),
                held.map(|h| h.build.sha256.as_str()),
                held.map(|h| h.reason.as_str()),
                held.map(|h| h.comparison.as_str())
            ],
        )?;
        Ok(())
    }

    /// Record the build a rollback stepped back from (None: no rollback stands).
    pub fn set_rolled_back(&self, name: &str, build: Option<&Build>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO releases (name, rolled_back_version, rolled_back_generation, rolled_back_sha256)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET rolled_back_version = ?2,
               rolled_back_generation = ?3, rolled_back_sha256 = ?4",
            params![
                name,
                build.map(|b| b.version),
                build.map(|b| b.generation),
                build.map(|b| b.sha256.as_str())
            ],
        )?;
        Ok(())
    }

    /// Record why a rebuild beside the serving build failed (None: clear it).
    pub fn set_failed_rebuild(&self, name: &str, reason: Option<&str>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO releases (name, failed_rebuild) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET failed_rebuild = ?2",
            params![name, reason],
        )?;
        Ok(())
    }

    /// Why the last rebuild beside the serving build failed, if it did.
    pub fn failed_rebuild(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT failed_rebuild FROM releases WHERE name = ?1",
                [name],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Record that the host refused module `file` (None: it loaded, or it is gone).
    pub fn set_refused(&self, file: &str, reason: Option<&str>) -> Result<()> {
        match reason {
            Some(reason) => self.conn.execute(
                // Refused again for the same reason: refused since the first time.
                "INSERT INTO refused_modules (file, reason, since_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (file) DO UPDATE
                 SET since_ms = CASE WHEN reason = ?2 THEN since_ms ELSE ?3 END, reason = ?2",
                params![file, reason, now_ms()],
            )?,
            None => self
                .conn
                .execute("DELETE FROM refused_modules WHERE file = ?1", [file])?,
        };
        Ok(())
    }

    /// Forget every refusal (a host starting judges every file again).
    pub fn clear_refused(&self) -> Result<()> {
        self.conn.execute("DELETE FROM refused_modules", [])?;
        Ok(())
    }

    /// The module files the host refused and has not loaded since, by file name.
    pub fn refused(&self) -> Result<Vec<RefusedModule>> {
        // A catalog written before refusals were recorded has no such table.
        let exists = self
            .conn
            .prepare("SELECT 1 FROM sqlite_master WHERE name = 'refused_modules'")?
            .exists([])?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT file, reason, since_ms FROM refused_modules ORDER BY file")?;
        let rows = stmt.query_map([], |r| {
            Ok(RefusedModule {
                file: r.get(0)?,
                reason: r.get(1)?,
                since_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Names of projections that are faulted or paused.
    pub fn stuck(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM projections WHERE state IN (?1, ?2) ORDER BY name")?;
        let names = stmt
            .query_map(
                params![ProjectionState::Faulted, ProjectionState::Paused],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_shows_until_cleared_and_keeps_its_time_while_its_reason_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Catalog::open(dir.path()).expect("catalog");
        c.set_refused("m/a.wasm", Some("broken")).expect("refuse");
        c.set_refused("m/b.wasm", Some("tables changed"))
            .expect("refuse");
        let files = |c: &Catalog| -> Vec<(String, String)> {
            let list = c.refused().expect("list");
            list.into_iter().map(|r| (r.file, r.reason)).collect()
        };
        assert_eq!(
            files(&c),
            [
                ("m/a.wasm".to_string(), "broken".to_string()),
                ("m/b.wasm".to_string(), "tables changed".to_string())
            ]
        );
        // Refused since long ago: the same reason again keeps the time, another sets it.
        c.conn
            .execute("UPDATE refused_modules SET since_ms = 1", [])
            .expect("age");
        c.set_refused("m/a.wasm", Some("broken")).expect("again");
        c.set_refused("m/b.wasm", Some("not a component"))
            .expect("other");
        let since: Vec<i64> = c
            .refused()
            .expect("list")
            .iter()
            .map(|r| r.since_ms)
            .collect();
        assert_eq!(since[0], 1, "same reason: refused since the first time");
        assert!(since[1] > 1, "another reason: refused since now");
        c.set_refused("m/a.wasm", None).expect("loaded");
        assert_eq!(files(&c).len(), 1);
        c.clear_refused().expect("host start");
        assert!(files(&c).is_empty());
    }
}
