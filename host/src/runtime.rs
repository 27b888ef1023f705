//! The WebAssembly runtime: one wasmtime `Engine` per process, components compiled once
//! and cached on disk, a fresh sandboxed instance for every batch.
//!
//! A fresh instance per batch (~tens of µs for a Rust guest) means a module can keep
//! no hidden state between batches, so replays are deterministic whatever the batch
//! boundaries, and a trap never leaves a broken instance behind.
//!
//! Modules that import nothing but the projection world get no WASI at all. Modules
//! whose toolchain needs WASI (Python, JavaScript, Rust's wasip1) get an empty context:
//! no preopened directories, no sockets, no environment, no stdin, a fixed clock and
//! seeded randomness, so they can neither reach the machine nor tell two replays apart.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::schema::Schema;
use crate::store::ProjectionDb;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "projector:projection/projection@0.1.0",
        imports: { default: trappable },
    });
}

/// The WIT types of contract v0.1, as the host sees them.
pub mod wit {
    pub use super::bindings::projector::projection::types::*;
}
use bindings::{Projection, ProjectionPre};
use wit::{Event, HandleError, Level, Op, Value};

/// Sandbox limits every module of the process runs under (one engine, one set).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Deterministic CPU budget per event (wasmtime fuel); 0 turns fuel metering off.
    pub fuel_per_event: u64,
    /// Wall-clock backstop for one call, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory per instance, in MiB.
    pub memory_mib: usize,
    /// Ops one batch may return.
    pub max_ops_per_batch: usize,
    /// Bytes one text or blob value may hold.
    pub max_value_bytes: usize,
    /// Bytes of text and blobs one row may hold.
    pub max_row_bytes: usize,
    /// Log lines kept per batch; the rest are counted and dropped.
    pub max_log_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_event: 10_000_000,
            timeout_ms: 10_000,
            memory_mib: 256,
            max_ops_per_batch: 1_000_000,
            max_value_bytes: 1 << 20,
            max_row_bytes: 4 << 20,
            max_log_lines: 100,
        }
    }
}

/// How a call into a module failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the module returned an error{}: {}", .0.event_index.map(|i| format!(" at batch event {i}")).unwrap_or_default(), .0.message)]
    Handle(HandleError),
    #[error("the module ran out of its CPU budget (fuel)")]
    OutOfFuel,
    #[error("the module ran past its {0} ms deadline")]
    Timeout(u64),
    #[error("the module went over its {0} MiB memory limit")]
    MemoryLimit(usize),
    #[error("the module trapped: {0}")]
    Trap(String),
}

/// What a module's calls may touch: its own read model, a log, and limits.
pub struct HostState {
    db: Option<ProjectionDb>,
    limits: PeakLimiter,
    max_log_lines: usize,
    /// Log lines of the current call, for the runner to emit and to explain traps.
    pub logs: Vec<(Level, String)>,
    dropped_logs: usize,
    get_ns: u64,
    /// The empty WASI context, for modules that import WASI; None for the others.
    wasi: Option<Box<(WasiCtx, ResourceTable)>>,
}

impl wit::Host for HostState {}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // WASI functions are linked only for modules that get a context (`Module::wasi`).
        let (ctx, table) = &mut **self
            .wasi
            .get_or_insert_with(|| Box::new((sandbox_wasi(), ResourceTable::new())));
        WasiCtxView { ctx, table }
    }
}

/// Seconds since the Unix epoch every WASI guest sees as "now": 2000-01-01T00:00:00Z.
pub const FIXED_WALL_CLOCK_SECS: u64 = 946_684_800;
/// The seed of every WASI guest's random numbers.
const RANDOM_SEED: u64 = 0x5eed;

