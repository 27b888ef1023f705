//! The registry: which module serves which projection, and the runners that run them.
//! It is the lifecycle of projections, and the one writer of their state.
//!
//! What a module does, by what it shares with the running one ([`decide`]):
//! - a new projection name → a runner starts (from its checkpoint, if it has one);
//! - same name and version, new code → the runner swaps it in at its next batch
//!   boundary and continues from its checkpoint (tables and interests must not change);
//! - same name, another version → a *rebuild* runner builds that version in its own
//!   file from the first event while the old one keeps serving; once caught up it takes
//!   over (one catalog update) and the old runner stops; old builds beyond
//!   `keep_versions` are deleted;
//! - file removed → the projection stops; its tables stay until `projector drop`.
//!
//! Its inputs arrive on one channel: folder changes ([`watcher`]), modules compiled off
//! the registry thread, and runners' [`Transition`]s, recorded by the [`recorder`].
//! Requests from commands (replay, resume) come through [`control`].

pub mod control;
pub mod recorder;
mod release;
pub mod watcher;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::runner::{Control, ProjectionReport, Role, Runner, Stats, Transition};
use crate::runtime::{Module, Runtime};
use crate::schema::Schema;
use crate::store::ProjectionState;
use recorder::{Outcome, Recorder, RunnerInfo};
use watcher::{Change, Watcher};

/// A runner's number, unique in the registry.
pub type RunnerId = u64;

/// Messages to the registry loop.
enum Msg {
    /// Something changed in the folder: rescan now.
    Wake,
    /// A module finished compiling (off the registry thread).
    Loaded(PathBuf, Result<Module>),
    /// A runner reported a transition.
    Report(RunnerId, Transition),
    /// A command from the API, and where its answer goes.
    Command(Command, Sender<Answer>),
}

/// What the API may ask of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Rebuild a projection beside its serving build, pausing at `until`.
    Replay {
        /// The projection.
        name: String,
        /// Pause at this position.
        until: Option<u64>,
    },
    /// Clear a fault or a pause and run it again.
    Resume {
        /// The projection.
        name: String,
    },
    /// Run its dead letters again through the current module.
    RetryDeadLetters {
        /// The projection.
        name: String,
    },
    /// Cut over to a held build (or undo a rollback).
    Promote {
        /// The projection.
        name: String,
    },
    /// Serve the previous build again.
    Rollback {
        /// The projection.
        name: String,
    },
}

/// What the registry did with a command: accepted (what happens now), or refused (why).
pub type Answer = std::result::Result<String, String>;

/// Sends commands into the registry loop; cloneable, for the API.
#[derive(Clone)]
pub struct Commander(Sender<Msg>);

impl Commander {
    /// Send `command`; the answer arrives on the returned channel.
    pub fn send(&self, command: Command) -> Receiver<Answer> {
        let (tx, rx) = channel();
        if self.0.send(Msg::Command(command, tx.clone())).is_err() {
            let _ = tx.send(Err("the host is shutting down".into()));
        }
        rx
    }
}

/// What the API sees of one runner.
#[derive(Clone)]
pub struct RosterEntry {
    /// The projection.
    pub name: String,
    /// The version it builds.
    pub version: u32,
    /// True for a rebuild beside the serving build.
    pub rebuild: bool,
    /// Its live counters.
    pub stats: Arc<Stats>,
}

/// The runners now, by projection; republished at every turn of the loop.
pub type Roster = Arc<Mutex<Vec<RosterEntry>>>;

/// One running runner thread.
struct RunnerHandle {
    id: RunnerId,
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
    /// The runner that owns the projection (serving, or building the only version).
    owner: Option<RunnerHandle>,
    /// A rebuild beside the owner.
    rebuild: Option<RunnerHandle>,
}

