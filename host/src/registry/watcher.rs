//! Watching the modules folder: which `*.wasm` files appeared, changed (and have stopped
//! changing for `debounce_ms`) or went away. It only signals; the registry decides what
//! a change means. Filesystem notifications wake the registry early; the rescan is what
//! decides, so a missed notification only delays a change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};

use crate::config::WatchMode;

/// What the folder scan compares: size and modification time.
pub type Fingerprint = (u64, Option<SystemTime>);

/// A change in the modules folder.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A file is new or changed and has stayed the same for the debounce time.
    Settled(PathBuf, Fingerprint),
    /// A file went away.
    Removed(PathBuf),
}

/// The folder's files as last signalled, and changes waiting to settle.
pub struct Watcher {
    dir: PathBuf,
    debounce: Duration,
    /// Files signalled, by the fingerprint they had then.
    known: BTreeMap<PathBuf, Fingerprint>,
    /// Changed files waiting to stop changing: fingerprint and when it was first seen.
    pending: BTreeMap<PathBuf, (Fingerprint, Instant)>,
}

impl Watcher {
    /// A watcher of `dir`; nothing is known yet.
    pub fn new(dir: &Path, debounce: Duration) -> Watcher {
        Watcher {
            dir: dir.to_path_buf(),
            debounce,
            known: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Every module file now, marked as known (for the first load, with no debounce).
    pub fn initial(&mut self) -> Result<Vec<(PathBuf, Fingerprint)>> {
        let files = scan(&self.dir)?;
        for (p, fp) in &files {
            self.known.insert(p.clone(), *fp);
        }
        Ok(files)
    }

    /// Compare the folder with what was signalled: removals at once, changes once they
    /// have settled.
    pub fn poll(&mut self) -> Result<Vec<Change>> {
        let now: BTreeMap<PathBuf, Fingerprint> = scan(&self.dir)?.into_iter().collect();
        let mut changes = Vec::new();
        let gone: Vec<PathBuf> = self
            .known
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            self.known.remove(&path);
            changes.push(Change::Removed(path));
        }
        self.pending.retain(|p, _| now.contains_key(p));
        for (path, fp) in now {
            if self.known.get(&path) == Some(&fp) {
                continue;
            }
            match self.pending.get(&path) {
                Some((seen, since)) if *seen == fp => {
                    if since.elapsed() >= self.debounce {
                        self.pending.remove(&path);
                        self.known.insert(path.clone(), fp);
                        changes.push(Change::Settled(path, fp));
                    }
                }
                _ => {
                    self.pending.insert(path, (fp, Instant::now()));
                }
            }
        }
        Ok(changes)
    }
}

/// Filesystem notifications for `dir`, each calling `wake`; None when polling is
/// configured or notifications are unavailable. Keep the value alive while watching.
pub fn notify<T: Send + 'static>(
    dir: &Path,
    mode: WatchMode,
    poll_ms: u64,
    tx: Sender<T>,
    wake: fn() -> T,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    if mode == WatchMode::Poll {
        return None;
    }
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading the folder is an event too (the rescan itself makes them):
        // waking on those would turn the loop as fast as it can rescan.
        if event.is_ok_and(|e| e.kind.is_access()) {
            return;
        }
        let _ = tx.send(wake());
    })
    .and_then(|mut w| {
        w.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(folder = %dir.display(), "no filesystem notifications ({e}); polling every {poll_ms} ms");
            None
        }
    }
}

/// The `*.wasm` files of `dir` with their fingerprints, sorted.
pub fn scan(dir: &Path) -> Result<Vec<(PathBuf, Fingerprint)>> {
    let mut files: Vec<(PathBuf, Fingerprint)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading modules folder {}", dir.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            let meta = e.metadata().ok()?;
            (path.extension().is_some_and(|x| x == "wasm") && meta.is_file())
                .then(|| (path, (meta.len(), meta.modified().ok())))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_signalled_once_it_settles_and_a_removal_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.wasm");
        std::fs::write(&a, b"1").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        let mut w = Watcher::new(dir.path(), Duration::from_millis(30));
        assert_eq!(w.initial().expect("scan").len(), 1, "only *.wasm files");
        assert!(w.poll().expect("poll").is_empty(), "nothing changed");
        std::fs::write(&a, b"22").expect("write");
        assert!(w.poll().expect("poll").is_empty(), "not settled yet");
        std::thread::sleep(Duration::from_millis(40));
        let changes = w.poll().expect("poll");
        assert!(
            matches!(&changes[..], [Change::Settled(p, (2, _))] if p == &a),
            "{changes:?}"
        );
        assert!(w.poll().expect("poll").is_empty(), "signalled once");
        std::fs::remove_file(&a).expect("remove");
        assert_eq!(w.poll().expect("poll"), vec![Change::Removed(a)]);
    }
}
