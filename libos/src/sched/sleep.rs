//! Sleeping until a deadline, and the timer's view of the scheduler: which sleepers
//! are due, and whether the running task has competition (the tick).
//!
//! The sleeper list has a lock of its own, a leaf: never held while taking another.

use alloc::collections::BTreeMap;
use core::sync::atomic::Ordering::Relaxed;

use super::balance;
use super::runq::{self as rq, RQ};
use super::switch::schedule;
use super::task::{self, TaskId};
use super::wait::block_current;
use crate::irqflags::{IrqGuard, IrqsOff};
use crate::percpu::{self, PerCpu};

/// Sleeping tasks: (deadline ns, sequence) → task.
pub(super) struct Sleepers {
    pub(super) map: BTreeMap<(u64, u64), TaskId>,
    seq: u64,
}

pub(super) static SLEEPERS: spinning_top::Spinlock<Sleepers> =
    spinning_top::Spinlock::new(Sleepers {
        map: BTreeMap::new(),
        seq: 0,
    });

/// Enters the running task `me` in the sleeper list until `deadline_ns`; returns its
/// key (to withdraw it).
pub(super) fn add_sleeper(deadline_ns: u64, me: TaskId) -> (u64, u64) {
    let mut s = SLEEPERS.lock();
    s.seq += 1;
    let key = (deadline_ns, s.seq);
    s.map.insert(key, me);
    key
}

/// Blocks the running task until `deadline_ns` (monotonic).
///
/// A wake-up may come early: one meant for an earlier wait of this task (a waker that
/// took it off a wait queue just before the task gave that wait up itself, its
/// condition having come true, acts a moment later). So it sleeps again until the
/// deadline, as Linux's sleepers loop on their condition.
pub fn sleep_until(deadline_ns: u64) {
    crate::time::ensure_init();
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    let mut early = None;
    while crate::time::now_ns() < deadline_ns {
        if let Some(key) = early.take() {
            // Woken early: still in the sleeper list (unless the timer fired meanwhile).
            SLEEPERS.lock().map.remove(&key);
        }
        let me = block_current(&irqs_off);
        early = Some(add_sleeper(deadline_ns, me.get().id));
        crate::time::program_next_event(&irqs_off);
        schedule(&irqs_off);
    }
}

/// Blocks the running task for `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    sleep_until(crate::time::now_ns().saturating_add(ns));
}

/// What this CPU's timer must do next (see [`crate::time::program_next_event`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NextEvent {
    /// The earliest sleeper's deadline.
    pub sleeper: Option<u64>,
    /// The running task has competition: a ready task of equal or higher priority
    /// would run instead of it (from this CPU's queue, or stolen). The tick then asks
    /// for a reschedule (time slice).
    pub competition: bool,
    /// Keep ticking: competition, or, with several CPUs online, a task runs (not the
    /// idle task). The tick is when a busy CPU looks at the other queues again (work
    /// stealing), and under QEMU's `-icount` round-robin TCG a vCPU with no timer of its
    /// own may hold the host thread for seconds while the others wait (seen: a
    /// sleeper's wake-up stuck behind a busy vCPU with its timer disarmed). One CPU
    /// stays tickless while busy and alone.
    pub tick: bool,
}

/// Wakes sleepers whose deadline passed, and says what the timer does next. Competition
/// from another CPU's queue asks this CPU's next pick to balance (steal).
pub(crate) fn on_timer(irqs_off: &IrqsOff<'_>, now: u64) -> NextEvent {
    loop {
        // In batches, so the sleeper lock is never held with another.
        let mut due = [TaskId(0); 16];
        let mut n = 0;
        {
            let mut s = SLEEPERS.lock();
            while n < due.len()
                && let Some((&key, &id)) = s.map.first_key_value()
                && key.0 <= now
            {
                s.map.remove(&key);
                due[n] = id;
                n += 1;
            }
        }
        if n == 0 {
            break;
        }
        wake_tasks_unticked(irqs_off, &due[..n]);
    }
    let next = next_event(irqs_off);
    if next.competition {
        let me = PerCpu::get(irqs_off).id() as usize;
        let own = rq::summary(me);
        let running = running_prio(me);
        // Not from its own queue: its next pick looks at every queue (and steals).
        if own.is_none_or(|q| running.is_some_and(|r| q.prio < r)) {
            rq::BALANCE[me].store(true, Relaxed);
        }
    }
    next
}

/// Wakes `ids` (the timer's caller re-arms the timer itself).
fn wake_tasks_unticked(irqs_off: &IrqsOff<'_>, ids: &[TaskId]) {
    let me = PerCpu::get(irqs_off).id();
    task::with_table(irqs_off, |tab| {
        for &id in ids {
            if let Some(t) = tab.get(id) {
                rq::wake(t, me);
            }
        }
    });
}

/// The priority of CPU `me`'s running task, `None` for its idle task (snapshots).
fn running_prio(me: usize) -> Option<super::Priority> {
    if rq::IDLE_CPUS.load(Relaxed) & (1 << me) != 0 {
        None
    } else {
        let rq = RQ[me].lock();
        rq.current.map(|t| t.get().prio)
    }
}

/// What this CPU's timer must do next.
pub(crate) fn next_event(irqs_off: &IrqsOff<'_>) -> NextEvent {
    let me = PerCpu::get(irqs_off).id() as usize;
    let running = running_prio(me);
    let n = rq::NCPUS.load(Relaxed);
    let mut views = [None; percpu::MAX_CPUS];
    for (c, v) in views[..n].iter_mut().enumerate() {
        *v = rq::summary(c);
    }
    let competition = balance::has_competition(me, running, &views[..n]);
    NextEvent {
        sleeper: SLEEPERS.lock().map.first_key_value().map(|(k, _)| k.0),
        competition,
        tick: competition || (running.is_some() && percpu::online_cpus() > 1),
    }
}