/// What the registry knows of the runners of one projection, for [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    /// The file that provides it.
    pub path: &'a Path,
    /// The owner's module, if one runs.
    pub owner: Option<(&'a Schema, &'a str)>,
    /// The rebuild's module, if one runs.
    pub rebuild: Option<(&'a Schema, &'a str)>,
}

/// What a loaded module does to the projection it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The same code is already running.
    Unchanged,
    /// Refused, with the reason; what runs keeps running.
    Refuse(String),
    /// Same version, new code: hand it to the rebuild (true) or the owner (false).
    Swap {
        /// The runner of that version is the rebuild.
        rebuild: bool,
    },
    /// Nothing runs for this projection: start it.
    Start,
    /// Another version: rebuild it beside the serving one.
    Rebuild,
}

/// Decide what module (`schema`, `hash`) from `path` does, given what runs.
pub fn decide<'a>(
    running: Option<Running<'a>>,
    path: &Path,
    schema: &Schema,
    hash: &str,
) -> Action {
    let Some(r) = running else {
        return Action::Start;
    };
    let name = &schema.name;
    if r.path != path {
        return Action::Refuse(format!(
            "another module ({}) already provides projection `{name}`",
            r.path.display()
        ));
    }
    // New code replaces the runner of its own version (rebuild or owner).
    let version = schema.version;
    let same = |m: Option<(&'a Schema, &'a str)>| m.filter(|(s, _)| s.version == version);
    let (old, rebuild) = match (same(r.rebuild), same(r.owner)) {
        (Some(m), _) => (m, true),
        (None, Some(m)) => (m, false),
        (None, None) if r.owner.is_none() => return Action::Start,
        (None, None) => return Action::Rebuild,
    };
    let (old, old_hash) = old;
    if old_hash == hash {
        Action::Unchanged
    } else if old.tables_json != schema.tables_json {
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
        Action::Swap { rebuild }
    }
}

/// Module files, projections and their runners.
pub struct Registry {
    runtime: Arc<Runtime>,
    config: Config,
    once: bool,
    shutdown: Arc<AtomicBool>,
    watcher: Watcher,
    slots: BTreeMap<String, Slot>,
    /// Every runner that may still report, by id.
    runners: BTreeMap<RunnerId, RunnerInfo>,
    next_id: RunnerId,
    /// Module files being loaded, and whether the file changed again meanwhile (it is
    /// loaded again once this load is applied: loads of one file apply in order).
    loading: BTreeMap<PathBuf, bool>,
    /// A runner being stopped whose last reports still speak for its projection.
    owner_override: Option<RunnerId>,
    /// Rebuilds of a new version: the release rules decide whether they take over.
    releases: std::collections::BTreeSet<RunnerId>,
    recorder: Recorder,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// The runners now, for the API.
    pub roster: Roster,
    /// This host's shard.
    cluster: crate::cluster::Cluster,
    /// Projections in the modules folder that other shards run: name and owner shard.
    pub elsewhere: Arc<Mutex<Vec<(String, usize)>>>,
    /// Modules refused, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
    /// Runners that ended, with how.
    pub reports: Vec<ProjectionReport>,
}

impl Registry {
    /// A registry over `config.modules`; nothing is loaded yet.
    pub fn new(config: &Config, once: bool, shutdown: Arc<AtomicBool>) -> Result<Registry> {
        let runtime = Runtime::new(config.limits.clone(), Some(config.cache_dir()))?;
        let (tx, rx) = channel();
        Ok(Registry {
            runtime: Arc::new(runtime),
            config: config.clone(),
            once,
            shutdown,
            watcher: Watcher::new(
                &config.modules,
                Duration::from_millis(config.reload.debounce_ms),
            ),
            slots: BTreeMap::new(),
            runners: BTreeMap::new(),
            next_id: 0,
            loading: BTreeMap::new(),
            owner_override: None,
            releases: Default::default(),
            recorder: Recorder::open(&config.data)?,
            tx,
            rx,
            roster: Arc::default(),
            cluster: config.cluster()?,
            elsewhere: Arc::default(),
            rejected: Vec::new(),
            reports: Vec::new(),
        })
    }

