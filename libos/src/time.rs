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

/// The latest time any CPU has read (see [`now_ns`]).
static LAST_NS: AtomicU64 = AtomicU64::new(0);

/// Monotonic nanoseconds, across CPUs too.
///
/// Each CPU reads its own clock (Xen's `vcpu_time_info` of its vCPU, kvmclock, or the
/// TSC), pinned so that a migration cannot mix one CPU's clock record with another's
/// TSC. The CPUs' clocks need not agree exactly (no TSC is promised stable across
/// vCPUs here), so the result is also never below the latest time any CPU read: a
/// task migrating between reads never sees time go backwards (Linux's pvclock keeps
/// such a `last_value` unless the hypervisor sets the stable bit).
pub fn now_ns() -> u64 {
    ensure_init();
    let t = {
        let _pinned = crate::preempt::preempt_disable();
        platform().now_ns()
    };
    LAST_NS.fetch_max(t, Relaxed).max(t)
}

/// [`now_ns`] where irqs are off already (pinned: no preemption guard needed), the
/// clock initialized.
fn now_ns_irqs_off(_: &IrqsOff<'_>) -> u64 {
    let t = platform().now_ns();
    LAST_NS.fetch_max(t, Relaxed).max(t)
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
///
/// The bottom half it raises runs after the handler, on the irq stack
/// (`entry::run_irq_on_irqstack_cond`).
pub extern "C" fn timer_interrupt(_regs: &mut Regs) {
    TIMER_IRQS.fetch_add(1, Relaxed);
    // The one-shot timer fired: it is disarmed now (whatever it was armed for).
    ARMED[percpu::cpu_id() as usize].store(NEVER, Relaxed);
    if PANIC_IN_TIMER.swap(false, Relaxed) {
        timer_handler_panics();
    }
    if SCHEDULE_IN_TIMER.swap(false, Relaxed) {
        // `crash -- sched-in-irq`: the scheduler must refuse, naming the context.
        crate::sched::yield_now();
    }
    softirq::raise_in_irq(softirq::TIMER);
    // Last: the test event this may send arrives after everything the timer does.
    if crate::test_event::deadline().is_some() {
        crate::test_event::on_timer_interrupt(platform().now_ns());
    }
}

static SCHEDULE_IN_TIMER: AtomicBool = AtomicBool::new(false);

/// Test-only: the next timer interrupt handler calls the scheduler (for
/// `crash -- sched-in-irq`, which shows the scheduler's refusal).
#[doc(hidden)]
pub fn test_schedule_in_timer_interrupt() {
    SCHEDULE_IN_TIMER.store(true, Relaxed);
}

#[inline(never)]
fn timer_handler_panics() -> ! {
    panic!("deliberate panic in the timer interrupt handler");
}

/// The timer bottom half: wakes sleepers, requests time-slice preemption, re-arms
/// (once: the timer's view of the scheduler is taken once, after the wake-ups).
///
/// Context: softirq (irqs on, on the irq stack).
pub(crate) fn run_timers() {
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    // (`now_ns`, not this CPU's raw clock: a sleeper woken by a CPU whose clock runs
    // ahead then reads no earlier time than the one that woke it: `sched::sleep_until`.)
    let next = sched::on_timer(&irqs_off, now_ns_irqs_off(&irqs_off));
    if next.competition {
        percpu::set_need_resched();
    }
    arm(&irqs_off, next);
}

/// Arms the timer for the next event: the earliest sleeper, or one tick from now while
/// the running task shares the CPU; disarms it when there is neither.
pub(crate) fn program_next_event(irqs_off: &IrqsOff<'_>) {
    if !INITIALIZED.load(Relaxed) {
        return;
    }
    arm(irqs_off, sched::next_event(irqs_off));
}

/// Arms this CPU's timer for `next`, unless it is armed for that deadline already (the
/// common case of an idle CPU going back to sleep: the platform is not called).
fn arm(irqs_off: &IrqsOff<'_>, next: sched::NextEvent) {
    let slice = next
        .tick
        .then(|| platform().now_ns().saturating_add(tick_ns()));
    let deadline = [next.sleeper, slice, crate::test_event::deadline()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(NEVER);
    set(irqs_off, deadline);
}

/// Programs this CPU's timer for `deadline` unless it is armed for it already.
fn set(irqs_off: &IrqsOff<'_>, deadline: u64) {
    let armed = &ARMED[percpu::PerCpu::get(irqs_off).id() as usize];
    if armed.load(Relaxed) != deadline {
        armed.store(deadline, Relaxed);
        platform().set_timer(deadline);
    }
}

/// Each CPU's timer deadline as last programmed (`NEVER`: disarmed, or fired). Written
/// by that CPU with irqs off: by the programming, and by its timer interrupt (a one-shot
/// timer disarms itself as it fires; an early or spurious one then only costs a
/// programming the next time).
static ARMED: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(NEVER) }; percpu::MAX_CPUS];

/// Makes sure this CPU's timer fires within a tick: a wake-up gave the running task
/// competition, and the time slice must start (a busy CPU alone is tickless).
///
/// Context: irqs off, the scheduler lock not held.
pub(crate) fn start_tick(irqs_off: &IrqsOff<'_>) {
    if !INITIALIZED.load(Relaxed) {
        return;
    }
    let armed = ARMED[percpu::PerCpu::get(irqs_off).id() as usize].load(Relaxed);
    if armed > platform().now_ns().saturating_add(tick_ns()) {
        program_next_event(irqs_off);
    }
}
