//! The WebAssembly runtime: one wasmtime `Engine` per process, components compiled once
//! and cached on disk, a fresh sandboxed instance for every batch.
//!
//! A fresh instance per batch (~tens of µs for a Rust guest) means a module can keep
//! no hidden state between batches, so replays are deterministic whatever the batch
//! boundaries, and a trap never leaves a broken instance behind. Instances come from a
//! pool whose memory stays mapped between them (`pool.rs`), so a batch does not start by
//! faulting in every page it touches.
//!
//! The runtime knows nothing of storage: a module reads its rows through a
//! [`RowReader`] the caller hands to [`Module::handle`]. Modules that import nothing but
//! the projection world get no WASI at all; modules whose toolchain needs WASI (Python,
//! JavaScript, Rust's wasip1) get the empty context of [`sandbox`].

mod epoch;
mod limits;
mod pool;
pub mod sandbox;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use limits::{Footprint, Limits};
pub use sandbox::FIXED_WALL_CLOCK_SECS;

use crate::schema::Schema;
use crate::wit::since_v0_1::{log, read_model};
use crate::wit::{Event, HandleError, Level, Manifest, Op, Value, since_v0_1, since_v0_2};

/// Reads a projection's own rows for the `get` import: all a module may see of storage.
pub trait RowReader: Send {
    /// The row of `table` with primary key `key`, if there is one.
    fn get(&mut self, table: &str, key: &[Value]) -> Result<Option<Vec<Value>>>;
}

/// How a call into a module failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The module returned an error (a `handle-error`).
    #[error("the module returned an error{}: {}", .0.event_index.map(|i| format!(" at batch event {i}")).unwrap_or_default(), .0.message)]
    Handle(HandleError),
    /// The fuel budget of the call ran out.
    #[error("the module ran out of its CPU budget (fuel)")]
    OutOfFuel,
    /// The wall-clock backstop fired.
    #[error("the module ran past its {0} ms deadline")]
    Timeout(u64),
    /// A memory asked to grow past the limit.
    #[error("the module went over its {0} MiB memory limit")]
    MemoryLimit(usize),
    /// The module returned ops that do not follow its contract's packing.
    #[error("the module returned malformed ops: {0}")]
    MalformedOps(String),
    /// Any other trap (a guest panic, `unreachable`, a failing host call).
    #[error("the module trapped: {0}")]
    Trap(String),
}

impl CallError {
    /// The batch event the error names, when the module said which one.
    pub fn event_index(&self) -> Option<usize> {
        match self {
            CallError::Handle(e) => e.event_index.map(|i| i as usize),
            _ => None,
        }
    }
}

/// What a module's calls may touch: its own rows (through a reader), a log, and limits.
/// Each import is served from its own field.
pub struct HostState {
    reader: Option<Box<dyn RowReader>>,
    limiter: limits::Limiter,
    max_log_lines: usize,
    logs: Vec<(Level, String)>,
    dropped_logs: usize,
    get_ns: u64,
    /// The empty WASI context, for modules that import WASI; None for the others.
    wasi: Option<Box<(WasiCtx, ResourceTable)>>,
}

impl crate::wit::since_v0_1::types::Host for HostState {}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // WASI functions are linked only for modules that get a context (`Module::wasi`).
        let (ctx, table) = &mut **self
            .wasi
            .get_or_insert_with(|| Box::new((sandbox::empty_wasi(), ResourceTable::new())));
        WasiCtxView { ctx, table }
    }
}

impl read_model::Host for HostState {
    fn get(&mut self, table: String, key: Vec<Value>) -> wasmtime::Result<Option<Vec<Value>>> {
        let reader = self.reader.as_mut().ok_or_else(|| {
            wasmtime::Error::msg("read-model `get` is not available while loading the manifest")
        })?;
        let t0 = std::time::Instant::now();
        let row = reader
            .get(&table, &key)
            .map_err(|e| wasmtime::Error::msg(format!("{e:#}")));
        self.get_ns += t0.elapsed().as_nanos() as u64;
        row
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.logs.len() < self.max_log_lines {
            self.logs.push((level, message));
        } else {
            self.dropped_logs += 1;
        }
        Ok(())
    }
}

