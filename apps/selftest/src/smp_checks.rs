//! Checks of SMP: CPUs online, distinct per-CPU areas, every CPU runs tasks, cross-CPU
//! wake-ups (reschedule IPIs) and call-function IPIs. Only the CPU-count check runs on
//! one CPU (`expect-cpus=1`).

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos::irqflags::IrqGuard;
use libos::percpu::{self, PerCpu};
use libos::sched::{self, Priority};
use libos::sync::Channel;
use libos::testing::Checker;
use libos::{smp, time};

/// `expect-cpus=N` among the app's arguments.
pub fn expected_cpus(args: &libos::Args) -> Option<u32> {
    args.iter()
        .find_map(|a| a.strip_prefix("expect-cpus="))
        .and_then(|n| n.parse().ok())
}

pub fn run(c: &mut Checker, expected: Option<u32>) {
    let n = percpu::online_cpus();
    libos::println!("smp: {n} CPUs online");
    if let Some(want) = expected {
        c.check_eq("smp: every CPU came online", n, want);
    }
    if n < 2 {
        return;
    }
    check_call_function(c, n);
    check_every_cpu_runs_tasks(c, n);
    check_cross_cpu_wakeup(c);
}

static SEEN_ID: AtomicU64 = AtomicU64::new(u64::MAX);
static SEEN_AREA: AtomicU64 = AtomicU64::new(0);

fn record_cpu() {
    let irqs = IrqGuard::new();
    let area = PerCpu::get(&irqs);
    SEEN_ID.store(u64::from(area.id()), SeqCst);
    SEEN_AREA.store(core::ptr::from_ref(area) as u64, SeqCst);
}

fn check_call_function(c: &mut Checker, n: u32) {
    let mut areas = BTreeSet::new();
    let mut ids_ok = true;
    for cpu in 0..n {
        SEEN_ID.store(u64::MAX, SeqCst);
        smp::call_on(cpu, record_cpu);
        ids_ok &= SEEN_ID.load(SeqCst) == u64::from(cpu);
        areas.insert(SEEN_AREA.load(SeqCst));
    }
    c.check(
        "smp: call-function IPI runs on each CPU, which reports its own id",
        ids_ok,
        format_args!("an id did not match its CPU"),
    );
    c.check_eq(
        "smp: per-CPU areas (GS base) are distinct",
        areas.len(),
        n as usize,
    );
}

/// `n` tasks wait for each other, so they must run at the same time, on `n` CPUs.
fn check_every_cpu_runs_tasks(c: &mut Checker, n: u32) {
    let arrived = Arc::new(AtomicU64::new(0));
    let cpus = Arc::new(libos::sync::Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (arrived, cpus) = (arrived.clone(), cpus.clone());
            sched::spawn("together", Priority::Normal, move || {
                arrived.fetch_add(1, SeqCst);
                // (Generous: on an oversubscribed host a vCPU thread can wait seconds
                // for a core under TCG; a CPU that never comes still ends the wait.)
                let deadline = time::now_ns() + 10_000_000_000;
                while arrived.load(SeqCst) < u64::from(n) && time::now_ns() < deadline {
                    core::hint::spin_loop();
                }
                // The CPU it waited on, read before the lock: a task that blocks on
                // the lock may resume on the CPU the other one just left.
                let cpu = percpu::cpu_id();
                cpus.lock().push(cpu);
            })
        })
        .collect();
    handles.into_iter().for_each(sched::JoinHandle::join);
    let distinct: BTreeSet<u32> = cpus.lock().iter().copied().collect();
    c.check_eq(
        "smp: every CPU runs one of N tasks that wait for each other",
        distinct.len(),
        n as usize,
    );
    let idle_cpus: Vec<u32> = (0..n)
        .filter(|&c| percpu::cpu(c).is_some_and(|a| a.task_switches.load(SeqCst) == 0))
        .collect();
    c.check(
        "smp: every CPU switched tasks",
        idle_cpus.is_empty(),
        format_args!("no switches on CPUs {idle_cpus:?}"),
    );
}

/// Whether every online CPU but this one is in its idle loop's halt (a snapshot).
fn others_idle() -> bool {
    let me = percpu::cpu_id();
    (0..percpu::MAX_CPUS as u32)
        .filter(|&c| c != me)
        .filter_map(percpu::cpu)
        .filter(|a| a.is_online())
        .all(|a| a.in_idle.load(SeqCst))
}

/// A task blocked on a channel is woken from this CPU, which keeps spinning (it never
/// blocks), so the wake-up must reach another CPU: by a reschedule IPI to an idle one.
fn check_cross_cpu_wakeup(c: &mut Checker) {
    const ROUNDS: u64 = 20;
    let to = Arc::new(Channel::new());
    let reply = Arc::new(AtomicU64::new(0));
    let (rx, tx) = (to.clone(), reply.clone());
    let echo = sched::spawn("echo", Priority::Normal, move || {
        for _ in 0..ROUNDS {
            let v: u64 = rx.recv();
            tx.store(v, SeqCst);
        }
    });
    let ipis = smp::reschedule_ipis();
    let mut answered = 0;
    for i in 1..=ROUNDS {
        // Send only once the echo task blocked and its CPU went idle: sent earlier (a
        // fast sender against a slow echo, as on uhyve's software KVM, where every
        // ring-0 instruction is emulated), the value would be waiting when the echo
        // next looks, no wake-up would be needed, and no IPI either.
        let deadline = time::now_ns() + 2_000_000_000;
        while !others_idle() && time::now_ns() < deadline {
            core::hint::spin_loop();
        }
        to.send(i);
        let deadline = time::now_ns() + 2_000_000_000;
        while reply.load(SeqCst) != i && time::now_ns() < deadline {
            core::hint::spin_loop();
        }
        answered += u64::from(reply.load(SeqCst) == i);
    }
    echo.join();
    c.check_eq(
        "smp: a spinning CPU's wake-ups run the woken task elsewhere (20 round trips)",
        answered,
        ROUNDS,
    );
    let sent = smp::reschedule_ipis() - ipis;
    c.check(
        "smp: those wake-ups went by reschedule IPI",
        sent > 0,
        format_args!("no reschedule IPI"),
    );
}
