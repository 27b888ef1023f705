//! `projector verify`: run a module twice over the same events, with different batch
//! boundaries, and compare a content hash of every table it owns. Equal hashes mean
//! the read model depends on the events alone (no hidden state, no batching effects).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::config::{BatchSettings, Config};
use crate::runtime::{Limits, Runtime};
use crate::schema::Schema;
use crate::store::version_path;

/// Row count and content hash of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// SHA-256 of its rows in key order.
    pub sha256: String,
}

/// The two runs' digests.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The projection.
    pub projection: String,
    /// Each run's tables.
    pub runs: [Vec<TableDigest>; 2],
}

impl VerifyReport {
    /// True when both runs produced identical tables.
    pub fn deterministic(&self) -> bool {
        self.runs[0] == self.runs[1]
    }
}

/// Hash every declared table of `schema`'s version under `data`, rows in key order.
pub fn digest(data: &Path, schema: &Schema) -> Result<Vec<TableDigest>> {
    let path = version_path(data, &schema.name, schema.version);
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for t in &schema.tables {
        let cols = t
            .columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let key = t
            .primary_key
            .iter()
            .map(|&i| format!("\"{}\"", t.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt =
            conn.prepare(&format!("SELECT {cols} FROM \"{}\" ORDER BY {key}", t.name))?;
        let mut rows = stmt.query([])?;
        let (mut h, mut n) = (Sha256::new(), 0u64);
        while let Some(row) = rows.next()? {
            n += 1;
            for i in 0..t.columns.len() {
                match row.get_ref(i)? {
                    ValueRef::Null => h.update([0]),
                    ValueRef::Integer(v) => {
                        h.update([1]);
                        h.update(v.to_le_bytes());
                    }
                    ValueRef::Real(v) => {
                        h.update([2]);
                        h.update(v.to_bits().to_le_bytes());
                    }
                    ValueRef::Text(b) | ValueRef::Blob(b) => {
                        h.update([3]);
                        h.update((b.len() as u64).to_le_bytes());
                        h.update(b);
                    }
                }
            }
        }
        out.push(TableDigest {
            table: t.name.clone(),
            rows: n,
            sha256: hex::encode(h.finalize()),
        });
    }
    Ok(out)
}

/// Run `module` over `source` twice (batches of `batch_sizes[0]`, then `[1]` events)
/// in temporary data folders and hash the resulting tables.
pub fn verify(
    module: &Path,
    source: &str,
    limits: Limits,
    batch_sizes: [usize; 2],
) -> Result<VerifyReport> {
    let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let schema = Runtime::new(limits.clone(), None)?
        .load(&wasm)?
        .schema()
        .clone();
    let work = tempfile::tempdir().context("creating a temporary folder")?;
    let mut runs = Vec::new();
    for (i, max_events) in batch_sizes.into_iter().enumerate() {
        let data = work.path().join(format!("run{i}"));
        run_into(&wasm, source, &limits, max_events, &data)
            .with_context(|| format!("run {}", i + 1))?;
        runs.push(digest(&data, &schema)?);
    }
    let second = runs.pop().unwrap_or_default();
    let first = runs.pop().unwrap_or_default();
    Ok(VerifyReport {
        projection: schema.name.clone(),
        runs: [first, second],
    })
}

/// Run one module over `source` to its end, into the data folder `data` (its modules
/// folder is made inside it). Fails if the module faults.
pub fn run_into(
    wasm: &[u8],
    source: &str,
    limits: &Limits,
    max_events: usize,
    data: &Path,
) -> Result<()> {
    let modules = data.join("modules");
    std::fs::create_dir_all(&modules).with_context(|| format!("creating {}", modules.display()))?;
    std::fs::write(modules.join("module.wasm"), wasm)?;
    let config = Config {
        source: source.to_string(),
        data: data.to_path_buf(),
        modules,
        batch: BatchSettings {
            max_events,
            // Fixed boundaries, so a difference found is found again.
            adaptive: false,
            ..BatchSettings::default()
        },
        limits: limits.clone(),
        projections: Default::default(),
        reload: Default::default(),
        reconnect: Default::default(),
        http: Default::default(),
        cache: None,
        release: Default::default(),
        cluster: Default::default(),
    };
    let options = crate::RunOptions {
        once: true,
        progress: false,
    };
    let summary = crate::host::run(&config, options, Arc::new(AtomicBool::new(false)))?;
    if let Some(e) = summary.projections.iter().find_map(|p| p.error.clone()) {
        anyhow::bail!("{e}");
    }
    if let Some((path, e)) = summary.rejected.first() {
        anyhow::bail!("{}: {e}", path.display());
    }
    Ok(())
}
