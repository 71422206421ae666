//! Work budgets: a loop that takes work for as long as it keeps arriving (the bottom
//! halves, a backend's event scan) makes a bounded number of passes and leaves the rest
//! for later, so a storm of interrupts or events cannot hold one CPU in interrupt
//! context (Linux's `MAX_SOFTIRQ_RESTART`, and its NAPI budget, which the net task's
//! receive budget is: see `net::stack`). What is left stays pending, never dropped:
//! each loop's doc says who runs it next. The deferrals are counted for `/status`.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A budgeted loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// The bottom halves of one interrupt exit (or of one `do_softirq`).
    BottomHalves,
    /// A backend's scan of pending events in one upcall (Xen's event channels).
    EventScan,
}

static DEFERRALS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts one pass of `l` that stopped at its budget with work left.
pub fn deferred(l: Loop) {
    DEFERRALS[l as usize].fetch_add(1, Relaxed);
}

/// How many passes of `l` stopped at their budget with work left, since boot.
pub fn deferrals(l: Loop) -> u64 {
    DEFERRALS[l as usize].load(Relaxed)
}

/// Runs `pass` until it reports that it found no work (`false`) or it ran `max` times;
/// returns whether it was stopped by the budget (then work may be left: the caller
/// checks, and counts a deferral if so).
pub fn bounded(max: u32, mut pass: impl FnMut() -> bool) -> bool {
    for _ in 0..max {
        if !pass() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_stops_at_its_budget_and_leaves_the_rest() {
        // Work that keeps arriving: every pass finds more.
        let mut passes = 0;
        assert!(bounded(10, || {
            passes += 1;
            true
        }));
        assert_eq!(passes, 10);
        // Work that runs out first: the loop ends by itself.
        let mut left = 3;
        assert!(!bounded(10, || {
            if left == 0 {
                return false;
            }
            left -= 1;
            true
        }));
        assert_eq!(left, 0);
    }

    #[test]
    fn deferrals_are_counted_per_loop() {
        let (b, e) = (deferrals(Loop::BottomHalves), deferrals(Loop::EventScan));
        deferred(Loop::EventScan);
        assert_eq!(deferrals(Loop::EventScan), e + 1);
        assert!(deferrals(Loop::BottomHalves) >= b);
    }
}
