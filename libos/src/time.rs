//! Time: the monotonic clock, the tick, sleepers, tickless idle.
//!
//! The platform provides a clock and a one-shot timer; libos decides when the next
//! timer interrupt is needed: at the earliest sleeper's deadline, and one tick ahead
//! while the running task has competition (time slicing). With nothing to do the timer
//! stays disarmed (tickless idle).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::irqflags::{IrqGuard, IrqsOff};
use crate::regs::Regs;
use crate::{percpu, sched, softirq};

/// Default tick rate (`hz=` on the command line).
pub const DEFAULT_HZ: u32 = 100;
/// Deadline meaning "no timer".
pub const NEVER: u64 = u64::MAX;

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static TICK_NS: AtomicU64 = AtomicU64::new(1_000_000_000 / DEFAULT_HZ as u64);
static TIMER_IRQS: AtomicU64 = AtomicU64::new(0);
static PANIC_IN_TIMER: AtomicBool = AtomicBool::new(false);

fn platform() -> &'static dyn crate::Platform {
    crate::console::platform().expect("time used before the platform registered")
}

/// Sets the tick rate (from `hz=`).
pub(crate) fn set_hz(hz: u32) {
    TICK_NS.store(1_000_000_000 / u64::from(hz.max(1)), Relaxed);
}

/// The tick period in nanoseconds.
pub fn tick_ns() -> u64 {
    TICK_NS.load(Relaxed)
}

/// Initializes the platform clock and timer once (lazily: images that never use time
/// never pay for calibration).
pub fn ensure_init() {
    if !INITIALIZED.load(Relaxed) {
        let _g = IrqGuard::new();
        if !INITIALIZED.swap(true, Relaxed) {
            platform().timer_init();
        }
    }
}

/// Monotonic nanoseconds.
pub fn now_ns() -> u64 {
    ensure_init();
    platform().now_ns()
}

/// Timer interrupts taken so far.
pub fn timer_interrupts() -> u64 {
    TIMER_IRQS.load(Relaxed)
}

/// Test-only: the next timer interrupt handler panics (for `crash -- irq`).
#[doc(hidden)]
pub fn test_panic_in_timer_interrupt() {
    PANIC_IN_TIMER.store(true, Relaxed);
}

/// The timer interrupt handler; backends pass it to `entry::run_on_irqstack_cond`
/// (after acknowledging the interrupt controller).
///
/// Context: irqs off, on the irq stack.
pub extern "C" fn timer_interrupt(_regs: &mut Regs) {
    TIMER_IRQS.fetch_add(1, Relaxed);
    if PANIC_IN_TIMER.swap(false, Relaxed) {
        timer_handler_panics();
    }
    softirq::raise(softirq::TIMER);
    crate::entry::do_softirq_on_irq_stack();
}

#[inline(never)]
fn timer_handler_panics() -> ! {
    panic!("deliberate panic in the timer interrupt handler");
}

/// The timer bottom half: wakes sleepers, requests time-slice preemption, re-arms.
///
/// Context: softirq (irqs on, on the irq stack).
pub(crate) fn run_timers() {
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    if sched::on_timer(&irqs_off, platform().now_ns()).competition {
        percpu::set_need_resched();
    }
    program_next_event(&irqs_off);
}

/// Arms the timer for the next event: the earliest sleeper, or one tick from now while
/// the running task shares the CPU; disarms it when there is neither.
pub(crate) fn program_next_event(irqs_off: &IrqsOff) {
    if !INITIALIZED.load(Relaxed) {
        return;
    }
    let next = sched::next_event(irqs_off);
    let slice = next
        .tick
        .then(|| platform().now_ns().saturating_add(tick_ns()));
    let deadline = [next.sleeper, slice]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(NEVER);
    platform().set_timer(deadline);
}
