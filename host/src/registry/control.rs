//! Requests to projections from commands: replay (rebuild beside the serving build,
//! optionally pausing at a position) and resume (clear a fault or a pause). A running
//! host takes them as JSON files in `data/control/`, read at each turn of its loop;
//! with no host running, the command does the work itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};

use super::recorder::{Outcome, Recorder, RunnerInfo};
use super::{Registry, next_generation};
use crate::config::Config;
use crate::runner::{Role, Runner, Transition};
use crate::runtime::Runtime;
use crate::store::{Catalog, HostLock};

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

/// How a command reached its projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A host is running on the data folder: it was asked through `data/control/`.
    Requested,
    /// No host runs there: the command ran here, to the end.
    Done,
}

impl Registry {
    /// Carry out the requests left in `data/control/` by `projector replay` / `resume`.
    pub(super) fn requests(&mut self) -> Result<()> {
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
                Ok(Request::Replay { projection, until }) => self.start_replay(&projection, until),
                Ok(Request::Resume { projection }) => {
                    self.resume_projection(&projection).map(|_| ())
                }
                Err(e) => Err(e.context(format!("unreadable request {}", path.display()))),
            };
            if let Err(e) = outcome {
                tracing::error!("request refused: {e:#}");
            }
        }
        Ok(())
    }

    /// Rebuild the current module of `name` into a new build of its version, beside the
    /// serving one.
    pub fn start_replay(&mut self, name: &str, until: Option<u64>) -> Result<()> {
        let module = self
            .slots
            .get(name)
            .map(|s| s.module.clone())
            .with_context(|| format!("no module provides projection `{name}`"))?;
        let generation = next_generation(&self.config.data, &module);
        tracing::info!(projection = %name, version = module.schema().version, generation, until, "replay requested: rebuilding while the current build serves");
        self.rebuild(name, module, Some(generation), until)
    }

    /// Clear a fault or a pause of `name` and run it again.
    pub fn resume_projection(&mut self, name: &str) -> Result<String> {
        let cleared = self.recorder.catalog().resume(name)?;
        if cleared {
            // A runner reports its pause or fault before it has closed its build: let it
            // finish (briefly) and collect it, so the projection starts again below.
            let deadline = Instant::now() + Duration::from_secs(2);
            while self
                .slots
                .get(name)
                .and_then(|s| s.owner.as_ref())
                .is_some_and(|h| !h.thread.is_finished())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.collect()?;
        }
        let slot = self
            .slots
            .get(name)
            .with_context(|| format!("no module provides projection `{name}`"))?;
        if slot.owner.is_some() {
            anyhow::ensure!(
                cleared,
                "projection `{name}` is running: neither faulted nor paused"
            );
            return Ok(format!("`{name}` cleared"));
        }
        let module = slot.module.clone();
        tracing::info!(projection = %name, "resuming");
        let owner = self.start(&module, Role::Serving, None)?;
        anyhow::ensure!(
            owner.is_some(),
            "projection `{name}` could not be started again"
        );
        if let Some(slot) = self.slots.get_mut(name) {
            slot.owner = owner;
        }
        Ok(format!("`{name}` resumed"))
    }

    /// Stop the owner of `name`, run its dead letters again, start it again.
    pub fn retry_dead_letters(&mut self, name: &str) -> Result<String> {
        let Some(slot) = self.slots.get_mut(name) else {
            anyhow::bail!("no module provides projection `{name}`");
        };
        let module = slot.module.clone();
        if let Some(h) = slot.owner.take() {
            self.runners.remove(&h.id);
            self.reports.push(h.stop());
        }
        let outcome = crate::dead_letters::retry(&self.config, name);
        let owner = self.start(&module, Role::Serving, None)?;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.owner = owner;
        }
        let r = outcome?;
        Ok(format!(
            "`{name}`: {} dead-lettered events applied, {} still failing",
            r.applied, r.still_failing
        ))
    }
}

