//! The registry: which module file provides which projection, and the runners that run
//! them. As module files come, change and go, it starts, swaps, rebuilds and stops
//! projections; whatever runs keeps running when a new module is refused.
//!
//! What a new module does, by what it shares with the running one:
//! - a new projection name → a runner starts (from its checkpoint, if it has one);
//! - same name and version, new code → the runner swaps it in at its next batch
//!   boundary and continues from its checkpoint (tables and interests must not change);
//! - same name, another version → a *shadow* runner rebuilds that version in its own
//!   file from the first event while the old one keeps serving; once caught up it cuts
//!   over (one catalog update) and the old runner stops; old files beyond
//!   `keep_versions` are deleted;
//! - file removed → the projection stops; its tables stay until `projector drop`.
//!
//! Changes are noticed by rescanning the folder (file size and mtime), woken early by
//! filesystem notifications; a changed file is loaded once it has stopped changing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};

use crate::config::{Config, WatchMode};
use crate::host::ProjectionReport;
use crate::runner::{Control, Runner, Stats};
use crate::runtime::{Module, Runtime};

/// What the folder scan compares: size and modification time.
type Fingerprint = (u64, Option<SystemTime>);

/// Messages to the registry loop.
enum Msg {
    /// Something changed in the folder: rescan now.
    Wake,
    /// A module finished compiling (off the registry thread).
    Loaded(PathBuf, Fingerprint, Result<Module>),
}

/// One running runner thread.
struct RunnerHandle {
    module: Arc<Module>,
    control: Arc<Control>,
    stats: Arc<Stats>,
    thread: JoinHandle<Result<()>>,
}

impl RunnerHandle {
    /// Ask the runner to stop, wait for it, and report how it ran.
    fn stop(self) -> ProjectionReport {
        self.control.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(self) -> ProjectionReport {
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("runner thread panicked")));
        ProjectionReport::of(&self.module, &self.stats, result.err())
    }
}

/// A projection and the file that provides it.
struct Slot {
    path: PathBuf,
    /// The runner that owns the catalog row (serving, or building the only version).
    primary: Option<RunnerHandle>,
    /// A new version rebuilding beside the primary.
    shadow: Option<RunnerHandle>,
}

/// What a loaded module does to the projection it names.
enum Action {
    /// The same code is already running.
    Unchanged,
    /// Refused, with the reason; what runs keeps running.
    Refuse(String),
    /// Same version, new code: hand it to this runner.
    Swap(Arc<Control>),
    /// Nothing runs for this projection: start it.
    Start,
    /// Another version: rebuild it beside the serving one.
    Rebuild,
}

/// The live counters of every runner started, for progress display.
pub type StatsList = Arc<Mutex<Vec<(String, Arc<Stats>)>>>;

/// Module files, projections and their runners.
pub struct Registry {
    runtime: Arc<Runtime>,
    config: Config,
    once: bool,
    shutdown: Arc<AtomicBool>,
    /// Files loaded or refused, by the fingerprint they had then.
    files: BTreeMap<PathBuf, Fingerprint>,
    /// Changed files waiting to stop changing: fingerprint and when it was first seen.
    pending: BTreeMap<PathBuf, (Fingerprint, Instant)>,
    /// Files being compiled off-thread.
    compiling: BTreeMap<PathBuf, Fingerprint>,
    slots: BTreeMap<String, Slot>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// Every runner's counters, for the progress display.
    pub stats: StatsList,
    /// Modules refused, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
    /// Runners that ended, with how.
    pub reports: Vec<ProjectionReport>,
}

impl Registry {
    /// A registry over `config.modules`; nothing is loaded yet.
    pub fn new(config: &Config, once: bool, shutdown: Arc<AtomicBool>) -> Result<Registry> {
        let runtime = Runtime::new(config.limits.clone(), Some(config.data.join("cache")))?;
        let (tx, rx) = channel();
        Ok(Registry {
            runtime: Arc::new(runtime),
            config: config.clone(),
            once,
            shutdown,
            files: BTreeMap::new(),
            pending: BTreeMap::new(),
            compiling: BTreeMap::new(),
            slots: BTreeMap::new(),
            tx,
            rx,
            stats: Arc::default(),
            rejected: Vec::new(),
            reports: Vec::new(),
        })
    }

    /// Load every module in the folder now (on this thread) and start their runners.
    pub fn load_all(&mut self) -> Result<()> {
        for (path, fp) in self.scan()? {
            let loaded = load(&self.runtime, &path);
            self.apply(path, fp, loaded)?;
        }
        Ok(())
    }

    /// True while any runner is running.
    pub fn running(&self) -> bool {
        self.slots
            .values()
            .any(|s| s.primary.is_some() || s.shadow.is_some())
    }

