//! A dump of the scheduler's state for a hung system (Linux's sysrq-t): every task with
//! its state and where it is queued, each CPU's running task and flags, and the
//! sleepers. A backend calls it when its hypervisor asks (Xen: `VIRQ_DEBUG`, raised by
//! the debug key `q`), so that a domain whose vCPUs all idle shows which task waits.

use super::*;

/// Prints the dump on the console. Never waits for the scheduler lock (its holder may
/// be what hangs): says so instead.
///
/// Context: any, irqs off (an interrupt handler included).
pub fn dump(_irqs_off: &IrqsOff<'_>) {
    let Some(guard) = SCHED.try_lock() else {
        crate::println!("sched dump: the scheduler lock is held");
        return;
    };
    let Some(s) = guard.as_ref() else {
        return;
    };
    let now = crate::time::now_ns();
    crate::println!("sched dump at {now} ns: {} tasks", s.tasks.len());
    for c in 0..s.cpus {
        let area = percpu::cpu(c as CpuId);
        crate::println!(
            "  cpu {c}: current {} online {} need_resched {} in_idle {} queued {}",
            s.current[c].0,
            area.is_some_and(PerCpu::is_online),
            area.is_some_and(|a| a.need_resched.load(Relaxed)),
            area.is_some_and(|a| a.in_idle.load(Relaxed)),
            s.ready[c].len()
        );
    }
    for (id, t) in &s.tasks {
        crate::println!(
            "  task {} {}: {:?} {:?} queued_on {:?} on_cpu {} last_cpu {}{}",
            id.0,
            t.name,
            t.state,
            t.prio,
            t.queued_on,
            t.on_cpu,
            t.last_cpu,
            if t.is_idle { " (idle)" } else { "" }
        );
    }
    for ((deadline, _), id) in s.sleepers.iter().take(8) {
        crate::println!(
            "  sleeper task {} due in {} ns",
            id.0,
            deadline.saturating_sub(now) as i64
        );
    }
}
