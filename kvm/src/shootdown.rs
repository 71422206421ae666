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

/// Flushes this CPU's TLB (the shootdown's call-function, and the NMI's flush).
/// Always inlined: the NMI path calls it before the entry core.
#[inline(always)]
fn flush_tlb() {
    // SAFETY: rewriting CR3 with its own value flushes the non-global TLB entries and
    // changes nothing else.
    unsafe {
        core::arch::asm!(
            "mov {0}, cr3",
            "mov cr3, {0}",
            out(reg) _,
            options(nostack, preserves_flags)
        );
    }
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
    if !PerCpu::get(pinned).is_online() {
        // A CPU coming up (its descriptor tables, IST and irq stacks): those stacks are
        // its own, no other CPU ever runs on them, so only its own translation of their
        // guard pages matters, and it flushed that. (Its local APIC may not even be on
        // yet to send an NMI with.)
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
/// Context: NMI, on its IST stack, before the entry core (touches no lock;
/// non-instrumentable).
#[inline(never)]
#[unsafe(link_section = ".noinstr.text")]
pub fn on_nmi() -> bool {
    let Some(flushed) = FLUSHED.get(percpu::cpu_id() as usize) else {
        return false;
    };
    let want = REQUESTED.load(SeqCst);
    if flushed.load(SeqCst) >= want {
        return false;
    }
    flush_tlb();
    flushed.fetch_max(want, SeqCst);
    true
}
