//! Interrupt enable/disable, as guards, with irq-state tracing.
//!
//! The only way libos and apps change the irq state is through this module, which
//! reports every change to the tracing state (`PerCpu::traced_irqs_on`), the analogue of
//! Linux's `trace_hardirqs_on/off`. Debug builds check the traced state against the
//! hardware at every interrupt entry and in [`assert_irqs_disabled`]: a path that
//! enables interrupts without reporting it (the missing `trace_hardirqs_on` after a
//! preemptible hypercall in Thomas Gleixner, "Re: [RFC PATCH 1/5] entry: Pass pt_regs to
//! irqentry_exit_cond_resched()", LKML, 2022-08-09) is caught with a panic naming the place.

use core::marker::PhantomData;
use core::sync::atomic::Ordering::Relaxed;

use crate::percpu::this_cpu;
use crate::platform::Platform;

fn platform() -> &'static dyn Platform {
    crate::console::platform().expect("irqflags used before the platform registered")
}

/// Whether irq-state checks run (debug builds).
pub const TRACING: bool = cfg!(debug_assertions);

/// Reports that irqs are now on (call right after the hardware state changed, or right
/// before returning to a context that will have them on). Always inlined: the entry
/// core's non-instrumentable code calls it.
#[inline(always)]
pub fn trace_hardirqs_on() {
    this_cpu().traced_irqs_on.store(true, Relaxed);
}

/// Reports that irqs are now off. Always inlined, like [`trace_hardirqs_on`].
#[inline(always)]
pub fn trace_hardirqs_off() {
    this_cpu().traced_irqs_on.store(false, Relaxed);
}

/// Whether interrupts are enabled on this CPU (hardware state).
pub fn irqs_enabled() -> bool {
    platform().irqs_enabled()
}

/// Enables interrupts and reports it.
pub fn local_irq_enable() {
    trace_hardirqs_on();
    platform().irqs_enable();
}

/// Disables interrupts and reports it.
pub fn local_irq_disable() {
    platform().irqs_disable();
    trace_hardirqs_off();
}

/// Panics (debug builds) unless interrupts are disabled, in hardware and as traced.
#[track_caller]
pub fn assert_irqs_disabled() {
    if TRACING {
        let hw = irqs_enabled();
        let traced = this_cpu().traced_irqs_on.load(Relaxed);
        assert!(
            !hw && !traced,
            "irq-state: irqs must be disabled here (hardware on: {hw}, traced on: {traced})"
        );
    }
}

/// Checks that the traced state matches the hardware (debug builds); `place` names the
/// code that ran with the state, `rip` its address when known (symbolized by xtask).
#[track_caller]
pub fn check_consistent(hw_on: bool, place: &str, rip: u64) {
    if TRACING && hw_on && !this_cpu().traced_irqs_on.load(Relaxed) {
        panic!(
            "irq-state tracing: interrupts were enabled without trace_hardirqs_on ({place}, interrupted code at\n  rip {rip:#018x}\n)"
        );
    }
}

/// Proof that interrupts are off on this CPU, for functions that require it.
///
/// It borrows what keeps irqs off (an [`IrqGuard`], through [`IrqGuard::token`]), so the
/// borrow checker refuses a token that outlives its guard: once the guard drops and
/// irqs may be on again, no proof that they are off is left.
///
/// ```no_run
/// use libos::irqflags::IrqGuard;
/// use libos::percpu::PerCpu;
/// let guard = IrqGuard::new();
/// let token = guard.token();
/// let _cpu = PerCpu::get(&token).id();
/// drop(guard);
/// ```
///
/// ```compile_fail,E0505
/// use libos::irqflags::IrqGuard;
/// use libos::percpu::PerCpu;
/// let guard = IrqGuard::new();
/// let token = guard.token();
/// drop(guard); // irqs may be on again here...
/// let _cpu = PerCpu::get(&token).id(); // ...so the token is refused
/// ```
#[derive(Debug)]
pub struct IrqsOff<'guard> {
    _guard: PhantomData<&'guard IrqGuard>,
    _not_send: PhantomData<*const ()>,
}

impl IrqsOff<'_> {
    /// Asserts that irqs are off and returns the token, for code that has no guard
    /// because the CPU entered it with irqs off.
    ///
    /// # Safety
    /// Irqs must really be off for as long as the token is used (callers: entry code,
    /// which runs with the CPU's interrupt flag clear), whatever lifetime the caller
    /// picks for it.
    #[track_caller]
    pub unsafe fn assume() -> Self {
        assert_irqs_disabled();
        IrqsOff {
            _guard: PhantomData,
            _not_send: PhantomData,
        }
    }
}

/// Irqs off until dropped, then restored to what they were (not blindly enabled).
#[derive(Debug)]
#[must_use = "irqs are re-enabled when the guard drops"]
pub struct IrqGuard {
    was_on: bool,
    _not_send: PhantomData<*const ()>,
}

impl IrqGuard {
    /// Disables interrupts; the previous state comes back on drop.
    pub fn new() -> Self {
        let was_on = irqs_enabled();
        local_irq_disable();
        IrqGuard {
            was_on,
            _not_send: PhantomData,
        }
    }

    /// The token proving irqs are off; it borrows the guard, so it cannot outlive it.
    pub fn token(&self) -> IrqsOff<'_> {
        IrqsOff {
            _guard: PhantomData,
            _not_send: PhantomData,
        }
    }
}

impl Default for IrqGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        if self.was_on {
            // Releasing the outermost guard is a preemption point under `full` (a wake-up
            // made while irqs were off may have asked for a reschedule): taken before
            // irqs come back on, so no interrupt can slip in between.
            crate::preempt::resched_on_irq_restore(&self.token());
            local_irq_enable();
        }
    }
}

/// Test-only: enables interrupts *without* reporting it, the bug class the tracing must
/// catch. Used by `crash -- untraced-irq` to prove the check works.
#[doc(hidden)]
pub fn test_enable_irqs_untraced() {
    platform().irqs_enable();
}
