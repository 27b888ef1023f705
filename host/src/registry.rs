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
//! `projector replay` forces a shadow rebuild of the current module into a new build of
//! the same version (optionally pausing at a position); with a host running it arrives
//! as a request file in `data/control/`, read at each turn of the loop.
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
    /// The module that file provides (to restart after a pause or replay).
    module: Arc<Module>,
    /// The runner that owns the catalog row (serving, or building the only version).
    primary: Option<RunnerHandle>,
    /// A new version rebuilding beside the primary.
    shadow: Option<RunnerHandle>,
}

/// Folder under the data dir where commands leave requests for a running host.
const CONTROL_DIR: &str = "control";

/// A request to a running host, left as a JSON file in `data/control/`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// Rebuild the current module into a new build of its version (pausing at `until`).
    Replay {
        /// The projection.
        projection: String,
        /// Pause at this position.
        until: Option<u64>,
    },
    /// Continue a paused or faulted projection.
    Resume {
        /// The projection.
        projection: String,
    },
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
            self.requests()?;
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
            let primary = Some(self.start(&module, Control::primary(), None, None, None)?);
            self.slots.insert(
                name,
                Slot {
                    path,
                    module,
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
                        Action::Refuse(format!(
                            "projection `{name}` version {} changed its tables without a version bump; bump the manifest version to rebuild",
                            schema.version
                        ))
                    } else if (&old.event_types, &old.stream_prefixes)
                        != (&schema.event_types, &schema.stream_prefixes)
                    {
                        Action::Refuse(format!(
                            "projection `{name}` version {} changed its interests without a version bump; bump the manifest version to rebuild",
                            schema.version
                        ))
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
                *control.swap.lock().unwrap_or_else(|e| e.into_inner()) = Some(module.clone());
                self.set_module(&name, module);
            }
            Action::Start => {
                tracing::info!(projection = %name, version = schema.version, "loaded");
                let primary = self.start(&module, Control::primary(), None, None, None)?;
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.primary = Some(primary);
                }
                self.set_module(&name, module);
            }
            Action::Rebuild => {
                tracing::info!(projection = %name, version = schema.version, "new version: rebuilding from the first event while the current version serves");
                self.set_module(&name, module.clone());
                self.rebuild(&name, module, None, None)?;
            }
        }
        Ok(())
    }

    fn set_module(&mut self, name: &str, module: Arc<Module>) {
        if let Some(slot) = self.slots.get_mut(name) {
            slot.module = module;
        }
    }

    /// Start a shadow runner for `module` beside the primary (abandoning an unfinished
    /// one): build `generation` of its version (None: the serving or first one), up to
    /// `until` if given.
    fn rebuild(
        &mut self,
        name: &str,
        module: Arc<Module>,
        generation: Option<u32>,
        until: Option<u64>,
    ) -> Result<()> {
        let Some(slot) = self.slots.get_mut(name) else {
            anyhow::bail!("no module provides projection `{name}`");
        };
        let abandoned = slot.shadow.take();
        let replaces = slot.primary.as_ref().map(|p| p.control.clone());
        if let Some(old) = abandoned {
            tracing::info!(projection = %name, version = old.module.schema().version, "abandoning the unfinished rebuild");
            self.reports.push(old.stop());
        }
        let shadow = self.start(
            &module,
            Arc::new(Control::default()),
            replaces,
            generation,
            until,
        )?;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.shadow = Some(shadow);
        }
        Ok(())
    }

    /// Carry out the requests left in `data/control/` by `projector replay` / `resume`.
    fn requests(&mut self) -> Result<()> {
        let dir = self.config.data.join(CONTROL_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let request = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<Request>(&b)?));
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            let outcome = match request {
                Ok(Request::Replay { projection, until }) => self.replay(&projection, until),
                Ok(Request::Resume { projection }) => self.resume(&projection),
                Err(e) => Err(e.context(format!("unreadable request {}", path.display()))),
            };
            if let Err(e) = outcome {
                tracing::error!("request refused: {e:#}");
            }
        }
        Ok(())
    }

    /// Rebuild the current module of `name` into a new build of its version.
    fn replay(&mut self, name: &str, until: Option<u64>) -> Result<()> {
        let module = self
            .slots
            .get(name)
            .map(|s| s.module.clone())
            .with_context(|| format!("no module provides projection `{name}`"))?;
        let generation = next_generation(&self.config.data, &module);
        tracing::info!(projection = %name, version = module.schema().version, generation, until, "replay requested: rebuilding while the current build serves");
        self.rebuild(name, module, Some(generation), until)
    }

    /// Continue a paused (or faulted) projection.
    fn resume(&mut self, name: &str) -> Result<()> {
        crate::store::Catalog::open(&self.config.data)?.resume(name)?;
        let slot = self
            .slots
            .get(name)
            .with_context(|| format!("no module provides projection `{name}`"))?;
        if slot.primary.is_none() {
            let module = slot.module.clone();
            tracing::info!(projection = %name, "resuming");
            let primary = self.start(&module, Control::primary(), None, None, None)?;
            if let Some(slot) = self.slots.get_mut(name) {
                slot.primary = Some(primary);
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
        generation: Option<u32>,
        until: Option<u64>,
    ) -> Result<RunnerHandle> {
        let stats = Arc::new(Stats::default());
        let name = module.schema().name.clone();
        let runner = Runner {
            control: control.clone(),
            replaces,
            generation,
            until,
            stats: stats.clone(),
            ..Runner::new(
                &self.config,
                module.clone(),
                self.once,
                self.shutdown.clone(),
            )
        };
        let thread = std::thread::Builder::new()
            .name(format!("runner-{name}"))
            .spawn(move || runner.run())
            .context("starting a runner thread")?;
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).push((
            format!("{name} v{}", module.schema().version),
            stats.clone(),
        ));
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
                for (version, generation) in crate::store::prune_builds(&data, name, keep)? {
                    tracing::info!(projection = %name, version, generation, "old tables dropped");
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

/// The next unused build number of `module`'s version.
fn next_generation(data: &Path, module: &Module) -> u32 {
    let schema = module.schema();
    crate::store::builds_on_disk(data, &schema.name)
        .into_iter()
        .filter(|(v, _)| *v == schema.version)
        .map(|(_, g)| g + 1)
        .max()
        .unwrap_or(1)
}

/// How a command reached its projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A host is running on the data folder: it was asked through `data/control/`.
    Requested,
    /// No host runs there: the command ran here, to the end.
    Done,
}

/// `projector replay`: rebuild `name` from the first event through its current module
/// (the one in the modules folder), pausing at `until` if given. A running host is asked
/// to do it; otherwise it runs here and the new build cuts over when done.
pub fn replay(config: &Config, name: &str, until: Option<u64>) -> Result<Delivery> {
    let Ok(_lock) = crate::store::HostLock::acquire(&config.data) else {
        send(
            &config.data,
            &Request::Replay {
                projection: name.to_string(),
                until,
            },
        )?;
        return Ok(Delivery::Requested);
    };
    let runtime = Runtime::new(config.limits.clone(), Some(config.data.join("cache")))?;
    let module = Arc::new(module_for(&runtime, &config.modules, name)?);
    crate::store::Catalog::open(&config.data)?;
    let generation = next_generation(&config.data, &module);
    // A shadow of nothing: it cuts over when it reaches the end (or `until`).
    let runner = Runner {
        control: Arc::new(Control::default()),
        generation: Some(generation),
        until,
        ..Runner::new(config, module, true, Arc::new(AtomicBool::new(false)))
    };
    runner.run()?;
    crate::store::prune_builds(&config.data, name, config.reload.keep_versions)?;
    Ok(Delivery::Done)
}

/// `projector resume`: clear a fault or a pause; a running host continues the projection.
pub fn resume(data: &Path, name: &str) -> Result<Delivery> {
    let Ok(_lock) = crate::store::HostLock::acquire(data) else {
        send(
            data,
            &Request::Resume {
                projection: name.to_string(),
            },
        )?;
        return Ok(Delivery::Requested);
    };
    if !crate::store::Catalog::open(data)?.resume(name)? {
        anyhow::bail!(
            "projection `{name}` is neither faulted nor paused in {}",
            data.display()
        );
    }
    Ok(Delivery::Done)
}

/// Leave a request for the running host (written whole, then renamed into place).
fn send(data: &Path, request: &Request) -> Result<()> {
    let dir = data.join(CONTROL_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("{stamp}-{}.json", std::process::id()));
    crate::runtime::write_atomic(&path, &serde_json::to_vec(request)?)
}
