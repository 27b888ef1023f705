//! The instance pool: wasmtime's pooling allocator, and the gate that keeps the calls in
//! flight within it.
//!
//! Every batch runs in a fresh instance (see the module doc of [`super`]). Allocated on
//! demand, each instance's memory is a new mapping, so every page the batch touches (the
//! packed events copied in, the guest's heap, the ops it packs) is faulted in and zeroed
//! by the kernel, batch after batch: about 60% of the host's page faults with both shop
//! projections. From the pool, a slot's memory stays mapped between instances and its
//! lowest [`KEEP_RESIDENT`] bytes are reset with `memset` (the rest is given back), so
//! the next batch starts on resident pages. A new instance still starts from the
//! module's initial memory: nothing carries over between batches. (Resetting only the
//! pages written, with Linux's page-map scan, measured the same: four pairs, 2 to 2.)
//!
//! The pool has a fixed number of slots, and a slot keeps up to [`KEEP_RESIDENT`] bytes
//! resident once used. So at most [`Gate::slots`] calls run at once (more would only
//! queue for the same cores) and slots are reused before fresh ones are touched: the
//! resident memory of a host stays bounded however many projections it loads.

use std::sync::{Condvar, Mutex};

use wasmtime::PoolingAllocationConfig;

/// Bytes of each memory slot kept resident between instances (reset with `memset`, not
/// given back to the kernel): a shop projection's memory grows to 7–9 MiB over a batch
/// of 10,000 events, 22–34 MiB over 50,000 (above this, pages past it fault in again;
/// more would multiply by the slots what an idle host keeps).
pub const KEEP_RESIDENT: usize = 16 << 20;

/// Per component: core instances (componentize-py makes ~40), memories and tables.
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MEMORIES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 8;

/// The pooling allocator for `slots` components in flight at once.
pub fn config(slots: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_tables_per_module(TABLES_PER_COMPONENT)
        // Interpreters' function tables (CPython's, SpiderMonkey's) run to tens of
        // thousands of entries.
        .table_elements(200_000)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(1 << 20)
        // Reuse a used slot (even one last used by another module) before touching a
        // fresh one: the slots ever used stay as many as the calls ever in flight.
        .max_unused_warm_slots(0);
    pool
}

/// Admits at most `slots` calls at once; a call waits for a free slot.
pub struct Gate {
    slots: u32,
    in_flight: Mutex<u32>,
    freed: Condvar,
}

/// A call's place in the gate, given back when dropped.
pub struct Pass<'a>(&'a Gate);

impl Gate {
    /// A gate for `slots` calls: twice the cores (a call may wait on SQLite for a
    /// `get`), at least four.
    pub fn for_this_machine() -> Gate {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Gate::new(u32::try_from(cores * 2).unwrap_or(u32::MAX).clamp(4, 256))
    }

    /// A gate for `slots` calls.
    pub fn new(slots: u32) -> Gate {
        Gate {
            slots,
            in_flight: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The number of calls admitted at once (and so the pool's size).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Wait for a free slot and take it.
    pub fn enter(&self) -> Pass<'_> {
        // A poisoned lock only means another call panicked holding it; the count is
        // still right (it is changed in one statement).
        let mut n = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= self.slots {
            n = self.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Pass(self)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_call_past_the_slots_waits_until_one_is_given_back() {
        let gate = Arc::new(Gate::new(2));
        let first = gate.enter();
        let _second = gate.enter();
        let entered = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (gate, entered) = (gate.clone(), entered.clone());
            std::thread::spawn(move || {
                let _third = gate.enter();
                entered.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !entered.load(Ordering::SeqCst),
            "a third call got past two slots"
        );
        drop(first);
        waiter.join().expect("waiter");
        assert!(entered.load(Ordering::SeqCst));
        assert_eq!(*gate.in_flight.lock().expect("lock"), 1);
    }
}