/// A clock that never moves: replays see the same time.
struct FixedClock;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_WALL_CLOCK_SECS)
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Replace WASI's timers with a trap: a wait would block the runner thread inside a host
/// call, where neither fuel nor the epoch deadline reaches, and a projection has nothing
/// to wait for.
fn forbid_timers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    linker.allow_shadowing(true);
    // The WASI version wasmtime-wasi 48 defines (guests' 0.2.x imports resolve to it);
    // `a_wasi_module_cannot_wait_on_a_timer` fails if a new version stops shadowing it.
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(
            name,
            move |_, _: (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(wasmtime::Error::msg(format!(
                    "a projection may not wait on a timer (wasi:clocks/monotonic-clock {name})"
                )))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI context of a sandboxed module: nothing to reach, nothing that varies.
fn sandbox_wasi() -> WasiCtx {
    use rand::SeedableRng as _;
    let rng = || rand::rngs::StdRng::seed_from_u64(RANDOM_SEED);
    // The builder's defaults already give no preopens, no env, no args, a closed stdin
    // and discarded stdout/stderr; sockets and name lookup are switched off on top.
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FixedClock)
        .monotonic_clock(FixedClock)
        .secure_random(rng())
        .insecure_random(rng())
        .insecure_random_seed(u128::from(RANDOM_SEED))
        .build()
}

impl bindings::projector::projection::read_model::Host for HostState {
    fn get(&mut self, table: String, key: Vec<Value>) -> wasmtime::Result<Option<Vec<Value>>> {
        let db = self.db.as_mut().ok_or_else(|| {
            wasmtime::Error::msg("read-model `get` is not available while loading the manifest")
        })?;
        let t0 = std::time::Instant::now();
        let row = db
            .get(&table, &key)
            .map_err(|e| wasmtime::Error::msg(e.to_string()));
        self.get_ns += t0.elapsed().as_nanos() as u64;
        row
    }
}

impl bindings::projector::projection::log::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.logs.len() < self.max_log_lines {
            self.logs.push((level, message));
        } else {
            self.dropped_logs += 1;
        }
        Ok(())
    }
}

/// The store limits, recording the largest memory granted (for accounting).
struct PeakLimiter {
    limits: StoreLimits,
    peak: usize,
}

impl wasmtime::ResourceLimiter for PeakLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            self.peak = self.peak.max(desired);
        }
        Ok(granted)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The process-wide engine and linker, plus the compile cache.
pub struct Runtime {
    engine: Engine,
    /// The projection world alone: for modules that import no WASI.
    linker: Linker<HostState>,
    /// The projection world plus WASI (sync, empty context).
    wasi_linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    ticker_stop: Arc<AtomicBool>,
}

/// Epoch ticks per second: the deadline's resolution.
const TICKS_PER_SEC: u64 = 100;

impl Runtime {
    /// Build the engine (fuel, epochs, deterministic floats) and start its epoch ticker.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Runtime> {
        let mut config = Config::new();
        config
            .consume_fuel(limits.fuel_per_event > 0)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true);
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        Projection::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        let mut wasi_linker = linker.clone();
        wasmtime_wasi::p2::add_to_linker_sync(&mut wasi_linker)
            .and_then(|()| forbid_timers(&mut wasi_linker))
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1000 / TICKS_PER_SEC));
                    e.increment_epoch();
                }
            })
            .context("starting the epoch ticker")?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating cache dir {}", dir.display()))?;
        }
        Ok(Runtime {
            engine,
            linker,
            wasi_linker,
            limits,
            cache_dir,
            ticker_stop,
        })
    }

    /// The limits every module runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compile (or load from cache) a component, check its world and read its manifest.
    pub fn load(&self, wasm: &[u8]) -> Result<Module> {
        let hash = hex::encode(Sha256::digest(wasm));
        let (component, from_cache) = self.compile_cached(wasm, &hash)?;
        let wasi = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:"));
        let linker = if wasi {
            &self.wasi_linker
        } else {
            &self.linker
        };
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "the component does not fit the projector:projection@0.1.0 world: {e:#}"
            )
        })?;
        let pre = ProjectionPre::new(pre).map_err(|e| {
            anyhow::anyhow!("the component does not export the projection world: {e:#}")
        })?;
        let mut module = Module {
            pre,
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            hash,
            from_cache,
            wasi,
            schema: None,
        };
        let (_state, manifest) = module.call(None, |p, store| p.call_manifest(store), 0);
        let manifest = manifest
            .map_err(|e| anyhow::anyhow!("calling the module's `manifest` export: {e:#}"))?;
        let schema = Schema::new(&manifest).context("invalid manifest")?;
        module.schema = Some(Arc::new(schema));
        Ok(module)
    }

    fn compile_cached(&self, wasm: &[u8], hash: &str) -> Result<(Component, bool)> {
        let Some(dir) = &self.cache_dir else {
            return Ok((compile(&self.engine, wasm)?, false));
        };
        // The key covers the engine's settings and version, so stale artifacts never load.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let path = dir.join(format!("{hash}-{:016x}.cwasm", h.finish()));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this same engine
            // configuration (the key says so) into the host's own data directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable compile cache entry: {e}")
                }
            }
        }
        let component = compile(&self.engine, wasm)?;
        match component.serialize() {
            Ok(bytes) => write_atomic(&path, &bytes)
                .unwrap_or_else(|e| tracing::warn!(path = %path.display(), "could not cache compiled module: {e:#}")),
            Err(e) => tracing::warn!("could not serialize compiled module: {e}"),
        }
        Ok((component, false))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    Component::new(engine, wasm)
        .map_err(|e| anyhow::anyhow!("not a valid WebAssembly component: {e:#}"))
}

