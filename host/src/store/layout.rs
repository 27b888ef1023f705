//! The data folder's layout: where each build's database lives, which builds exist,
//! deleting old ones, and the lock one host holds on the folder.
//!
//! - `catalog.sqlite`: which build of each projection serves, and its state;
//! - `<projection>/v<version>.sqlite`: the first build of a version;
//! - `<projection>/v<version>.<generation>.sqlite`: each replay of the same version;
//! - `host.lock`: held by the running host.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::Catalog;

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

/// After a cutover: delete every build of `name` but the serving one and `keep` others
/// (the one that served last first, then the newest), kept for rollback. Returns the builds deleted.
pub fn prune_builds(data: &Path, name: &str, keep: usize) -> Result<Vec<(u32, u32)>> {
    let catalog = Catalog::open(data)?;
    let serving = catalog
        .entry(name)?
        .and_then(|e| Some((e.serving_version?, e.serving_generation)));
    let previous = catalog.previous(name)?;
    let mut old: Vec<(u32, u32)> = builds_on_disk(data, name)
        .into_iter()
        .filter(|b| Some(*b) != serving)
        .collect();
    // Newest first, but the build that served last comes first of all (rollback's target).
    old.reverse();
    old.sort_by_key(|b| Some(*b) != previous);
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

/// The module a build was made with, kept beside its database (for rollback).
pub fn module_path(data: &Path, name: &str, version: u32, generation: u32) -> PathBuf {
    build_path(data, name, version, generation).with_extension("wasm")
}

/// Keep `bytes` as the module of a build (once: a build's module never changes hash
/// without a swap, and a swapped-in module replaces it).
pub fn keep_module(
    data: &Path,
    name: &str,
    version: u32,
    generation: u32,
    bytes: &[u8],
) -> Result<()> {
    let path = module_path(data, name, version, generation);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::runtime::write_atomic(&path, bytes)
}

/// Delete one build's files (database, WAL, shared memory and its module).
pub fn remove_build(data: &Path, name: &str, version: u32, generation: u32) -> Result<()> {
    let db = build_path(data, name, version, generation);
    let module = module_path(data, name, version, generation);
    let _ = std::fs::remove_file(module);
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
