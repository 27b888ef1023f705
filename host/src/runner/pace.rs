//! How many events the next call into a module gets: at most `max_events`, and about as
//! many as the module handles in a tenth of its deadline at the speed measured so far.
//!
//! Large batches are cheap for a fast module (an order's later events fall in the batch
//! that created it, so the module's overlay answers their reads), but the same count
//! takes a slow one (an interpreter, ~150 µs per event) seconds per call, close to the
//! wall-clock backstop. Sizing each call by the last one's speed gives each module the
//! largest batch that stays well inside its deadline.

use std::time::Duration;

/// Events in the first call, before any speed is known.
const FIRST: usize = 5_000;
/// Fewest events a call is sized to (a call has a fixed cost too).
const FEWEST: usize = 100;
/// Most a batch may grow from one call to the next.
const GROWTH: usize = 4;
/// Share of the deadline one call is sized to take.
const SHARE_OF_DEADLINE: u32 = 10;

/// The size of a runner's next batch, learned from its calls.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    next: usize,
    max: usize,
    target: Duration,
}

impl Pace {
    /// Batches of at most `max` events for a module whose calls are stopped after
    /// `timeout_ms`.
    pub(crate) fn new(max: usize, timeout_ms: u64) -> Pace {
        let max = max.max(1);
        Pace {
            next: FIRST.min(max),
            max,
            target: Duration::from_millis(timeout_ms) / SHARE_OF_DEADLINE,
        }
    }

    /// Events to ask the source for.
    pub(crate) fn next(&self) -> usize {
        self.next
    }

    /// A call handled `events` in `took`. Only a call that filled at least half its
    /// batch says how fast the module is: a small live batch is mostly the call's fixed
    /// cost.
    pub(crate) fn measured(&mut self, events: usize, took: Duration) {
        if events == 0 || events < self.next / 2 {
            return;
        }
        let per_event = took.as_nanos().max(1) / events as u128;
        let fit = usize::try_from(self.target.as_nanos() / per_event.max(1)).unwrap_or(usize::MAX);
        self.next = fit
            .min(self.next.saturating_mul(GROWTH))
            .clamp(FEWEST.min(self.max), self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_module_grows_to_the_cap_a_slow_one_shrinks_to_its_share_of_the_deadline() {
        let mut fast = Pace::new(50_000, 10_000);
        assert_eq!(fast.next(), FIRST);
        // 4 µs per event: a second holds 250,000, so it grows by ×4 up to the cap.
        fast.measured(5_000, Duration::from_millis(20));
        assert_eq!(fast.next(), 20_000);
        fast.measured(20_000, Duration::from_millis(80));
        assert_eq!(fast.next(), 50_000);

        // 150 µs per event: a tenth of 10 s holds 6,666.
        let mut slow = Pace::new(50_000, 10_000);
        slow.measured(5_000, Duration::from_millis(750));
        assert_eq!(slow.next(), 6_666);
        // It gets slower (10 ms per event): a hundred, never fewer.
        slow.measured(6_666, Duration::from_secs(100));
        assert_eq!(slow.next(), FEWEST);
    }

    #[test]
    fn small_batches_teach_nothing_and_the_cap_holds() {
        let mut pace = Pace::new(50_000, 10_000);
        // Live: one event whose call took 2 ms is not a module handling 500 events/s.
        pace.measured(1, Duration::from_millis(2));
        pace.measured(0, Duration::ZERO);
        assert_eq!(pace.next(), FIRST);
        // A cap below the first size is the size.
        assert_eq!(Pace::new(300, 10_000).next(), 300);
        let mut tiny = Pace::new(50, 10_000);
        tiny.measured(50, Duration::from_secs(60));
        assert_eq!(tiny.next(), 50, "never below the cap's own size");
    }
}
