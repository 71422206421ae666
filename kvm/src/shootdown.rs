//! TLB shootdown for stack guard pages: after a guard page is unmapped here, every
//! other CPU drops its translation of it, so an overflow faults on whichever CPU the
//! task runs.
//!
//! With irqs on, a call-function IPI per CPU (`libos::smp::call_on_others`), waited
//! for. With irqs off (a stack made inside an irq guard) a CPU cannot wait for IPIs: the
//! CPU it waits for may itself be waiting for us with irqs off. NMIs are taken whatever
//! a CPU does, so then each other CPU gets an NMI whose handler flushes and reports the
//! generation it flushed ([`on_nmi`]).

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos::percpu::{self, CpuId, MAX_CPUS, PerCpu};
use libos::preempt::PreemptGuard;

/// Flush requests made so far (a request's generation is its number).
static REQUESTED: AtomicU64 = AtomicU64::new(0);
/// The newest generation each CPU has flushed for.
static FLUSHED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Flushes this CPU's TLB (the shootdown's call-function).
fn flush_tlb() {
    x86_64::instructions::tlb::flush_all();
}

/// Makes every other online CPU flush its TLB, and waits until each has. The caller
/// is pinned (`pinned`) since it flushed its own CPU, so the CPU skipped here is the one
/// that flushed.
pub fn flush_others(pinned: &PreemptGuard) {
    if percpu::online_cpus() <= 1 {
        return;
    }
    if libos::irqflags::irqs_enabled() {
        libos::smp::call_on_others(flush_tlb);
        return;
    }
    let me = pinned.cpu();
    let generation = REQUESTED.fetch_add(1, SeqCst) + 1;
    let others = || {
        (0..MAX_CPUS as CpuId)
            .filter(move |&c| c != me && percpu::cpu(c).is_some_and(PerCpu::is_online))
    };
    for cpu in others() {
        crate::smp::send_nmi(cpu);
    }
    for cpu in others() {
        while FLUSHED[cpu as usize].load(SeqCst) < generation {
            core::hint::spin_loop();
        }
    }
}

/// The NMI's part of a shootdown: flushes if a request is newer than this CPU's last
/// flush. Returns whether it did (the NMI was a shootdown's).
///
/// Context: NMI, on its IST stack, before the entry core (touches no lock).
pub fn on_nmi() -> bool {
    let me = percpu::cpu_id() as usize;
    let want = REQUESTED.load(SeqCst);
    if FLUSHED[me].load(SeqCst) >= want {
        return false;
    }
    flush_tlb();
    FLUSHED[me].fetch_max(want, SeqCst);
    true
}
