//! Per-CPU state.
//!
//! One CPU for now: a single static. (The SMP issue moves this behind the GS base with
//! an accessor usable only with preemption disabled.) Every field is an atomic so
//! interrupt handlers and the interrupted code can touch it without a lock; the doc of
//! each field says who writes it.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// This CPU's state.
#[derive(Debug)]
pub struct PerCpu {
    /// Initial stack pointer of the irq stack (its top); 0 until allocated at boot.
    /// Written once by `entry::init`.
    pub irq_stack_top: AtomicU64,
    /// Lowest address of the irq stack (for the unwinder). Written once by `entry::init`.
    pub irq_stack_bottom: AtomicU64,
    /// How many `run_on_irqstack_cond` calls are active: 0 = not on the irq stack.
    /// Written by `run_on_irqstack_cond` with irqs off.
    pub irq_nesting: AtomicU32,
    /// Preemption-disable depth (guards, hardirq and softirq sections). Written by the
    /// guards of `preempt` and by the entry core, on this CPU only.
    pub preempt_count: AtomicU32,
    /// A reschedule is wanted. Set by wake-ups and the tick (any context), cleared by
    /// the scheduler with irqs off.
    pub need_resched: AtomicBool,
    /// The idle task is waiting in `Platform::idle_wait`. Written by the idle loop with
    /// irqs off; read by `irqentry_enter` (our `exit_rcu`).
    pub in_idle: AtomicBool,
    /// The running task is inside a preemptible section (a long hypercall or long
    /// in-kernel work, see `preempt::preemptible`). Written by that task with irqs off
    /// and by the entry core around its forced reschedule; saved/restored per task by
    /// the scheduler, so it follows the task (seed 001).
    pub in_preemptible: AtomicBool,
    /// Irq-state tracing: whether libos believes irqs are enabled. Written only by the
    /// `irqflags` functions and the entry core.
    pub traced_irqs_on: AtomicBool,
    /// Interrupts taken (all vectors), for statistics and tests.
    pub interrupts: AtomicU64,
}

static CPU0: PerCpu = PerCpu {
    irq_stack_top: AtomicU64::new(0),
    irq_stack_bottom: AtomicU64::new(0),
    irq_nesting: AtomicU32::new(0),
    preempt_count: AtomicU32::new(0),
    need_resched: AtomicBool::new(false),
    in_idle: AtomicBool::new(false),
    in_preemptible: AtomicBool::new(false),
    traced_irqs_on: AtomicBool::new(false),
    interrupts: AtomicU64::new(0),
};

/// This CPU's state. Always inlined (used by non-instrumentable entry code).
#[inline(always)]
pub fn this_cpu() -> &'static PerCpu {
    &CPU0
}

/// Whether a reschedule has been requested.
pub fn need_resched() -> bool {
    this_cpu().need_resched.load(Relaxed)
}

/// Requests a reschedule at the next opportunity the preemption model allows.
pub fn set_need_resched() {
    this_cpu().need_resched.store(true, Relaxed);
}
