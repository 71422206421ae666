//! A tiny in-guest test harness: one line per check, then `N passed, N failed`.
//!
//! The exit code [`Checker::finish`] returns is 0 iff every check passed, so the
//! image's exit status carries the result.
#![forbid(unsafe_code)]

use crate::println;

/// Counts and prints checks.
#[derive(Debug, Default)]
pub struct Checker {
    passed: u32,
    failed: u32,
}

impl Checker {
    /// A checker with no results yet.
    pub const fn new() -> Self {
        Checker {
            passed: 0,
            failed: 0,
        }
    }

    /// Records one check; `detail` is printed with a failure.
    pub fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
            println!("ok   {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }

    /// Records `got == want`.
    pub fn check_eq<T: PartialEq + core::fmt::Debug>(&mut self, name: &str, got: T, want: T) {
        let ok = got == want;
        self.check(name, ok, format_args!("got {got:?}, want {want:?}"));
    }

    /// Runs the platform backend's own checks ([`crate::Platform::self_checks`]).
    pub fn platform_checks(&mut self) {
        if let Some(p) = crate::console::platform() {
            p.self_checks(&mut |name, ok, detail| self.check(name, ok, detail));
        }
    }

    /// Prints the summary line; returns the exit code (0 iff nothing failed).
    pub fn finish(self) -> i32 {
        println!("{} passed, {} failed", self.passed, self.failed);
        i32::from(self.failed != 0)
    }
}

/// Hooks that widen race windows deterministically, for tests that prove a window is
/// closed. Disarmed unless a test app arms them; each fires once.
pub mod hooks {
    use core::sync::atomic::{AtomicU32, Ordering::SeqCst};

    /// 1 + the CPU to migrate to in [`after_local_guard_flush`] (0: disarmed).
    static MIGRATE_AFTER_GUARD_FLUSH: AtomicU32 = AtomicU32::new(0);

    /// Arms [`after_local_guard_flush`]: the next stack guard page made moves the
    /// making task to CPU `cpu` right after the local TLB flush, if it may be moved.
    pub fn migrate_after_guard_flush(cpu: crate::percpu::CpuId) {
        MIGRATE_AFTER_GUARD_FLUSH.store(cpu + 1, SeqCst);
    }

    /// Called by a backend between unmapping a guard page (and flushing this CPU's TLB)
    /// and the shootdown on the other CPUs: if armed, migrates the task, as preemption
    /// could at that instant, unless it is pinned there (as it must be).
    pub fn after_local_guard_flush() {
        let target = MIGRATE_AFTER_GUARD_FLUSH.load(SeqCst);
        if target != 0
            && crate::preempt::preemption_allowed()
            && crate::irqflags::irqs_enabled()
            && MIGRATE_AFTER_GUARD_FLUSH.swap(0, SeqCst) == target
        {
            // Until it sticks: an idle CPU may steal the task back before the target
            // picks it.
            for _ in 0..1000 {
                if crate::percpu::cpu_id() == target - 1 {
                    break;
                }
                crate::sched::migrate_to(target - 1);
            }
        }
    }

    /// Whether [`after_local_guard_flush`] is still armed (it did not move the task).
    pub fn guard_flush_hook_armed() -> bool {
        MIGRATE_AFTER_GUARD_FLUSH.load(SeqCst) != 0
    }
}
