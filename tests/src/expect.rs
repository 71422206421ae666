//! What the apps print, as the cases of several beds expect it.

use crate::Bound;

/// `hello` on the KVM platform.
pub const HELLO: &[&str] = &["Hello from Upcall on kvm"];
/// `selftest` on the KVM platform, every check passed.
pub const SELFTEST: &[&str] = &["selftest on kvm", " passed, 0 failed"];
/// `selftest` under a preemption model.
pub const SELFTEST_MODEL: &[&str] = &["preemption model: ", " passed, 0 failed"];
/// `selftest` with `expect-cpus=N`: every CPU came online and ran its share.
pub const SELFTEST_SMP: &[&str] = &[
    "CPUs online",
    "ok   smp: every CPU came online",
    "ok   smp: every CPU runs one of N tasks that wait for each other",
    "ok   smp: those wake-ups went by reschedule IPI",
    " passed, 0 failed",
];

/// `crash -- pagefault`: the read of an unmapped address, reported.
pub const PAGEFAULT: &[&str] = &[
    "#PF page fault",
    "cr2=0x00007fffdead0000",
    "crash::read_unmapped",
];
/// `crash -- ud`: an invalid opcode, reported.
pub const INVALID_OPCODE: &[&str] = &["#UD invalid opcode", "crash::invalid_opcode"];

/// The stress test found nothing wrong, and tasks did migrate inside their sections.
pub const STRESS_CLEAN: &[(&str, Bound)] = &[
    ("flag_errors", Bound::AtMost(0)),
    ("data_errors", Bound::AtMost(0)),
    ("section_migrations", Bound::AtLeast(1)),
    ("migrations", Bound::AtLeast(1)),
    ("lock_ops", Bound::AtLeast(1)),
    ("lock_errors", Bound::AtMost(0)),
];

/// A panic on every CPU at once (`crash -- smp-panic`): one report, whole.
pub const SMP_PANIC: &[&str] = &[
    "deliberate panic on CPU",
    "backtrace:",
    "crash::smp_panic",
    "end of backtrace",
];
/// ... printed once, not once per CPU.
pub const SMP_PANIC_ONCE: &[&str] = &["panicked at", "backtrace:", "panic while panicking"];

/// What the scheduler's refusal from an interrupt handler prints.
pub const SCHED_IN_IRQ: &[&str] = &[
    "BUG: scheduling from interrupt context",
    "libos::time::timer_interrupt",
];

/// What the irq-state tracing reports when an exit forgot `trace_hardirqs_on`.
pub const UNTRACED: &[&str] = &[
    "irq-state tracing: interrupts were enabled without trace_hardirqs_on",
    "irqentry_enter",
];

/// The latency proof's bound: a woken high-priority task runs within 2 ticks.
pub const WITHIN: &[(&str, Bound)] = &[("max_wake_latency_ticks", Bound::AtMost(2))];
/// With the model-following reschedule bug reproduced, the latency grows with the load.
pub const BUG: &[(&str, Bound)] = &[("max_wake_latency_ticks", Bound::AtLeast(10))];