/// Write through a temporary file and rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// A loaded projection module: compiled, linked, manifest validated.
pub struct Module {
    pre: ProjectionPre<HostState>,
    engine: Engine,
    limits: Limits,
    /// SHA-256 of the component bytes.
    pub hash: String,
    /// True when the compiled code came from the on-disk cache (no recompile).
    pub from_cache: bool,
    /// True when the module imports WASI (and so runs with the empty WASI context).
    pub wasi: bool,
    schema: Option<Arc<Schema>>,
}

/// What one `handle` call produced besides its ops.
#[derive(Debug, Default, Clone)]
pub struct CallStats {
    /// Fuel the call consumed.
    pub fuel_used: u64,
    /// Log lines the module wrote (up to the cap).
    pub logs: Vec<(Level, String)>,
    /// Log lines over the cap.
    pub dropped_logs: usize,
    /// Nanoseconds spent serving `get`.
    pub get_ns: u64,
    /// Largest linear memory the instance grew to, in bytes.
    pub peak_memory: usize,
}

impl Module {
    /// The limits the module runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The validated manifest.
    pub fn schema(&self) -> &Arc<Schema> {
        self.schema
            .as_ref()
            .expect("schema is set by Runtime::load")
    }

    /// Run one batch through a fresh instance. `db` is lent to the instance for `get`.
    pub fn handle(
        &self,
        db: &mut Option<ProjectionDb>,
        events: &[Event],
    ) -> (CallStats, Result<Vec<Op>, CallError>) {
        let (state, out) = self.call(
            db.take(),
            |p, store| p.call_handle(store, events),
            events.len() as u64,
        );
        let (mut state, fuel_used) = state;
        *db = state.db.take();
        let stats = CallStats {
            fuel_used,
            logs: std::mem::take(&mut state.logs),
            dropped_logs: state.dropped_logs,
            get_ns: state.get_ns,
            peak_memory: state.limits.peak,
        };
        let result = match out {
            Ok(Ok(ops)) => Ok(ops),
            Ok(Err(e)) => Err(CallError::Handle(e)),
            Err(e) => Err(self.explain(e, &stats.logs)),
        };
        (stats, result)
    }

    fn explain(&self, e: wasmtime::Error, logs: &[(Level, String)]) -> CallError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallError::OutOfFuel,
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.timeout_ms),
            _ if format!("{e:#}").contains("growing memory") => {
                CallError::MemoryLimit(self.limits.memory_mib)
            }
            _ => {
                // A guest panic logs its message just before it aborts: name it.
                let last_error = logs
                    .iter()
                    .rev()
                    .find(|(l, _)| matches!(l, Level::Error))
                    .map(|(_, m)| m.as_str());
                let mut msg = format!("{e:#}");
                if let Some(m) = last_error {
                    msg = format!("{m} ({msg})");
                }
                CallError::Trap(msg)
            }
        }
    }

    /// Instantiate in a fresh store with the limits set, run `f`, return the state.
    fn call<R>(
        &self,
        db: Option<ProjectionDb>,
        f: impl FnOnce(&Projection, &mut Store<HostState>) -> wasmtime::Result<R>,
        events: u64,
    ) -> ((HostState, u64), wasmtime::Result<R>) {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_mib << 20)
            .instances(4)
            .tables(8)
            .memories(2)
            .trap_on_grow_failure(true)
            .build();
        let limits = PeakLimiter { limits, peak: 0 };
        let state = HostState {
            db,
            limits,
            max_log_lines: self.limits.max_log_lines,
            logs: Vec::new(),
            dropped_logs: 0,
            get_ns: 0,
            wasi: self
                .wasi
                .then(|| Box::new((sandbox_wasi(), ResourceTable::new()))),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let budget = self.limits.fuel_per_event.saturating_mul(events.max(1));
        if self.limits.fuel_per_event > 0 {
            // Cannot fail: fuel is enabled on the engine exactly when fuel_per_event > 0.
            let _ = store.set_fuel(budget);
        }
        store.set_epoch_deadline((self.limits.timeout_ms * TICKS_PER_SEC / 1000).max(1));
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|p| f(&p, &mut store));
        let fuel_used = if self.limits.fuel_per_event > 0 {
            budget - store.get_fuel().unwrap_or(0)
        } else {
            0
        };
        ((store.into_data(), fuel_used), result)
    }
}
