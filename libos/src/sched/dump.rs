//! A dump of the scheduler's state for a hung system (Linux's sysrq-t): every task with
//! its state and where it is queued, each CPU's running task and flags, and the
//! sleepers. A backend calls it when its hypervisor asks (Xen: `VIRQ_DEBUG`, raised by
//! the debug key `q`), so that a domain whose vCPUs all idle shows which task waits.
//!
//! It never waits for a lock (a holder may be what hangs): each lock is tried once, and
//! what sits behind a lock that is held is reported as such. Without the run-queue
//! locks it still prints each CPU's lock-free snapshots, and a task's scheduling state
//! is read as a snapshot (its fields are atomics).

use core::sync::atomic::Ordering::Relaxed;

use super::runq::{self as rq, RQ};
use super::sleep::{SLEEPERS, deadline_of};
use super::task::TASKS;
use crate::irqflags::IrqsOff;
use crate::percpu::{self, CpuId, PerCpu};

/// Prints the dump on the console.
///
/// Context: any, irqs off (an interrupt handler included).
pub fn dump(_irqs_off: &IrqsOff<'_>) {
    let now = crate::time::now_ns();
    let ncpus = rq::NCPUS.load(Relaxed);
    crate::println!("sched dump at {now} ns: {ncpus} CPUs");
    for (c, lock) in RQ.iter().enumerate().take(ncpus) {
        let area = percpu::cpu(c as CpuId);
        crate::println!(
            "  cpu {c}: current {} online {} idle {} need_resched {} in_idle {}",
            rq::CURRENT_ID[c].load(Relaxed),
            area.is_some_and(PerCpu::is_online),
            rq::IDLE_CPUS.load(Relaxed) & (1 << c) != 0,
            area.is_some_and(|a| a.need_resched.load(Relaxed)),
            area.is_some_and(|a| a.in_idle.load(Relaxed)),
        );
        match lock.try_lock() {
            Some(q) => crate::println!("    queued {}", q.queue.len()),
            None => crate::println!("    run-queue lock held"),
        }
    }
    match TASKS.try_lock() {
        Some(tab) => {
            crate::println!("  {} tasks", tab.map.len());
            for (id, e) in &tab.map {
                let t = e.task.get();
                crate::println!(
                    "  task {} {}: {:?} {:?} cpu {} queued {} on_rq {} on_cpu {} last_cpu {}{}",
                    id.0,
                    t.name,
                    t.state(),
                    t.prio,
                    t.cpu.load(Relaxed),
                    t.queued.load(Relaxed),
                    t.on_rq.load(Relaxed),
                    t.on_cpu.load(Relaxed),
                    t.last_cpu.load(Relaxed),
                    if t.is_idle { " (idle)" } else { "" }
                );
            }
        }
        None => crate::println!("  task table lock held"),
    }
    for (c, lock) in SLEEPERS.iter().enumerate().take(ncpus) {
        match lock.try_lock() {
            Some(s) => {
                if let Some(t) = s.queue.first() {
                    crate::println!(
                        "  cpu {c}: {} sleepers, the first task {} due in {} ns",
                        s.queue.len(),
                        t.get().id.0,
                        deadline_of(t).wrapping_sub(now) as i64
                    );
                }
            }
            None => crate::println!("  cpu {c}: sleeper lock held"),
        }
    }
}
