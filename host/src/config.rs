//! The host's TOML configuration. Relative paths are relative to the config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use crate::runtime::Limits;

/// Everything `projector run` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An NDJSON event file (the embedded default source), or an EventStoreDB /
    /// KurrentDB connection string (`esdb://host:2113?tls=false`, `kurrentdb://…`).
    pub source: String,
    /// Folder for read models, checkpoints, the catalog and the compile cache.
    pub data: PathBuf,
    /// Folder of projection modules (`*.wasm`).
    pub modules: PathBuf,
    #[serde(default)]
    /// Batching and commit cadence.
    pub batch: BatchSettings,
    #[serde(default)]
    /// Sandbox limits for every module.
    pub limits: Limits,
    /// Per-projection settings, by projection name.
    #[serde(default)]
    pub projections: BTreeMap<String, ProjectionSettings>,
    #[serde(default)]
    /// Watching the modules folder and replacing versions.
    pub reload: ReloadSettings,
    #[serde(default)]
    /// Resubscribing to EventStoreDB after a lost connection.
    pub reconnect: crate::source::esdb::RetrySettings,
    #[serde(default)]
    /// The HTTP API and status page.
    pub http: HttpSettings,
    #[serde(default)]
    /// When a rebuilt version may take over by itself (per projection in `projections`).
    pub release: ReleaseRules,
    /// Scaling out: this host's shard and its peers.
    #[serde(default)]
    pub cluster: crate::cluster::ClusterSettings,
    /// Compiled modules, shared by every host and command of this machine (default:
    /// `$PROJECTOR_CACHE`, else `$XDG_CACHE_HOME/projector/modules`, else
    /// `~/.cache/projector/modules`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
}

/// The HTTP API and status page of `projector run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on; empty turns the server off.
    pub listen: String,
    /// Bearer token for control calls (and for every call from off the machine); else
    /// `PROJECTOR_TOKEN`, else one is generated at start into `data/api.token`.
    pub token: Option<String>,
    /// Rows one query returns at most.
    pub max_rows: usize,
    /// Milliseconds one query may run.
    pub query_timeout_ms: u64,
    /// Queries run at once (the rest wait their turn).
    pub query_concurrency: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:7070".into(),
            token: None,
            max_rows: 10_000,
            query_timeout_ms: 5_000,
            query_concurrency: 1,
        }
    }
}

/// How the modules folder is watched and old versions are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadSettings {
    /// `notify` (filesystem events, with a slow rescan as a safety net) or `poll` (rescan
    /// only: for bind mounts and network filesystems that deliver no events).
    pub watch: WatchMode,
    /// Rescan interval in milliseconds when polling; with notifications the safety-net
    /// rescan runs every eight of these (2 s at most).
    pub poll_ms: u64,
    /// A changed file is loaded once it has stayed the same for this long.
    pub debounce_ms: u64,
    /// Old builds kept after a cutover (tables and module), for `projector rollback`.
    pub keep_versions: usize,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            watch: WatchMode::Notify,
            poll_ms: 250,
            debounce_ms: 100,
            keep_versions: 1,
        }
    }
}

/// When a rebuilt version may take over by itself. When a rule trips, the new build is
/// *held*: it keeps following the source beside the serving one until `projector
/// promote` (or new code); the comparison says why.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseRules {
    /// Hold when a table that has rows in the serving build has none in the new one.
    pub hold_when_emptied: bool,
    /// Hold when a table loses more than this share of its rows (0.5: half).
    pub max_removed_share: f64,
    /// Hold when an event type the new manifest names matched no event in the whole
    /// history while the serving version does not name it (a typo, a renamed event).
    pub hold_on_unmatched_types: bool,
}

impl Default for ReleaseRules {
    fn default() -> Self {
        ReleaseRules {
            hold_when_emptied: true,
            max_removed_share: 0.5,
            hold_on_unmatched_types: true,
        }
    }
}

/// How changes in the modules folder are noticed.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WatchMode {
    /// Filesystem notifications, plus a rescan every few seconds.
    #[default]
    Notify,
    /// Rescan every `poll_ms`.
    Poll,
}

/// How events are grouped into calls and transactions.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Most events per call into a module (each call is sized from the module's speed,
    /// ops and memory per event, `runner/pace.rs`, unless `adaptive = false`)...
    pub max_events: usize,
    /// ...or what arrived within this many milliseconds, whichever comes first.
    pub max_wait_ms: u64,
    /// While catching up, commit after this many events...
    pub commit_events: u64,
    /// ...or after this long, whichever comes first. Live, every batch commits.
    pub commit_interval_ms: u64,
    /// How often a caught-up runner looks for new events (at the end of a followed file
    /// read by the shared reader, one runner looks for all while the others wait).
    pub poll_ms: u64,
    /// Runners at the head share one reader per source, so each event is parsed (or
    /// received from the server) once per host; off, every runner reads on its own.
    pub shared_ingest: bool,
    /// While catching up, a runner's next batch is read on a thread of its own while
    /// the module handles the current one, when fewer runners are catching up than the
    /// host has cores (where a core is spare for it).
    pub read_ahead: bool,
    /// Size each call from the module's last one (up to `max_events`); off, every call
    /// asks for `max_events` (over a file, boundaries set by the count alone while a
    /// batch reads within `max_wait_ms`, as tests want).
    pub adaptive: bool,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            // Measured: 50,000 against 10,000 cut the CPU of both shop projections by
            // 9-10% (pairs in PERFORMANCE.md). An order's later events fall in the batch
            // that created it, so the module's overlay answers their `get`s.
            max_events: 50_000,
            max_wait_ms: 200,
            commit_events: 200_000,
            commit_interval_ms: 1000,
            poll_ms: 50,
            shared_ingest: true,
            read_ahead: true,
            adaptive: true,
        }
    }
}

/// What to do when a projection fails on a batch.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the projection, leave the batch uncommitted, record the reason.
    #[default]
    Stop,
    /// Retry the batch event by event; skip (and log) the event that fails.
    Skip,
    /// Like `skip`, and record the event and the error in `_projector_dead_letters`.
    DeadLetter,
}

/// Settings of one projection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectionSettings {
    /// What a failing batch does.
    pub error_policy: ErrorPolicy,
    /// Release rules for this projection (default: the global `[release]`).
    pub release: Option<ReleaseRules>,
}

impl Config {
    /// This host's place in the cluster (one host when `[cluster] shard` is empty).
    pub fn cluster(&self) -> Result<crate::cluster::Cluster> {
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        Ok(crate::cluster::Cluster::from_settings(
            &self.cluster,
            hostname.trim(),
        )?)
    }

    /// The release rules of projection `name`.
    pub fn release_rules(&self, name: &str) -> ReleaseRules {
        self.projections
            .get(name)
            .and_then(|p| p.release)
            .unwrap_or(self.release)
    }

    /// Where compiled modules are cached: configured, or the machine's user cache.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache {
            return dir.clone();
        }
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("PROJECTOR_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("projector/modules")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/projector/modules")))
            .unwrap_or_else(|| self.data.join("cache"))
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data = base.join(&config.data);
        config.modules = base.join(&config.modules);
        config.cache = config.cache.map(|c| base.join(c));
        if !crate::source::is_esdb(&config.source) {
            config.source = base.join(&config.source).to_string_lossy().into_owned();
        }
        Ok(config)
    }
}
