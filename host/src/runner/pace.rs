//! How many events the next call into a module gets: at most `max_events`, about as many
//! as the module handles in a tenth of its deadline at the speed its last call measured,
//! and few enough that the ops and memory it used per event stay within half their
//! limits.
//!
//! Large batches are cheap for a fast module (an order's later events fall in the batch
//! that created it, so the module's overlay answers their reads), but the same count
//! takes a slow one (an interpreter, ~150 µs per event) seconds per call, close to the
//! wall-clock backstop. Sizing each call by the last one gives each module the largest
//! batch that stays well inside its limits.

use std::time::Duration;

use crate::runtime::Limits;

/// Events in the first call, before anything is known of the module.
const FIRST: usize = 1_000;
/// Fewest events a call is sized to (a call has a fixed cost too).
const FEWEST: usize = 100;
/// Most a batch may grow from one call to the next, and what a failed call divides by.
const GROWTH: usize = 4;
/// Share of the deadline one call is sized to take.
const SHARE_OF_DEADLINE: u32 = 10;

/// The size of a runner's next batch, learned from its calls.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    next: usize,
    max: usize,
    target: Duration,
    /// Half the ops one call may return.
    ops: usize,
    /// Half the memory an instance may grow to, in bytes.
    memory: usize,
    /// Every call gets `max` (`adaptive = false`).
    fixed: bool,
}

impl Pace {
    /// Batches of at most `max` events for a module running under `limits`; each of
    /// exactly `max` unless `adaptive`.
    pub(crate) fn new(max: usize, limits: &Limits, adaptive: bool) -> Pace {
        let max = max.max(1);
        Pace {
            next: if adaptive { FIRST.min(max) } else { max },
            max,
            target: Duration::from_millis(limits.timeout_ms) / SHARE_OF_DEADLINE,
            ops: limits.max_ops_per_batch / 2,
            memory: (limits.memory_mib << 20) / 2,
            fixed: !adaptive,
        }
    }

    /// Events to ask the source for.
    pub(crate) fn next(&self) -> usize {
        self.next
    }

    /// A call handled `events` in `took` (from when its deadline started), returned
    /// `ops` ops and grew the module's memory to `memory` bytes.
    pub(crate) fn measured(&mut self, events: usize, took: Duration, ops: usize, memory: usize) {
        if events == 0 || self.fixed {
            return;
        }
        // What fits, at the rate this call measured, in each budget.
        let fits = |budget: u128, used: u128| {
            usize::try_from(budget.saturating_mul(events as u128) / used.max(1))
                .unwrap_or(usize::MAX)
        };
        let by_time = fits(self.target.as_nanos(), took.as_nanos());
        let by_ops = fits(self.ops as u128, ops as u128);
        let by_memory = fits(self.memory as u128, memory as u128);
        self.next = by_time
            .min(by_ops)
            .min(by_memory)
            .min(self.next.saturating_mul(GROWTH))
            .clamp(FEWEST.min(self.max), self.max);
    }

    /// A call failed: it may have been too large for a limit, so the next is smaller.
    pub(crate) fn failed(&mut self) {
        if self.fixed {
            return;
        }
        self.next = (self.next / GROWTH).max(FEWEST.min(self.max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn pace(max: usize) -> Pace {
        Pace::new(max, &Limits::default(), true)
    }

    #[test]
    fn a_fast_module_grows_to_the_cap_a_slow_one_shrinks_to_its_share_of_the_deadline() {
        let mut fast = pace(50_000);
        assert_eq!(fast.next(), FIRST);
        // 4 µs per event: a second holds 250,000, so it grows by ×4 up to the cap.
        fast.measured(1_000, Duration::from_millis(4), 300, 2 * MIB);
        assert_eq!(fast.next(), 4_000);
        // A batch read ahead at the old size teaches the same rate.
        fast.measured(1_000, Duration::from_millis(4), 300, 2 * MIB);
        assert_eq!(fast.next(), 16_000);
        fast.measured(16_000, Duration::from_millis(64), 5_000, 9 * MIB);
        assert_eq!(fast.next(), 50_000);

        // 150 µs per event: a tenth of 10 s holds 6,666.
        let mut slow = pace(50_000);
        slow.measured(1_000, Duration::from_millis(150), 300, 20 * MIB);
        assert_eq!(slow.next(), 4_000, "growth is bounded");
        slow.measured(4_000, Duration::from_millis(600), 1_000, 20 * MIB);
        assert_eq!(slow.next(), 6_666);
        // It gets slower (10 ms per event): a hundred, never fewer.
        slow.measured(6_666, Duration::from_secs(67), 1_000, 20 * MIB);
        assert_eq!(slow.next(), FEWEST);
    }

    #[test]
    fn ops_and_memory_per_event_bound_the_batch_too() {
        // Fast, but 40 ops per event: half of a million ops is 12,500 events.
        let mut many_ops = pace(50_000);
        many_ops.measured(1_000, Duration::from_millis(1), 40_000, MIB);
        many_ops.measured(4_000, Duration::from_millis(4), 160_000, MIB);
        assert_eq!(many_ops.next(), 12_500);
        // Fast, but 64 MiB for 4,000 events: half of 256 MiB holds 8,000.
        let mut big = pace(50_000);
        big.measured(1_000, Duration::from_millis(1), 10, 16 * MIB);
        big.measured(4_000, Duration::from_millis(4), 10, 64 * MIB);
        assert_eq!(big.next(), 8_000);
    }

    #[test]
    fn a_failed_call_shrinks_the_next_and_the_cap_holds() {
        let mut p = pace(50_000);
        p.measured(1_000, Duration::from_millis(1), 10, MIB);
        assert_eq!(p.next(), 4_000);
        p.failed();
        assert_eq!(p.next(), 1_000);
        p.failed();
        p.failed();
        assert_eq!(p.next(), FEWEST);
        p.measured(0, Duration::ZERO, 0, 0);
        assert_eq!(p.next(), FEWEST, "an empty call teaches nothing");
        // A cap below the first size is the size, and nothing goes below it.
        assert_eq!(pace(97).next(), 97);
        let mut tiny = pace(50);
        tiny.measured(50, Duration::from_secs(60), 10, MIB);
        assert_eq!(tiny.next(), 50);
        tiny.failed();
        assert_eq!(tiny.next(), 50);
        // Not adaptive: every call gets the cap, whatever the calls measure.
        let mut fixed = Pace::new(50_000, &Limits::default(), false);
        fixed.measured(50_000, Duration::from_secs(9), 10, MIB);
        fixed.failed();
        assert_eq!(fixed.next(), 50_000);
    }
}