/// The process-wide engine and linkers, plus the compile cache.
pub struct Runtime {
    engine: Engine,
    /// The projection world alone: for modules that import no WASI.
    linker: Linker<HostState>,
    /// The projection world plus WASI (sync, empty context).
    wasi_linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    /// Keeps the calls in flight within the instance pool.
    gate: Arc<pool::Gate>,
}

impl Runtime {
    /// Build the engine (fuel, epochs, deterministic floats, pooled instances) and
    /// start its epoch ticker.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Runtime> {
        let gate = Arc::new(pool::Gate::for_this_machine());
        // `PROJECTOR_ON_DEMAND=1`: instances allocated one by one, not from the pool, so
        // the host runs under valgrind (the pool reserves more address space than
        // valgrind allows) and callgrind counts every instruction of a run.
        let on_demand = std::env::var_os("PROJECTOR_ON_DEMAND").is_some_and(|v| v != "0");
        if on_demand {
            tracing::info!(
                "instances allocated one by one, not from the pool (PROJECTOR_ON_DEMAND)"
            );
        }
        let mut config = Config::new();
        config
            .allocation_strategy(if on_demand {
                InstanceAllocationStrategy::OnDemand
            } else {
                InstanceAllocationStrategy::Pooling(pool::config(gate.slots()))
            })
            .consume_fuel(limits.fuel_per_event > 0)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true);
        // `PROJECTOR_PERFMAP=1`: each module's functions named to `perf` in
        // /tmp/perf-PID.map, to see where a projection spends its time.
        if std::env::var_os("PROJECTOR_PERFMAP").is_some_and(|v| v != "0") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        since_v0_1::Projection::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        let mut wasi_linker = linker.clone();
        wasmtime_wasi::p2::add_to_linker_sync(&mut wasi_linker)
            .and_then(|()| sandbox::forbid_timers(&mut wasi_linker))
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        epoch::start(&engine)?;
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
            gate,
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
                "the component does not fit the projector:projection world (0.1 or 0.2): {e:#}"
            )
        })?;
        let pre = match since_v0_2::ProjectionPre::new(pre.clone()) {
            Ok(p) => Pre::V0_2(p),
            Err(_) => Pre::V0_1(since_v0_1::ProjectionPre::new(pre).map_err(|e| {
                anyhow::anyhow!(
                    "the component does not export the projection world (0.1 or 0.2): {e:#}"
                )
            })?),
        };
        let code = Code {
            pre,
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            footprint: Footprint::of(wasm),
            wasi,
            gate: self.gate.clone(),
        };
        let (_, _, _, manifest) = code.call(None, |p, store| p.manifest(store), 0);
        let manifest = manifest
            .map_err(|e| anyhow::anyhow!("calling the module's `manifest` export: {e:#}"))?;
        Ok(Module {
            schema: Arc::new(Schema::new(&manifest).context("invalid manifest")?),
            bytes: Arc::from(wasm),
            code,
            hash,
            from_cache,
            wasi,
        })
    }

    /// Read and load one module file.
    pub fn load_file(&self, path: &Path) -> Result<Module> {
        std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|bytes| self.load(&bytes))
    }

    /// The module in folder `dir` that provides projection `name` (files that fail to
    /// load are skipped).
    pub fn find(&self, dir: &Path, name: &str) -> Result<Module> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading modules folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| self.load_file(p).ok())
            .find(|m| m.schema().name == name)
            .with_context(|| format!("no module for projection `{name}` in {}", dir.display()))
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
            // configuration (the key says so) into the host's own cache directory.
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

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    Component::new(engine, wasm)
        .map_err(|e| anyhow::anyhow!("not a valid WebAssembly component: {e:#}"))
}

/// Write through a temporary file and rename, so readers never see half a file (and
/// writers racing on one path, say two hosts caching one module, each rename a whole one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{seq}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Packed ops that could not be read (contract 0.2), carried out of the call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct MalformedOps(String);