/// `projector replay`: rebuild `name` from the first event through its current module
/// (the one in the modules folder), pausing at `until` if given. A running host is asked
/// to do it; otherwise it runs here and the new build takes over when done.
pub fn request_replay(config: &Config, name: &str, until: Option<u64>) -> Result<Delivery> {
    let call = match until {
        Some(u) => format!("replay?until={u}"),
        None => "replay".to_string(),
    };
    if let Some(answer) = ask_host(&config.data, name, &call) {
        return answer.map(|_| Delivery::Requested);
    }
    let Ok(_lock) = HostLock::acquire(&config.data) else {
        send(
            &config.data,
            &Request::Replay {
                projection: name.to_string(),
                until,
            },
        )?;
        return Ok(Delivery::Requested);
    };
    let runtime = Runtime::new(config.limits.clone(), Some(config.cache_dir()))?;
    let module = Arc::new(runtime.find(&config.modules, name)?);
    let recorder = Recorder::open(&config.data)?;
    let generation = next_generation(&config.data, &module);
    let reported = Arc::new(Mutex::new(Vec::new()));
    let sink = reported.clone();
    let runner = Runner::new(
        config,
        module.clone(),
        Role::Rebuild { until },
        generation,
        true,
        Arc::new(AtomicBool::new(false)),
        Box::new(move |t| sink.lock().unwrap_or_else(|e| e.into_inner()).push(t)),
    );
    let result = runner.run();
    // Record what it reported, as the registry would: it takes over when done.
    let mut who = RunnerInfo {
        name: name.to_string(),
        version: module.schema().version,
        generation,
        hash: module.hash.clone(),
        role: Role::Rebuild { until },
    };
    let mut owner = false;
    let transitions: Vec<Transition> =
        std::mem::take(&mut *reported.lock().unwrap_or_else(|e| e.into_inner()));
    for t in transitions {
        owner |= recorder.record(&mut who, owner, &t)? == Outcome::TookOver;
    }
    result?;
    crate::store::prune_builds(&config.data, name, config.reload.keep_versions)?;
    Ok(Delivery::Done)
}

/// Ask the running host's API for `call` on `name` (None when no host with an API runs
/// on `data`): its answer, or why it refused.
pub fn ask_host(data: &Path, name: &str, call: &str) -> Option<Result<String>> {
    HostLock::acquire(data).err()?;
    let base = crate::client::address(data)?;
    let token = crate::client::token(data);
    let path = format!("/api/projections/{name}/{call}");
    Some(
        crate::client::request(&base, "POST", &path, token.as_deref(), None).and_then(|r| {
            let body: serde_json::Value =
                serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
            match (r.status, body["message"].as_str(), body["error"].as_str()) {
                (202, Some(m), _) => Ok(m.to_string()),
                (_, _, Some(e)) => Err(anyhow::anyhow!("the host refused: {e}")),
                (s, _, _) => Err(anyhow::anyhow!("the host answered {s}: {}", r.body)),
            }
        }),
    )
}

/// `projector promote`: cut over to the held build (or undo a rollback). Offline, in the
/// catalog: the next start serves it.
pub fn request_promote(data: &Path, name: &str) -> Result<String> {
    if let Some(answer) = ask_host(data, name, "promote") {
        return answer;
    }
    let _lock = HostLock::acquire(data)?;
    let catalog = Catalog::open(data)?;
    let release = catalog.release(name)?;
    if let Some(held) = release.held {
        let b = &held.build;
        catalog.cut_over(name, b.version, b.generation, &b.sha256)?;
        catalog.set_held(name, None)?;
        return Ok(format!(
            "`{name}`: version {} (build {}) serves from the next start",
            b.version, b.generation
        ));
    }
    if let Some(b) = release.rolled_back {
        catalog.cut_over(name, b.version, b.generation, &b.sha256)?;
        catalog.set_rolled_back(name, None)?;
        return Ok(format!(
            "`{name}`: version {} (build {}) serves again from the next start",
            b.version, b.generation
        ));
    }
    anyhow::bail!("projection `{name}` has no held build and no rollback to undo")
}

/// `projector rollback`: serve the previous build again. Offline, in the catalog: the next
/// start runs it through the module kept with it.
pub fn request_rollback(data: &Path, name: &str) -> Result<String> {
    if let Some(answer) = ask_host(data, name, "rollback") {
        return answer;
    }
    let _lock = HostLock::acquire(data)?;
    let catalog = Catalog::open(data)?;
    let entry = catalog
        .entry(name)?
        .with_context(|| format!("no projection `{name}` in {}", data.display()))?;
    let ((v, g), serving) = super::release::previous_build(data, name, &entry)?;
    let bytes = std::fs::read(crate::store::module_path(data, name, v, g))?;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    catalog.cut_over(name, v, g, &hash)?;
    catalog.set_held(name, None)?;
    catalog.set_rolled_back(name, Some(&serving))?;
    Ok(format!(
        "`{name}`: version {v} (build {g}) serves again from the next start"
    ))
}

/// `projector resume`: clear a fault or a pause; a running host continues the projection.
pub fn request_resume(data: &Path, name: &str) -> Result<Delivery> {
    if let Some(answer) = ask_host(data, name, "resume") {
        return answer.map(|_| Delivery::Requested);
    }
    let Ok(_lock) = HostLock::acquire(data) else {
        send(
            data,
            &Request::Resume {
                projection: name.to_string(),
            },
        )?;
        return Ok(Delivery::Requested);
    };
    if !Catalog::open(data)?.resume(name)? {
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
