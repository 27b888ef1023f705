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
    /// The ops one call may return.
    ops: usize,
    /// The memory an instance may grow to, in bytes.
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
            ops: limits.max_ops_per_batch,
            memory: limits.memory_mib.saturating_mul(1 << 20),
            fixed: !adaptive,
        }
    }

    /// Events to ask the source for.
    pub(crate) fn next(&self) -> usize {
        self.next
    }

    /// A call handled `events` in `took` (from when its deadline started), returned
    /// `ops` ops, and its memory went from `memory.0` bytes as created to `memory.1`.
    /// A call of fewer than a hundred events (a live one) is mostly fixed cost: it
    /// teaches nothing.
    pub(crate) fn measured(
        &mut self,
        events: usize,
        took: Duration,
        ops: usize,
        memory: (usize, usize),
    ) {
        if events < FEWEST.min(self.max) || self.fixed {
            return;
        }
        // What fits, at the rate this call measured, in each budget.
        let fits = |budget: u128, used: u128| {
            usize::try_from(budget.saturating_mul(events as u128) / used.max(1))
                .unwrap_or(usize::MAX)
        };
        let by_time = fits(self.target.as_nanos(), took.as_nanos());
        let by_ops = fits(self.ops as u128 / 2, ops as u128);
        // Half of what is left once the module's memory is created, at what this call
        // grew it by per event.
        let (initial, peak) = memory;
        let room = self.memory.saturating_sub(initial) / 2;
        let by_memory = fits(room as u128, peak.saturating_sub(initial) as u128);
        // The floor is for time (a call has a fixed cost); the limits bound it too, and
        // a batch is never sized past four times one that was measured (with read-ahead,
        // the batch measured can be a size behind the one asked for).
        self.next = by_time
            .max(FEWEST)
            .min(by_ops)
            .min(by_memory)
            .min(events.saturating_mul(GROWTH))
            .clamp(1, self.max);
    }

    /// A call failed: it may have been too large for a limit, so the next is smaller
    /// (with read-ahead, the batch after it was already read at the old size).
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fast_module_grows_to_the_cap_a_slow_one_shrinks_to_its_share_of_the_deadline() {
        let mut fast = pace(50_000);
        assert_eq!(fast.next(), FIRST);
        // 4 µs per event: a second holds 250,000, so it grows ×4 per batch measured.
        fast.measured(1_000, ms(4), 300, (MIB, 2 * MIB));
        assert_eq!(fast.next(), 4_000);
        // A batch read ahead at the old size: no further than four times it.
        fast.measured(1_000, ms(4), 300, (MIB, 2 * MIB));
        assert_eq!(fast.next(), 4_000);
        fast.measured(4_000, ms(16), 1_200, (MIB, 5 * MIB));
        assert_eq!(fast.next(), 16_000);
        fast.measured(16_000, ms(64), 5_000, (MIB, 9 * MIB));
        assert_eq!(fast.next(), 50_000);

        // 150 µs per event: a tenth of 10 s holds 6,666.
        let mut slow = pace(50_000);
        slow.measured(1_000, ms(150), 300, (20 * MIB, 21 * MIB));
        assert_eq!(slow.next(), 4_000, "growth is bounded");
        slow.measured(4_000, ms(600), 1_000, (20 * MIB, 24 * MIB));
        assert_eq!(slow.next(), 6_666);
        // It gets slower (10 ms per event): a hundred, never fewer for time alone.
        slow.measured(6_666, Duration::from_secs(67), 1_000, (20 * MIB, 24 * MIB));
        assert_eq!(slow.next(), FEWEST);
    }

    #[test]
    fn ops_and_memory_per_event_bound_the_batch_too() {
        // Fast, but 40 ops per event: half of a million ops is 12,500 events.
        let mut many_ops = pace(50_000);
        many_ops.measured(1_000, ms(1), 40_000, (MIB, MIB));
        many_ops.measured(4_000, ms(4), 160_000, (MIB, MIB));
        assert_eq!(many_ops.next(), 12_500);
        // Fast, but 16 MiB per 1,000 events: half of 256 MiB holds 8,000.
        let mut big = pace(50_000);
        big.measured(1_000, ms(1), 10, (0, 16 * MIB));
        big.measured(4_000, ms(4), 10, (0, 64 * MIB));
        assert_eq!(big.next(), 8_000);
        // An interpreter that starts at 40 MiB of a 64 MiB limit and grows 2 MiB per
        // 1,000 events: half of the 24 MiB left holds 6,000 (its start is not per event).
        let limits = Limits {
            memory_mib: 64,
            ..Limits::default()
        };
        let mut interpreter = Pace::new(50_000, &limits, true);
        interpreter.measured(1_000, ms(50), 10, (40 * MIB, 42 * MIB));
        interpreter.measured(4_000, ms(200), 10, (40 * MIB, 48 * MIB));
        assert_eq!(interpreter.next(), 6_000);
        // Below the floor when a limit says so: 2 ops per event against 50.
        let limits = Limits {
            max_ops_per_batch: 100,
            ..Limits::default()
        };
        let mut tight = Pace::new(50_000, &limits, true);
        tight.measured(1_000, ms(1), 2_000, (MIB, MIB));
        assert_eq!(tight.next(), 25);
    }

    #[test]
    fn small_or_failed_calls_and_the_cap() {
        let mut p = pace(50_000);
        // Live: three events in 2 ms are the call's fixed cost, not the module's speed.
        p.measured(3, ms(2), 3, (MIB, MIB));
        assert_eq!(p.next(), FIRST);
        p.measured(1_000, ms(1), 10, (MIB, 2 * MIB));
        assert_eq!(p.next(), 4_000);
        p.failed();
        assert_eq!(p.next(), 1_000);
        p.failed();
        p.failed();
        assert_eq!(p.next(), FEWEST);
        // A cap below the first size is the size, and nothing goes below it.
        assert_eq!(pace(97).next(), 97);
        let mut tiny = pace(50);
        tiny.measured(50, Duration::from_secs(60), 10, (MIB, 2 * MIB));
        assert_eq!(tiny.next(), 50);
        tiny.failed();
        assert_eq!(tiny.next(), 50);
        // Not adaptive: every call gets the cap, whatever the calls measure.
        let mut fixed = Pace::new(50_000, &Limits::default(), false);
        fixed.measured(50_000, Duration::from_secs(9), 10, (MIB, 2 * MIB));
        fixed.failed();
        assert_eq!(fixed.next(), 50_000);
    }
}
