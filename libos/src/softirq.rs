//! Bottom halves: work an interrupt defers to run after its handler, on the irq stack,
//! with interrupts enabled.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::{budget, irqflags};

/// Timer expiry (wake sleepers, time slices, re-arm).
pub const TIMER: u32 = 1;
/// Network interfaces have news (frames received or transmitted): wake their tasks.
pub const NET: u32 = 2;
/// A test event arrived ([`crate::test_event`]): wake its waiter.
pub const TEST_EVENT: u32 = 4;

/// This CPU's pending set (per CPU: a bottom half runs where it was raised, e.g. the
/// timer's re-arms that CPU's timer).
fn pending_set() -> &'static AtomicU32 {
    &crate::percpu::this_cpu().softirq_pending
}

/// Marks `which` pending on this CPU (any context).
pub fn raise(which: u32) {
    // Irqs off between finding this CPU's set and setting the bit: from task context a
    // migration in between would raise it on the CPU the task left, which may be
    // halted with nothing to make it look.
    let _irqs = irqflags::IrqGuard::new();
    pending_set().fetch_or(which, Relaxed);
}

/// [`raise`] from an interrupt handler: irqs are off, so this CPU's set cannot change
/// under it (no guard, no platform call).
///
/// Context: irqs off (an interrupt handler).
pub fn raise_in_irq(which: u32) {
    irqflags::assert_irqs_disabled();
    pending_set().fetch_or(which, Relaxed);
}

/// Whether any bottom half is pending on this CPU.
pub fn pending() -> bool {
    pending_set().load(Relaxed) != 0
}

/// Passes one run of the bottom halves makes over this CPU's pending set (Linux's
/// `MAX_SOFTIRQ_RESTART`); each pass after the first runs what interrupts raised
/// during the one before.
pub const MAX_RESTART: u32 = 10;

/// Runs pending bottom halves until none is left, or [`MAX_RESTART`] passes ran.
///
/// What a storm of interrupts keeps raising beyond that stays pending, counted as a
/// deferral ([`budget::Loop::BottomHalves`]), never dropped: after an interrupt, the
/// exit work's loop (`entry::exit_work`) finds it and runs it again after its
/// reschedule check, so a task the storm woke gets the CPU in between where the
/// preemption model allows; on an interrupted idle CPU the idle loop runs it; and every
/// later interrupt's exit runs it too.
///
/// Context: irqs off, on the irq stack; enables irqs around the work.
pub(crate) fn run_pending() {
    let preempt = crate::preempt::preempt_disable();
    let stopped = budget::bounded(MAX_RESTART, || {
        let work = pending_set().swap(0, Relaxed);
        if work == 0 {
            return false;
        }
        irqflags::local_irq_enable();
        if work & TIMER != 0 {
            crate::time::run_timers();
        }
        if work & NET != 0 {
            crate::net::run_softirq();
        }
        if work & TEST_EVENT != 0 {
            crate::test_event::bottom_half();
        }
        irqflags::local_irq_disable();
        true
    });
    if stopped && pending() {
        budget::deferred(budget::Loop::BottomHalves);
    }
    // Dropping with irqs off: the guard's full-preemption check needs irqs on, so this
    // never schedules on the irq stack.
    drop(preempt);
}