    /// Load every module in the folder now (on this thread) and start their runners.
    pub fn load_all(&mut self) -> Result<()> {
        // Refusals of an earlier run: every file is judged again now.
        self.recorder.catalog().clear_refused()?;
        // Every module is compiled before any runner starts: runners that start together
        // share one reader from their checkpoint on, where runners started one by one, as
        // each module compiled, would each read on their own until they caught up.
        let loaded: Vec<_> = self
            .watcher
            .initial()?
            .into_iter()
            .map(|(path, _)| (load(&self.runtime, &path), path))
            .collect();
        for (module, path) in loaded {
            self.apply(path, module)?;
        }
        Ok(())
    }

    /// Projections provided by a loaded module (running or held back).
    pub fn projections(&self) -> usize {
        self.slots.len()
    }

    /// True while any runner is running.
    pub fn running(&self) -> bool {
        self.slots
            .values()
            .any(|s| s.owner.is_some() || s.rebuild.is_some())
    }

    /// Start filesystem notifications; keep the returned watcher alive while it should watch.
    pub fn watch(&self) -> Option<notify::RecommendedWatcher> {
        let r = &self.config.reload;
        watcher::notify(
            &self.config.modules,
            r.watch,
            r.poll_ms,
            self.tx.clone(),
            || Msg::Wake,
        )
    }

    /// One turn of the loop: wait up to `wait` for something to do, handle every message
    /// that arrived, look at the folder and the requests (unless `once`), collect runners
    /// that ended.
    pub fn tick(&mut self, wait: Duration) -> Result<()> {
        if let Ok(msg) = self.rx.recv_timeout(wait) {
            self.handle(msg)?;
        }
        self.drain()?;
        if !self.once {
            for change in self.watcher.poll()? {
                match change {
                    Change::Removed(path) => self.removed(&path)?,
                    Change::Settled(path, _) => self.compile(path),
                }
            }
            self.requests()?;
        }
        self.collect()?;
        self.publish();
        Ok(())
    }

    /// A handle for sending commands into this loop.
    pub fn commander(&self) -> Commander {
        Commander(self.tx.clone())
    }

    /// Publish the runners for the API.
    fn publish(&self) {
        let mut roster = Vec::new();
        for (name, slot) in &self.slots {
            for (h, rebuild) in [(&slot.owner, false), (&slot.rebuild, true)] {
                if let Some(h) = h {
                    roster.push(RosterEntry {
                        name: name.clone(),
                        version: h.module.schema().version,
                        rebuild,
                        stats: h.stats.clone(),
                    });
                }
            }
        }
        *self.roster.lock().unwrap_or_else(|e| e.into_inner()) = roster;
    }

