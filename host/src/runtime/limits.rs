//! Sandbox limits: the configured caps, the store limits derived from each component,
//! and the limiter that records peak memory and flags an overrun.

use serde::Deserialize;
use wasmtime::{StoreLimits, StoreLimitsBuilder};

/// Sandbox limits every module of the process runs under (one engine, one set).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU budget per event in Wasm instructions (wasmtime fuel), pooled over a call's
    /// events; 0 turns fuel metering off.
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

/// What a component instantiates: core instances, memories and tables, counted from
/// its binary, so the store admits exactly what the component declares (toolchains
/// differ widely: a Rust guest has one core instance, componentize-py a dozen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Core and component instances.
    pub instances: usize,
    /// Linear memories defined by its core modules.
    pub memories: usize,
    /// Tables defined by its core modules.
    pub tables: usize,
}

impl Footprint {
    /// Count what `wasm` (a component) declares; an unreadable binary counts as minimal
    /// (compilation reports it properly).
    pub fn of(wasm: &[u8]) -> Footprint {
        use wasmparser::Payload;
        let mut f = Footprint::default();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            match payload {
                Ok(Payload::InstanceSection(r)) => f.instances += r.count() as usize,
                Ok(Payload::ComponentInstanceSection(r)) => f.instances += r.count() as usize,
                Ok(Payload::MemorySection(r)) => f.memories += r.count() as usize,
                Ok(Payload::TableSection(r)) => f.tables += r.count() as usize,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        f
    }
}

impl Limits {
    /// The store limits of one instantiation of a component with footprint `f`: its
    /// own instances, memories and tables (at least one of each), each memory capped.
    pub fn store_limits(&self, f: Footprint) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_mib.saturating_mul(1 << 20))
            .instances(f.instances.max(1))
            .memories(f.memories.max(1))
            .tables(f.tables.max(1))
            .trap_on_grow_failure(true)
            .build()
    }
}

/// The store limits, recording the largest memory granted (for accounting) and whether
/// a memory was refused growth (so a trap is reported as the memory limit).
pub struct Limiter {
    limits: StoreLimits,
    /// Largest memory granted, in bytes.
    pub peak: usize,
    /// Largest memory as created (before the module grew it), in bytes.
    pub initial: usize,
    /// Set when a memory asked to grow past the limit.
    pub memory_refused: bool,
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: StoreLimits) -> Limiter {
        Limiter {
            limits,
            peak: 0,
            initial: 0,
            memory_refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum);
        match granted {
            Ok(true) => {
                self.peak = self.peak.max(desired);
                if current == 0 {
                    self.initial = self.initial.max(desired);
                }
            }
            _ => self.memory_refused = true,
        }
        granted
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_counts_what_a_component_declares() {
        let core = wat::parse_str(
            r#"(module (memory 1) (memory 1) (table 1 funcref)
                 (func (export "f")))"#,
        )
        .expect("wat");
        // A bare core module: two memories, one table, no instance sections.
        let f = Footprint::of(&core);
        assert_eq!((f.memories, f.tables, f.instances), (2, 1, 0));
        assert_eq!(Footprint::of(b"not wasm"), Footprint::default());
    }
}