/// Linked code, by the contract version the module was built against.
enum Pre {
    V0_1(since_v0_1::ProjectionPre<HostState>),
    V0_2(since_v0_2::ProjectionPre<HostState>),
}

/// An instance's exports, by contract version: one place that knows how each version
/// takes a batch.
enum Exports {
    V0_1(since_v0_1::Projection),
    V0_2(since_v0_2::Projection),
}

thread_local! {
    /// The packed batch of a 0.2 call, reused by each runner thread.
    static PACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The batch of a 0.1 call, copied side by side; reused by each runner thread.
    static SIDE_BY_SIDE: std::cell::RefCell<Vec<Event>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copy `e` into a reused slot, keeping the slot's allocations (a derived `clone_from`
/// would allocate anew).
fn copy_event(slot: &mut Event, e: &Event) {
    slot.stream_id.clone_from(&e.stream_id);
    slot.event_type.clone_from(&e.event_type);
    slot.event_id.clone_from(&e.event_id);
    slot.revision = e.revision;
    slot.position = e.position;
    slot.created_ms = e.created_ms;
    slot.content_type.clone_from(&e.content_type);
    slot.data.clone_from(&e.data);
    slot.metadata.clone_from(&e.metadata);
}

impl Exports {
    fn manifest(&self, store: &mut Store<HostState>) -> wasmtime::Result<Manifest> {
        match self {
            Exports::V0_1(p) => p.call_manifest(store),
            Exports::V0_2(p) => p.call_manifest(store),
        }
    }

    fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[&Event],
    ) -> wasmtime::Result<Result<Vec<Op>, HandleError>> {
        match self {
            // 0.1 lowers a list of records: it needs them side by side, copied into
            // events kept from batch to batch (their strings and buffers reused).
            Exports::V0_1(p) => SIDE_BY_SIDE.with_borrow_mut(|owned| {
                owned.truncate(events.len());
                for (slot, e) in owned.iter_mut().zip(events.iter()) {
                    copy_event(slot, e);
                }
                let have = owned.len();
                owned.extend(events[have..].iter().map(|&e| e.clone()));
                p.call_handle(store, owned)
            }),
            Exports::V0_2(p) => {
                let out = PACKED.with_borrow_mut(|packed| {
                    since_v0_2::pack(events, packed);
                    // A runner back at the head sends small batches: it gives back the
                    // room its catch-up batches took (megabytes per runner).
                    if packed.capacity() > (64 << 10).max(4 * packed.len()) {
                        packed.shrink_to(packed.len());
                    }
                    p.call_handle(store, packed)
                })?;
                match out {
                    Ok(bytes) => since_v0_2::unpack_ops(&bytes)
                        .map(Ok)
                        .map_err(|e| wasmtime::Error::new(MalformedOps(e))),
                    Err(e) => Ok(Err(e)),
                }
            }
        }
    }
}

/// Compiled, linked code and what each instantiation is allowed.
struct Code {
    pre: Pre,
    /// Held so the epoch ticker (and so the deadline) lives as long as the module.
    engine: Engine,
    limits: Limits,
    footprint: Footprint,
    wasi: bool,
    /// The engine's gate: an instance takes a pool slot while it exists.
    gate: Arc<pool::Gate>,
}

/// A loaded projection module: compiled, linked, manifest validated.
pub struct Module {
    code: Code,
    /// The component as loaded (kept with each build, for rollback).
    bytes: Arc<[u8]>,
    /// SHA-256 of the component bytes.
    pub hash: String,
    /// True when the compiled code came from the on-disk cache (no recompile).
    pub from_cache: bool,
    /// True when the module imports WASI (and so runs with the empty WASI context).
    pub wasi: bool,
    schema: Arc<Schema>,
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
    /// Largest linear memory as the instance created it, in bytes.
    pub initial_memory: usize,
    /// How long the call took from when its deadline started (after waiting for a slot).
    pub took: Duration,
}

impl Module {
    /// The limits the module runs under.
    pub fn limits(&self) -> &Limits {
        &self.code.limits
    }