    /// Stop every runner and wait for them.
    pub fn finish(&mut self) -> Result<()> {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            self.stop_projection(&name)?;
        }
        Ok(())
    }

    /// Stop the runners of `name` and forget it, once their last words (a final commit,
    /// `stopped`) are recorded.
    fn stop_projection(&mut self, name: &str) -> Result<()> {
        let Some(slot) = self.slots.get_mut(name) else {
            return Ok(());
        };
        let handles: Vec<RunnerHandle> = [slot.rebuild.take(), slot.owner.take()]
            .into_iter()
            .flatten()
            .collect();
        // Stop them all first (they finish their batches in parallel), then wait.
        for h in &handles {
            h.control.stop.store(true, Ordering::Relaxed);
        }
        let owner = handles.last().map(|h| h.id);
        let mut reports = Vec::new();
        for h in handles {
            reports.push((h.id, h.join()));
        }
        // The owner's messages still count as the owner's: put it back while recording.
        if let (Some(id), Some(slot)) = (owner, self.slots.get_mut(name)) {
            slot.owner = None;
            self.owner_override = Some(id);
        }
        let drained = self.drain();
        self.owner_override = None;
        for (id, report) in reports {
            self.runners.remove(&id);
            self.reports.push(report);
        }
        self.slots.remove(name);
        drained
    }

    fn drain(&mut self) -> Result<()> {
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg)?;
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Wake => Ok(()),
            Msg::Loaded(path, loaded) => {
                let Some(again) = self.loading.remove(&path) else {
                    // The file was removed while it loaded.
                    return Ok(());
                };
                self.apply(path.clone(), loaded)?;
                if again {
                    self.compile(path);
                }
                Ok(())
            }
            Msg::Report(id, t) => self.record(id, t),
            Msg::Command(c, answer) => {
                let _ = answer.send(self.command(c));
                Ok(())
            }
        }
    }

    /// Carry out a command from the API.
    fn command(&mut self, c: Command) -> Answer {
        let name = match &c {
            Command::Replay { name, .. }
            | Command::Resume { name }
            | Command::RetryDeadLetters { name }
            | Command::Promote { name }
            | Command::Rollback { name } => name.clone(),
        };
        if !self.slots.contains_key(&name) {
            return Err(format!("no module provides projection `{name}`"));
        }
        let done = match c {
            Command::Replay { until, .. } => self.start_replay(&name, until).map(|()| {
                format!(
                    "replaying `{name}`{}: a new build rebuilds beside the serving one and takes over when done",
                    until.map(|u| format!(" until position {u}")).unwrap_or_default()
                )
            }),
            Command::Resume { .. } => self.resume_projection(&name),
            Command::RetryDeadLetters { .. } => self.retry_dead_letters(&name),
            Command::Promote { .. } => self.promote(&name),
            Command::Rollback { .. } => self.rollback(&name),
        };
        done.map_err(|e| format!("{e:#}"))
    }

    /// Record a runner's transition; a rebuild that took over replaces the owner.
    fn record(&mut self, id: RunnerId, t: Transition) -> Result<()> {
        let Some(info) = self.runners.get_mut(&id) else {
            return Ok(()); // a runner already replaced: it no longer speaks for anything
        };
        let name = info.name.clone();
        let owner = self.owner_override == Some(id)
            || self
                .slots
                .get(&name)
                .and_then(|s| s.owner.as_ref())
                .is_some_and(|h| h.id == id);
        if t == Transition::CaughtUp && !owner && self.releases.contains(&id) {
            self.releases.remove(&id);
            if self.hold(id)? {
                return Ok(());
            }
        }
        let Some(info) = self.runners.get_mut(&id) else {
            return Ok(());
        };
        let outcome = self.recorder.record(info, owner, &t)?;
        if matches!(
            t,
            Transition::Faulted(_) | Transition::Stopped | Transition::Paused(_)
        ) {
            self.runners.remove(&id);
        }
        if outcome == Outcome::TookOver {
            self.take_over(&name);
        }
        Ok(())
    }

    /// The rebuild of `name` took over: it becomes the owner, the old owner stops, old
    /// builds beyond `keep_versions` are deleted.
    fn take_over(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let new = slot.rebuild.take();
        let catalog = self.recorder.catalog();
        if let Err(e) = catalog
            .set_held(name, None)
            .and_then(|()| catalog.set_rolled_back(name, None))
        {
            tracing::warn!(projection = %name, "could not clear the release record: {e:#}");
        }
        if let Some(old) = std::mem::replace(&mut slot.owner, new) {
            self.runners.remove(&old.id);
            let version = old.module.schema().version;
            self.reports.push(old.stop());
            tracing::info!(projection = %name, version, "the replaced build stopped");
        }
        match crate::store::prune_builds(&self.config.data, name, self.config.reload.keep_versions)
        {
            Ok(doomed) => {
                for (version, generation) in doomed {
                    tracing::info!(projection = %name, version, generation, "old tables dropped");
                }
            }
            Err(e) => tracing::warn!(projection = %name, "could not delete old builds: {e:#}"),
        }
    }

    /// Compile off the registry thread; the result comes back as a message.
    fn compile(&mut self, path: PathBuf) {
        if let Some(again) = self.loading.get_mut(&path) {
            // Two loads of one file in parallel could finish in either order, and an
            // older content applied last would undo the newer: wait for this one.
            *again = true;
            return;
        }
        tracing::info!(module = %path.display(), "module changed; loading");
        self.loading.insert(path.clone(), false);
        let (runtime, tx) = (self.runtime.clone(), self.tx.clone());
        std::thread::spawn(move || {
            let loaded = load(&runtime, &path);
            let _ = tx.send(Msg::Loaded(path, loaded));
        });
    }

    /// A module file was removed: its projection stops; its data stays.
    fn removed(&mut self, path: &Path) -> Result<()> {
        // A load of the file still under way must not bring the projection back.
        self.loading.remove(path);
        self.record_refusal(path, None);
        let names: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.path == path)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            tracing::info!(projection = %name, module = %path.display(), "module removed; stopping (its tables stay until `projector drop`)");
            self.stop_projection(&name)?;
        }
        Ok(())
    }

    /// Put a loaded (or refused) module into service.
    fn apply(&mut self, path: PathBuf, loaded: Result<Module>) -> Result<()> {
        let module = match loaded {
            Ok(m) => Arc::new(m),
            Err(e) => {
                self.reject(path, format!("{e:#}"));
                return Ok(());
            }
        };
        let schema = module.schema().clone();
        let name = schema.name.clone();
        if !self.cluster.owns(&name) {
            let owner = self.cluster.owner(&name);
            let mut elsewhere = self.elsewhere.lock().unwrap_or_else(|e| e.into_inner());
            if !elsewhere.iter().any(|(n, _)| *n == name) {
                tracing::info!(projection = %name, "skipped here: {} runs it", self.cluster.describe(owner));
                elsewhere.push((name, owner));
            }
            drop(elsewhere);
            self.record_refusal(&path, None);
            return Ok(());
        }
        let running = self.slots.get(&name).map(|s| Running {
            path: &s.path,
            owner: s
                .owner
                .as_ref()
                .map(|h| (&**h.module.schema(), h.module.hash.as_str())),
            rebuild: s
                .rebuild
                .as_ref()
                .map(|h| (&**h.module.schema(), h.module.hash.as_str())),
        });
        let new_name = running.is_none();
        let action = decide(running, &path, &schema, &module.hash);
        if !matches!(action, Action::Refuse(_)) {
            // Accepted: an earlier refusal of the file no longer holds.
            self.record_refusal(&path, None);
        }
        match action {
            Action::Unchanged => tracing::debug!(projection = %name, "module unchanged"),
            Action::Refuse(reason) => self.reject(path, reason),
            Action::Swap { rebuild } => {
                tracing::info!(projection = %name, version = schema.version, "new code for the same version: swapping it in at the next batch");
                if let Some(slot) = self.slots.get_mut(&name) {
                    let h = if rebuild { &slot.rebuild } else { &slot.owner };
                    if let Some(h) = h {
                        *h.control.swap.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(module.clone());
                        if let Some(info) = self.runners.get(&h.id) {
                            crate::store::keep_module(
                                &self.config.data,
                                &name,
                                info.version,
                                info.generation,
                                module.bytes(),
                            )?;
                        }
                    }
                    slot.module = module;
                }
            }
            Action::Start => {
                tracing::info!(module = %path.display(), projection = %name, version = schema.version, from_cache = module.from_cache, contract = module.contract(), "loaded");
                if new_name {
                    self.slots.insert(
                        name.clone(),
                        Slot {
                            path,
                            module: module.clone(),
                            owner: None,
                            rebuild: None,
                        },
                    );
                }
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.module = module.clone();
                }
                self.start_projection(&name, module)?;
            }
            Action::Rebuild => {
                if self.rolled_back(&name, &module)? {
                    return Ok(());
                }
                tracing::info!(projection = %name, version = schema.version, "new version: rebuilding from the first event while the current version serves");
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.module = module.clone();
                }
                self.rebuild(&name, module, None, None)?;
                self.mark_release(&name);
            }
        }
        Ok(())
    }

    /// Start a rebuild of `module` beside the owner (abandoning an unfinished one), into
    /// build `generation` of its version (None: the serving or first one), up to `until`.
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
        if let Some(old) = slot.rebuild.take() {
            tracing::info!(projection = %name, version = old.module.schema().version, "abandoning the unfinished (or held) rebuild");
            self.runners.remove(&old.id);
            self.releases.remove(&old.id);
            self.reports.push(old.stop());
            self.recorder.catalog().set_held(name, None)?;
        }
        let rebuild = self.start(&module, Role::Rebuild { until }, generation)?;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.rebuild = rebuild;
        }
        Ok(())
    }

    fn reject(&mut self, path: PathBuf, reason: String) {
        tracing::error!(module = %path.display(), "rejected: {reason}; whatever was running keeps running");
        self.record_refusal(&path, Some(&reason));
        self.rejected.push((path, reason));
    }

    /// Show (or stop showing) a refusal of `path` in the catalog, for `projector status`
    /// and the API while the host runs. A failure to record it is logged: the refusal
    /// itself stands.
    fn record_refusal(&self, path: &Path, reason: Option<&str>) {
        let file = path.display().to_string();
        if let Err(e) = self.recorder.catalog().set_refused(&file, reason) {
            tracing::warn!(module = %file, "could not record the module's refusal in the catalog: {e:#}");
        }
    }

    /// Start a runner thread for `module` in `role`, writing `generation` of its version
    /// (None: the serving build, or the first). None when the catalog holds it back: a
    /// fault is sticky for the same code; a pause holds until `projector resume`.
    fn start(
        &mut self,
        module: &Arc<Module>,
        role: Role,
        generation: Option<u32>,
    ) -> Result<Option<RunnerHandle>> {
        let schema = module.schema();
        let (name, version) = (schema.name.clone(), schema.version);
        if let Some(e) = self.recorder.catalog().entry(&name)?
            && e.running_version == Some(version)
        {
            let reason = e.reason.unwrap_or_default();
            if e.state == ProjectionState::Faulted
                && e.module_sha256.as_deref() == Some(module.hash.as_str())
            {
                let error = anyhow::anyhow!(
                    "projection `{name}` is faulted ({reason}); ship a fixed module or run `projector resume {name}`"
                );
                tracing::error!(projection = %name, "{error}");
                self.reports
                    .push(ProjectionReport::of(module, &Stats::default(), Some(error)));
                return Ok(None);
            }
            if role == Role::Serving && e.state == ProjectionState::Paused {
                tracing::info!(projection = %name, "paused ({reason}); `projector resume {name}` continues it");
                return Ok(None);
            }
        }
        let generation = match generation {
            Some(g) => g,
            None => self.recorder.catalog().generation_of(&name, version)?,
        };
        crate::store::keep_module(
            &self.config.data,
            &name,
            version,
            generation,
            module.bytes(),
        )?;
        let id = self.next_id;
        self.next_id += 1;
        let tx = self.tx.clone();
        let runner = Runner::new(
            &self.config,
            module.clone(),
            role,
            generation,
            self.once,
            self.shutdown.clone(),
            Box::new(move |t| {
                let _ = tx.send(Msg::Report(id, t));
            }),
        );
        let (control, stats) = (runner.control.clone(), runner.stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("runner-{name}"))
            .spawn(move || runner.run())
            .context("starting a runner thread")?;
        self.runners.insert(
            id,
            RunnerInfo {
                name: name.clone(),
                version,
                generation,
                hash: module.hash.clone(),
                role,
            },
        );
        Ok(Some(RunnerHandle {
            id,
            module: module.clone(),
            control,
            stats,
            thread,
        }))
    }

    /// Collect runners that ended (after recording what they reported on the way out).
    fn collect(&mut self) -> Result<()> {
        let finished = self.slots.values().any(|s| {
            [&s.rebuild, &s.owner]
                .into_iter()
                .flatten()
                .any(|h| h.thread.is_finished())
        });
        if !finished {
            return Ok(());
        }
        // A finished runner's messages are all in the channel: record them first.
        self.drain()?;
        for slot in self.slots.values_mut() {
            for h in [&mut slot.rebuild, &mut slot.owner] {
                if h.as_ref().is_some_and(|h| h.thread.is_finished())
                    && let Some(done) = h.take()
                {
                    self.runners.remove(&done.id);
                    self.reports.push(done.join());
                }
            }
        }
        Ok(())
    }
}

