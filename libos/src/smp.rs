//! More than one CPU: bring-up of the others, IPIs, and stopping them all.
//!
//! The backend starts the other CPUs ([`crate::Platform::start_secondary_cpus`]); each
//! ends in [`secondary_main`], which gives it an irq stack and an idle task and puts it
//! online. CPUs talk through IPIs ([`Ipi`]): a reschedule (a wake-up for a task this CPU
//! should run), a call-function (run a function there, [`call_on`]), and halt-all (a
//! panic or fatal error stops every other CPU, so the report prints once).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::irqflags::{self, IrqGuard, IrqsOff};
use crate::percpu::{self, CpuId, MAX_CPUS, PerCpu, this_cpu};
use crate::regs::Regs;

/// An inter-processor interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipi {
    /// Look at the run queue: a task was woken for this CPU.
    Reschedule,
    /// Run the function [`call_on`] left in this CPU's mailbox.
    CallFunction,
    /// Stop (delivered as an NMI where the platform can, so it stops a CPU spinning
    /// with irqs off).
    HaltAll,
}

fn platform() -> &'static dyn crate::Platform {
    crate::console::platform().expect("smp used before the platform registered")
}

/// Starts the other CPUs the platform offers; returns how many came online.
///
/// Context: boot CPU, irqs off, scheduler initialized, once.
pub(crate) fn start() -> u32 {
    platform().start_secondary_cpus(MAX_CPUS as u32 - 1)
}

/// The last step of an application processor's bring-up: its irq stack, its idle
/// task (the running context), online, then the idle loop.
///
/// Context: the AP, irqs off, on its boot stack, after `percpu::init_cpu` and the
/// backend's own setup (descriptor tables, interrupt controller, timer).
pub fn secondary_main() -> ! {
    // SAFETY: APs start with interrupts off and nothing here enables them.
    let irqs_off = unsafe { IrqsOff::assume() };
    crate::entry::init();
    crate::sched::init_secondary(&irqs_off);
    percpu::mark_online(PerCpu::get(&irqs_off));
    crate::sched::idle_loop()
}

/// Reschedule IPIs received, all CPUs (statistics and tests).
static RESCHEDULE_IPIS: AtomicU64 = AtomicU64::new(0);

/// Reschedule IPIs received so far, all CPUs.
pub fn reschedule_ipis() -> u64 {
    RESCHEDULE_IPIS.load(Ordering::Relaxed)
}

/// Asks CPU `cpu` to reschedule: locally a flag, remotely the flag plus an IPI (whose
/// interrupt exit, or the idle loop, then calls the scheduler).
///
/// Context: irqs off (the scheduler's lock is usually held).
pub(crate) fn kick(cpu: CpuId) {
    let Some(area) = percpu::cpu(cpu) else {
        return;
    };
    area.need_resched.store(true, Ordering::Relaxed);
    if cpu != this_cpu().id() {
        platform().send_ipi(cpu, Ipi::Reschedule);
    }
}

/// The reschedule IPI's handler (backends run it through the entry core).
///
/// Context: irqs off, on the irq stack.
pub extern "C" fn reschedule_interrupt(_regs: &mut Regs) {
    RESCHEDULE_IPIS.fetch_add(1, Ordering::Relaxed);
    percpu::set_need_resched();
}

/// One mailbox per CPU: the function [`call_on`] wants run there (0 = empty).
static MAILBOX: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// Runs `f` on CPU `cpu` (in its interrupt context, irqs off) and waits until it ran.
/// On this CPU it runs `f` directly, irqs off as there.
///
/// # Panics
/// If called with irqs off (two CPUs calling each other with irqs off would wait
/// forever), or if `cpu` is not online.
pub fn call_on(cpu: CpuId, f: fn()) {
    assert!(
        irqflags::irqs_enabled(),
        "call_on with irqs off could deadlock"
    );
    let area = percpu::cpu(cpu).filter(|a| a.is_online());
    assert!(area.is_some(), "call_on: CPU {cpu} is not online");
    // Preemption off from the claim to the end: a caller preempted while it holds a
    // mailbox would make every other caller spin for it (forever, under `none`, if
    // they occupy every CPU).
    let pinned = crate::preempt::preempt_disable();
    if pinned.cpu() == cpu {
        let _irqs = IrqGuard::new();
        f();
        return;
    }
    let slot = &MAILBOX[cpu as usize];
    // Claim the mailbox (Acquire: the previous call's effects are done). Irqs stay on
    // while waiting, so a call aimed at us meanwhile is served.
    while slot
        .compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    {
        let _irqs = IrqGuard::new();
        platform().send_ipi(cpu, Ipi::CallFunction);
    }
    // The handler empties the mailbox (Release) after `f` returned.
    while slot.load(Ordering::Acquire) == f as usize {
        core::hint::spin_loop();
    }
    drop(pinned);
}

/// Runs `f` on every other online CPU (see [`call_on`]); a no-op on one CPU.
///
/// # Panics
/// If called with irqs off.
pub fn call_on_others(f: fn()) {
    let me = {
        let irqs = IrqGuard::new();
        PerCpu::get(&irqs).id()
    };
    for cpu in (0..MAX_CPUS as CpuId).filter(|&c| c != me) {
        if percpu::cpu(cpu).is_some_and(PerCpu::is_online) {
            call_on(cpu, f);
        }
    }
}

/// The call-function IPI's handler.
///
/// Context: irqs off, on the irq stack.
pub extern "C" fn call_function_interrupt(_regs: &mut Regs) {
    let slot = &MAILBOX[this_cpu().id() as usize];
    let f = slot.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: only `call_on` writes the mailbox, and only with a `fn()` pointer.
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
        f();
        slot.store(0, Ordering::Release);
    }
}

static HALTING: AtomicBool = AtomicBool::new(false);

/// Stops every other online CPU (halt-all IPI); for a panic or fatal error, so the
/// report prints once and nothing else runs. Does not wait.
///
/// Context: any.
pub fn halt_others() {
    HALTING.store(true, Ordering::SeqCst);
    let Some(p) = crate::console::platform() else {
        return;
    };
    let me = this_cpu().id();
    for cpu in (0..MAX_CPUS as CpuId).filter(|&c| c != me) {
        if percpu::cpu(cpu).is_some_and(PerCpu::is_online) {
            p.send_ipi(cpu, Ipi::HaltAll);
        }
    }
}

/// Whether a halt-all is under way (the halt IPI's handler checks it: an NMI for any
/// other reason is not ours to swallow). Always inlined: NMI entry code calls it before
/// the entry state is consistent.
#[inline(always)]
pub fn halt_requested() -> bool {
    HALTING.load(Ordering::SeqCst)
}

/// Ends this CPU's part in the image (the halt-all IPI's handler, or a CPU that
/// panicked while another one reports).
pub fn halt_this_cpu() -> ! {
    match crate::console::platform() {
        Some(p) => p.halt_cpu(),
        None => loop {
            core::hint::spin_loop();
        },
    }
}