    /// The component's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The contract version the module was built against: `0.1` or `0.2`.
    pub fn contract(&self) -> &'static str {
        match self.code.pre {
            Pre::V0_1(_) => "0.1",
            Pre::V0_2(_) => "0.2",
        }
    }

    /// What each instance may create (instances, memories, tables).
    pub fn footprint(&self) -> Footprint {
        self.code.footprint
    }

    /// The validated manifest.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Run one batch through a fresh instance; `get` reads through `reader`.
    pub fn handle(
        &self,
        reader: Box<dyn RowReader>,
        events: &[&Event],
    ) -> (CallStats, Result<Vec<Op>, CallError>) {
        let (mut state, fuel_used, took, out) = self.code.call(
            Some(reader),
            |p, store| p.handle(store, events),
            events.len() as u64,
        );
        let stats = CallStats {
            fuel_used,
            logs: std::mem::take(&mut state.logs),
            dropped_logs: state.dropped_logs,
            get_ns: state.get_ns,
            peak_memory: state.limiter.peak,
            initial_memory: state.limiter.initial,
            took,
        };
        let result = match out {
            Ok(Ok(ops)) => Ok(ops),
            Ok(Err(e)) => Err(CallError::Handle(e)),
            Err(e) => Err(explain(e, self.limits(), &state, &stats.logs)),
        };
        (stats, result)
    }
}

/// Name what went wrong in a call that trapped.
fn explain(
    e: wasmtime::Error,
    limits: &Limits,
    state: &HostState,
    logs: &[(Level, String)],
) -> CallError {
    if let Some(MalformedOps(m)) = e.downcast_ref::<MalformedOps>() {
        return CallError::MalformedOps(m.clone());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel,
        Some(Trap::Interrupt) => CallError::Timeout(limits.timeout_ms),
        _ if state.limiter.memory_refused => CallError::MemoryLimit(limits.memory_mib),
        _ => {
            // A guest panic logs its message just before it aborts: name it, once; the
            // Wasm backtrace (frames without names) goes to the debug log.
            let last_error = logs
                .iter()
                .rev()
                .find(|(l, _)| matches!(l, Level::Error))
                .map(|(_, m)| m.as_str());
            tracing::debug!("trap: {e:?}");
            let cause = match e.downcast_ref::<Trap>() {
                Some(t) => t.to_string(),
                None => e.root_cause().to_string(),
            };
            let msg = match last_error {
                Some(m) => format!("{m} ({cause})"),
                None => cause,
            };
            CallError::Trap(msg)
        }
    }
}

impl Code {
    /// Instantiate in a fresh store with the limits set, run `f`, return the state, the
    /// fuel used and how long it took once admitted.
    fn call<R>(
        &self,
        reader: Option<Box<dyn RowReader>>,
        f: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
        events: u64,
    ) -> (HostState, u64, Duration, wasmtime::Result<R>) {
        // Held until the store (and with it the instance) is dropped below.
        let _pass = self.gate.enter();
        let started = Instant::now();
        let state = HostState {
            reader,
            limiter: limits::Limiter::new(self.limits.store_limits(self.footprint)),
            max_log_lines: self.limits.max_log_lines,
            logs: Vec::new(),
            dropped_logs: 0,
            get_ns: 0,
            wasi: self
                .wasi
                .then(|| Box::new((sandbox::empty_wasi(), ResourceTable::new()))),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let budget = self.limits.fuel_per_event.saturating_mul(events.max(1));
        if self.limits.fuel_per_event > 0 {
            // Cannot fail: fuel is enabled on the engine exactly when fuel_per_event > 0.
            let _ = store.set_fuel(budget);
        }
        store.set_epoch_deadline(epoch::ticks(self.limits.timeout_ms));
        let exports = match &self.pre {
            Pre::V0_1(pre) => pre.instantiate(&mut store).map(Exports::V0_1),
            Pre::V0_2(pre) => pre.instantiate(&mut store).map(Exports::V0_2),
        };
        let result = exports.and_then(|p| f(&p, &mut store));
        let fuel_used = if self.limits.fuel_per_event > 0 {
            budget - store.get_fuel().unwrap_or(0)
        } else {
            0
        };
        (store.into_data(), fuel_used, started.elapsed(), result)
    }
}