/// Read and load one module file.
fn load(runtime: &Runtime, path: &Path) -> Result<Module> {
    runtime.load_file(path)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{Column, ColumnKind, Interests, Manifest, Table};

    fn schema(version: u32, column: &str, types: &[&str]) -> Schema {
        Schema::new(&Manifest {
            name: "p".into(),
            version,
            interests: Interests {
                event_types: types.iter().map(|t| t.to_string()).collect(),
                stream_prefixes: vec![],
            },
            tables: vec![Table {
                name: "t".into(),
                columns: vec![Column {
                    name: column.into(),
                    kind: ColumnKind::Text,
                    nullable: false,
                }],
                primary_key: vec![column.into()],
                indexes: vec![],
            }],
        })
        .expect("valid manifest")
    }

    #[test]
    fn what_a_module_does_depends_on_what_runs() {
        let (v1, v2) = (schema(1, "k", &["A"]), schema(2, "k", &["A"]));
        let path = Path::new("m/p.wasm");
        let owner = |s| Running {
            path,
            owner: Some((s, "h1")),
            rebuild: None,
        };
        assert_eq!(decide(None, path, &v1, "h1"), Action::Start);
        assert_eq!(decide(Some(owner(&v1)), path, &v1, "h1"), Action::Unchanged);
        assert_eq!(
            decide(Some(owner(&v1)), path, &v1, "h2"),
            Action::Swap { rebuild: false }
        );
        assert_eq!(decide(Some(owner(&v1)), path, &v2, "h2"), Action::Rebuild);
        let both = Running {
            path,
            owner: Some((&v1, "h1")),
            rebuild: Some((&v2, "h2")),
        };
        assert_eq!(
            decide(Some(both), path, &v2, "h3"),
            Action::Swap { rebuild: true },
            "new code of the rebuilding version goes to the rebuild"
        );
        let stopped = Running {
            path,
            owner: None,
            rebuild: None,
        };
        assert_eq!(decide(Some(stopped), path, &v1, "h1"), Action::Start);
    }

    #[test]
    fn changes_without_a_version_bump_and_a_second_file_are_refused() {
        let v1 = schema(1, "k", &["A"]);
        let path = Path::new("m/p.wasm");
        let owner = Running {
            path,
            owner: Some((&v1, "h1")),
            rebuild: None,
        };
        let tables = decide(Some(owner), path, &schema(1, "other", &["A"]), "h2");
        assert!(
            matches!(&tables, Action::Refuse(r) if r.contains("changed its tables")),
            "{tables:?}"
        );
        let interests = decide(Some(owner), path, &schema(1, "k", &["B"]), "h2");
        assert!(
            matches!(&interests, Action::Refuse(r) if r.contains("changed its interests")),
            "{interests:?}"
        );
        let other = decide(Some(owner), Path::new("m/q.wasm"), &v1, "h1");
        assert!(
            matches!(&other, Action::Refuse(r) if r.contains("already provides")),
            "{other:?}"
        );
    }
}