    /// Start watching the folder; keep the returned watcher alive while it should watch.
    pub fn watch(&self) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        if self.config.reload.watch == WatchMode::Poll {
            return None;
        }
        let tx = self.tx.clone();
        let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.send(Msg::Wake);
        })
        .and_then(|mut w| {
            w.watch(&self.config.modules, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(folder = %self.config.modules.display(), "no filesystem notifications ({e}); polling every {} ms", self.config.reload.poll_ms);
                None
            }
        }
    }

    /// One turn of the loop: wait up to `wait` for a change or a compiled module, apply
    /// what is ready, rescan the folder (unless `once`), and handle cutovers and exits.
    pub fn tick(&mut self, wait: Duration) -> Result<()> {
        match self.rx.recv_timeout(wait) {
            Ok(Msg::Loaded(path, fp, loaded)) => {
                self.compiling.remove(&path);
                self.apply(path, fp, loaded)?;
            }
            Ok(Msg::Wake) | Err(_) => {}
        }
        if !self.once {
            self.rescan()?;
        }
        self.supervise()
    }

    /// Stop every runner and wait for them.
    pub fn finish(&mut self) {
        let slots = std::mem::take(&mut self.slots);
        for slot in slots.into_values() {
            for h in [slot.shadow, slot.primary].into_iter().flatten() {
                self.reports.push(h.stop());
            }
        }
    }

    /// The `*.wasm` files of the folder with their fingerprints, sorted.
    fn scan(&self) -> Result<Vec<(PathBuf, Fingerprint)>> {
        let dir = &self.config.modules;
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

    /// Compare the folder with what was loaded: removals stop projections, changes that
    /// have settled for `debounce_ms` are compiled off-thread.
    fn rescan(&mut self) -> Result<()> {
        let now: BTreeMap<PathBuf, Fingerprint> = self.scan()?.into_iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            self.removed(&path);
        }
        self.pending.retain(|p, _| now.contains_key(p));
        let debounce = Duration::from_millis(self.config.reload.debounce_ms);
        for (path, fp) in now {
            if self.files.get(&path) == Some(&fp) || self.compiling.get(&path) == Some(&fp) {
                continue;
            }
            match self.pending.get(&path) {
                Some((seen, since)) if *seen == fp => {
                    if since.elapsed() >= debounce {
                        self.pending.remove(&path);
                        self.compile(path, fp);
                    }
                }
                _ => {
                    self.pending.insert(path, (fp, Instant::now()));
                }
            }
        }
        Ok(())
    }

    /// Compile off the registry thread; the result comes back as a message.
    fn compile(&mut self, path: PathBuf, fp: Fingerprint) {
        tracing::info!(module = %path.display(), "module changed; loading");
        self.compiling.insert(path.clone(), fp);
        let (runtime, tx) = (self.runtime.clone(), self.tx.clone());
        std::thread::spawn(move || {
            let loaded = load(&runtime, &path);
            let _ = tx.send(Msg::Loaded(path, fp, loaded));
        });
    }

    /// A module file was removed: its projection stops; its data stays.
    fn removed(&mut self, path: &Path) {
        let names: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.path == path)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Some(slot) = self.slots.remove(&name) {
                tracing::info!(projection = %name, module = %path.display(), "module removed; stopping (its tables stay until `projector drop`)");
                for h in [slot.shadow, slot.primary].into_iter().flatten() {
                    self.reports.push(h.stop());
                }
            }
        }
    }

    /// Put a loaded (or refused) module into service.
    fn apply(&mut self, path: PathBuf, fp: Fingerprint, loaded: Result<Module>) -> Result<()> {
        self.files.insert(path.clone(), fp);
        let module = match loaded {
            Ok(m) => Arc::new(m),
            Err(e) => {
                self.reject(path, format!("{e:#}"));
                return Ok(());
            }
        };
        let schema = module.schema().clone();
        let name = schema.name.clone();
        let Some(slot) = self.slots.get(&name) else {
            tracing::info!(module = %path.display(), projection = %name, version = schema.version, from_cache = module.from_cache, "loaded");
            let primary = Some(self.start(&module, Control::primary(), None)?);
            self.slots.insert(
                name,
                Slot {
                    path,
                    primary,
                    shadow: None,
                },
            );
            return Ok(());
        };
        let action = if slot.path != path {
            Action::Refuse(format!(
                "another module ({}) already provides projection `{name}`",
                slot.path.display()
            ))
        } else {
            // New code replaces the runner of its own version (shadow or primary).
            let same = |h: &Option<RunnerHandle>| {
                h.as_ref()
                    .filter(|h| h.module.schema().version == schema.version)
                    .map(|h| (h.module.clone(), h.control.clone()))
            };
            match same(&slot.shadow).or_else(|| same(&slot.primary)) {
                Some((old, _)) if old.hash == module.hash => Action::Unchanged,
                Some((old, control)) => {
                    let old = old.schema();
                    if old.tables_json != schema.tables_json {
                        Action::Refuse(format!("projection `{name}` version {} changed its tables without a version bump; bump the manifest version to rebuild", schema.version))
                    } else if (&old.event_types, &old.stream_prefixes)
                        != (&schema.event_types, &schema.stream_prefixes)
                    {
                        Action::Refuse(format!("projection `{name}` version {} changed its interests without a version bump; bump the manifest version to rebuild", schema.version))
                    } else {
                        Action::Swap(control)
                    }
                }
                None if slot.primary.is_none() => Action::Start,
                None => Action::Rebuild,
            }
        };
        match action {
            Action::Unchanged => tracing::debug!(projection = %name, "module unchanged"),
            Action::Refuse(reason) => self.reject(path, reason),
            Action::Swap(control) => {
                tracing::info!(projection = %name, version = schema.version, "new code for the same version: swapping it in at the next batch");
                *control.swap.lock().unwrap_or_else(|e| e.into_inner()) = Some(module);
            }
            Action::Start => {
                tracing::info!(projection = %name, version = schema.version, "loaded");
                let primary = self.start(&module, Control::primary(), None)?;
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.primary = Some(primary);
                }
            }
            Action::Rebuild => {
                let slot = self.slots.get_mut(&name).expect("slot checked above");
                let abandoned = slot.shadow.take();
                let replaces = slot.primary.as_ref().map(|p| p.control.clone());
                if let Some(old) = abandoned {
                    tracing::info!(projection = %name, version = old.module.schema().version, "abandoning the unfinished rebuild");
                    self.reports.push(old.stop());
                }
                tracing::info!(projection = %name, version = schema.version, "new version: rebuilding from the first event while the current version serves");
                let shadow = self.start(&module, Arc::new(Control::default()), replaces)?;
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.shadow = Some(shadow);
                }
            }
        }
        Ok(())
    }

    fn reject(&mut self, path: PathBuf, reason: String) {
        tracing::error!(module = %path.display(), "rejected: {reason}; whatever was running keeps running");
        self.rejected.push((path, reason));
    }

    /// Start a runner thread for `module`.
    fn start(
        &self,
        module: &Arc<Module>,
        control: Arc<Control>,
        replaces: Option<Arc<Control>>,
    ) -> Result<RunnerHandle> {
        let stats = Arc::new(Stats::default());
        let name = module.schema().name.clone();
        let runner = Runner {
            module: module.clone(),
            data: self.config.data.clone(),
            source: self.config.source.clone(),
            batch: self.config.batch.clone(),
            once: self.once,
            policy: self
                .config
                .projections
                .get(&name)
                .map(|p| p.error_policy)
                .unwrap_or_default(),
            shutdown: self.shutdown.clone(),
            control: control.clone(),
            replaces,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("runner-{name}"))
            .spawn(move || runner.run())
            .context("starting a runner thread")?;
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((format!("{name} v{}", module.schema().version), stats.clone()));
        Ok(RunnerHandle {
            module: module.clone(),
            control,
            stats,
            thread,
        })
    }

    /// Promote shadows that cut over (stop the version they replaced, delete old files)
    /// and collect runners that ended.
    fn supervise(&mut self) -> Result<()> {
        let data = self.config.data.clone();
        let keep = self.config.reload.keep_versions;
        for (name, slot) in &mut self.slots {
            if slot
                .shadow
                .as_ref()
                .is_some_and(|s| s.control.cut_over.load(Ordering::Relaxed))
            {
                let new = slot.shadow.take();
                if let Some(old) = std::mem::replace(&mut slot.primary, new) {
                    let version = old.module.schema().version;
                    self.reports.push(old.stop());
                    tracing::info!(projection = %name, version, "the replaced version stopped");
                }
                let serving = slot
                    .primary
                    .as_ref()
                    .map(|p| p.module.schema().version);
                let mut old: Vec<u32> = crate::store::versions_on_disk(&data, name)
                    .into_iter()
                    .filter(|v| Some(*v) != serving)
                    .collect();
                old.reverse();
                for v in old.into_iter().skip(keep) {
                    crate::store::remove_version(&data, name, v)?;
                    tracing::info!(projection = %name, version = v, "old version's tables dropped");
                }
            }
            for h in [&mut slot.shadow, &mut slot.primary] {
                if h.as_ref().is_some_and(|h| h.thread.is_finished())
                    && let Some(done) = h.take()
                {
                    self.reports.push(done.join());
                }
            }
        }
        Ok(())
    }
}

/// The module in `dir` that provides projection `name` (modules that fail to load are skipped).
pub fn module_for(runtime: &Runtime, dir: &Path, name: &str) -> Result<Module> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading modules folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| load(runtime, p).ok())
        .find(|m| m.schema().name == name)
        .with_context(|| format!("no module for projection `{name}` in {}", dir.display()))
}

/// Read and load one module file.
fn load(runtime: &Runtime, path: &Path) -> Result<Module> {
    std::fs::read(path)
        .with_context(|| format!("reading {}", path.display()))
        .and_then(|bytes| runtime.load(&bytes))
}
