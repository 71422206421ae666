//! Stack-overflow checks in software, for platforms where running into a stack's
//! guard page cannot be reported.
//!
//! On KVM a task that runs off its stack faults on the guard page and the CPU delivers
//! the double fault on an IST stack, which reports it. Xen gives PV guests no IST: Xen
//! writes the exception frame onto the overflowing stack, cannot, and kills the domain
//! without a word. So on such a platform (the backend calls [`enable`]) libos checks
//! the stack depth wherever it gets control: at every interrupt, event and exception
//! entry (the interrupted stack pointer) and at every task switch. A stack pointer in
//! the last [`RED_ZONE`] bytes above the guard page panics with "stack overflow in
//! task N" while there is still room for the report. The check cannot see code that
//! recurses into the guard page between two such points: that still ends the domain
//! (as a crash, without the message).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::percpu::MAX_CPUS;

/// Bytes above the guard page in which a stack pointer counts as an overflow: enough
/// for the panic report (message, backtrace, console) to run on what is left.
pub const RED_ZONE: u64 = 8 * 1024;
const PAGE: u64 = 4096;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Per CPU: the lowest usable address of the running task's stack (0: not a task
/// stack we know, e.g. the boot stack), and the task's id.
static BOTTOM: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TASK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Turns the checks on (backends whose guard-page faults cannot be reported).
///
/// Context: boot, before the scheduler starts.
pub fn enable() {
    ENABLED.store(true, Relaxed);
}

/// Whether the checks are on.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Records that task `task`, whose stack's usable memory starts at `bottom` (`None`:
/// no guarded stack), is about to run on CPU `cpu`.
///
/// Context: irqs off, on `cpu`, just before the switch to that task.
pub(crate) fn set_current(cpu: usize, task: u64, bottom: Option<u64>) {
    if let (Some(b), Some(t)) = (BOTTOM.get(cpu), TASK.get(cpu)) {
        b.store(bottom.unwrap_or(0), Relaxed);
        t.store(task, Relaxed);
    }
}

/// Whether `sp` lies in the red zone of the stack whose usable memory starts at
/// `bottom`, or below it in the guard page (pure).
pub fn overflowing(sp: u64, bottom: u64) -> bool {
    bottom != 0 && sp >= bottom.saturating_sub(PAGE) && sp < bottom.saturating_add(RED_ZONE)
}

/// Panics, naming the task, if `sp` (a stack pointer on CPU `cpu`, now or at the
/// interrupted instruction) is in the running task's red zone. A stack pointer on
/// another stack (the irq stack, the boot stack) never matches.
///
/// Context: any, on `cpu`.
pub fn check(cpu: usize, sp: u64) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    let (Some(b), Some(t)) = (BOTTOM.get(cpu), TASK.get(cpu)) else {
        return;
    };
    let bottom = b.load(Relaxed);
    if overflowing(sp, bottom) {
        // Once: the report must not trip the check again (it runs on the same stack).
        b.store(0, Relaxed);
        panic!(
            "stack overflow in task {}: stack pointer {sp:#x} is {} bytes above the guard page at {:#x} (red zone {RED_ZONE})",
            t.load(Relaxed),
            sp.saturating_sub(bottom),
            bottom.saturating_sub(PAGE)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_red_zone_and_the_guard_page_count() {
        let bottom = 0x10_1000;
        assert!(!overflowing(bottom + RED_ZONE, bottom));
        assert!(overflowing(bottom + RED_ZONE - 8, bottom));
        assert!(overflowing(bottom, bottom));
        assert!(overflowing(bottom - 8, bottom), "in the guard page");
        assert!(
            !overflowing(bottom - PAGE - 8, bottom),
            "another stack below"
        );
        assert!(!overflowing(0x1234, 0), "unknown stack");
        assert!(!overflowing(u64::MAX, u64::MAX - 1));
    }
}
