//! Sleeping until a deadline, and the timer's view of the scheduler: which sleepers
//! are due, and whether the running task has competition (the tick).
//!
//! Each CPU has its own sleeper queue ([`SLEEPERS`], Linux's per-CPU timer bases): a
//! task sleeps in the queue of the CPU it runs on as it goes to sleep, and that CPU's
//! timer wakes it, so a CPU's timer is armed for its own sleepers only and no other CPU
//! wakes for them. The queue is intrusive ([`super::timerq`] over the tasks' own
//! [`SleepNode`](super::task::SleepNode)s): no allocation, nothing that can fail. Each
//! queue's lock is a leaf: never held while taking another.

use core::sync::atomic::Ordering::Relaxed;

use super::balance;
use super::runq as rq;
use super::switch::schedule;
use super::task::{self, TaskRef};
use super::timerq::{Nodes, TimerQueue};
use super::wait::block_current;
use crate::irqflags::{IrqGuard, IrqsOff};
use crate::percpu::{self, MAX_CPUS, PerCpu};

/// One CPU's sleepers.
pub(super) struct Sleepers {
    pub(super) queue: TimerQueue<TaskRef>,
    /// Entries so far (orders equal deadlines).
    seq: u64,
}

/// Every CPU's sleeper queue.
pub(super) static SLEEPERS: [spinning_top::Spinlock<Sleepers>; MAX_CPUS] = [const {
    spinning_top::Spinlock::new(Sleepers {
        queue: TimerQueue::new(),
        seq: 0,
    })
}; MAX_CPUS];

/// The sleeper queues' nodes: the tasks' [`SleepNode`](super::task::SleepNode)s.
pub(super) struct Links;

impl Nodes for Links {
    type N = TaskRef;
    fn key(&self, n: TaskRef) -> (u64, u64) {
        let s = &n.get().sleep;
        (s.deadline.load(Relaxed), s.seq.load(Relaxed))
    }
    fn child(&self, n: TaskRef) -> Option<TaskRef> {
        n.get().sleep.child.get()
    }
    fn next(&self, n: TaskRef) -> Option<TaskRef> {
        n.get().sleep.next.get()
    }
    fn prev(&self, n: TaskRef) -> Option<TaskRef> {
        n.get().sleep.prev.get()
    }
    fn set_child(&self, n: TaskRef, to: Option<TaskRef>) {
        n.get().sleep.child.set(to);
    }
    fn set_next(&self, n: TaskRef, to: Option<TaskRef>) {
        n.get().sleep.next.set(to);
    }
    fn set_prev(&self, n: TaskRef, to: Option<TaskRef>) {
        n.get().sleep.prev.set(to);
    }
}

/// The deadline of a task in a sleeper queue.
pub(super) fn deadline_of(t: TaskRef) -> u64 {
    t.get().sleep.deadline.load(Relaxed)
}

/// Enters the running task `me` in this CPU's sleeper queue until `deadline_ns`; if it
/// is now the first, reprograms this CPU's timer for its next event (the platform is
/// called only if that changes).
///
/// (Reprogrammed, not only brought forward when the deadline is earlier than what is
/// armed: a busy CPU's tick armed just before the deadline would then have to re-arm the
/// timer a moment ahead when it fires, and under QEMU's `-icount` with round-robin vCPUs
/// such a one-shot, armed by a busy vCPU a microsecond ahead, fired only at the other
/// vCPU's next timer: `smp2/latency/section/*` saw every wake-up a tick late. Programmed
/// from here, the timer takes the deadline itself, a tick ahead, as it always did.)
///
/// Context: irqs off, `me` is this CPU's running task and in no sleeper queue.
pub(super) fn add_sleeper(irqs_off: &IrqsOff<'_>, me: TaskRef, deadline_ns: u64) {
    let cpu = PerCpu::get(irqs_off).id();
    let node = &me.get().sleep;
    let first = {
        let mut s = SLEEPERS[cpu as usize].lock();
        s.seq += 1;
        node.deadline.store(deadline_ns, Relaxed);
        node.seq.store(s.seq, Relaxed);
        node.cpu.store(cpu + 1, Relaxed);
        s.queue.insert(&Links, me);
        s.queue.first() == Some(me)
    };
    if first {
        crate::time::program_next_event(irqs_off);
    }
}

/// Takes task `me` out of the sleeper queue it is in; returns false if it is in none
/// (the timer took it out: its deadline has passed, by a clock no CPU reads behind).
///
/// Context: irqs off, `me` is the running task (so nothing else enters it in a queue).
pub(super) fn withdraw(me: TaskRef) -> bool {
    let node = &me.get().sleep;
    let cpu = node.cpu.load(Relaxed);
    if cpu == 0 {
        return false;
    }
    let mut s = SLEEPERS[cpu as usize - 1].lock();
    // (Re-read under the lock: the timer may have taken it out meanwhile.)
    if node.cpu.load(Relaxed) != cpu {
        return false;
    }
    s.queue.remove(&Links, me);
    node.cpu.store(0, Relaxed);
    true
}

/// Blocks the running task until `deadline_ns` (monotonic).
///
/// A wake-up may come early: one meant for an earlier wait of this task (a waker that
/// took it off a wait queue just before the task gave that wait up itself, its
/// condition having come true, acts a moment later). So a task woken while still in
/// its sleeper queue leaves it and sleeps again until the deadline, as Linux's
/// sleepers loop on their condition; one the timer took out needs no clock read.
pub fn sleep_until(deadline_ns: u64) {
    crate::time::ensure_init();
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    if crate::time::now_ns() >= deadline_ns {
        return;
    }
    loop {
        let me = block_current(&irqs_off);
        add_sleeper(&irqs_off, me, deadline_ns);
        schedule(&irqs_off);
        if !withdraw(me) || crate::time::now_ns() >= deadline_ns {
            return;
        }
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
    /// Keep ticking: a task runs (not the idle task, which calls the scheduler after
    /// every interrupt and needs no time slice; leaving idle starts the tick when the
    /// task switched to wants it), and it has competition or several CPUs are online.
    /// The tick is when a busy CPU looks at the other queues again (work
    /// stealing), and under QEMU's `-icount` round-robin TCG a vCPU with no timer of its
    /// own may hold the host thread for seconds while the others wait (seen: a
    /// sleeper's wake-up stuck behind a busy vCPU with its timer disarmed). One CPU
    /// stays tickless while busy and alone.
    pub tick: bool,
}

/// Wakes this CPU's sleepers whose deadline passed, and says what the timer does next.
/// Competition from another CPU's queue asks this CPU's next pick to balance (steal).
pub(crate) fn on_timer(irqs_off: &IrqsOff<'_>, now: u64) -> NextEvent {
    let me = PerCpu::get(irqs_off).id();
    let sleepers = &SLEEPERS[me as usize];
    // (The table lock only when there is something to wake: it keeps a task the queue
    // gave up alive until it is woken, as its own waker could otherwise let it run,
    // end and be freed in between; it comes before the queue's lock.)
    while sleepers
        .lock()
        .queue
        .first()
        .is_some_and(|t| deadline_of(t) <= now)
    {
        task::with_table(irqs_off, |_| {
            // In batches, so the sleeper lock is never held with another.
            let mut due = [None; 16];
            let mut n = 0;
            {
                let mut s = sleepers.lock();
                while n < due.len()
                    && let Some(t) = s.queue.pop_due(&Links, now)
                {
                    t.get().sleep.cpu.store(0, Relaxed);
                    due[n] = Some(t);
                    n += 1;
                }
            }
            for t in due.into_iter().flatten() {
                rq::wake(t, me);
            }
        });
    }
    let next = next_event(irqs_off);
    if next.competition {
        let own = rq::summary(me as usize);
        let running = running_prio(me as usize);
        // Not from its own queue: its next pick looks at every queue (and steals).
        if own.is_none_or(|q| running.is_some_and(|r| q.prio < r)) {
            rq::BALANCE[me as usize].store(true, Relaxed);
        }
    }
    next
}

/// The priority of CPU `me`'s running task, `None` for its idle task (this CPU's own:
/// written by itself at each switch, so exact with irqs off).
fn running_prio(me: usize) -> Option<super::Priority> {
    if rq::IDLE_CPUS.load(Relaxed) & (1 << me) != 0 {
        None
    } else {
        Some(rq::running(me))
    }
}

/// Whether CPU `me`, which has just switched from its idle task to a task of priority
/// `prio`, needs its tick (see [`NextEvent::tick`]): idle disarmed it for everything
/// but its sleepers. A cheap check on the way out of idle: with one CPU online, only its
/// own queue can compete.
pub(super) fn leaving_idle_wants_tick(me: usize, prio: super::Priority) -> bool {
    percpu::online_cpus() > 1 || rq::summary(me).is_some_and(|q| q.prio >= prio)
}

/// What this CPU's timer must do next.
pub(crate) fn next_event(irqs_off: &IrqsOff<'_>) -> NextEvent {
    let me = PerCpu::get(irqs_off).id() as usize;
    let running = running_prio(me);
    let n = rq::NCPUS.load(Relaxed);
    let competition = balance::has_competition_by(me, running, n, rq::summary);
    NextEvent {
        sleeper: SLEEPERS[me].lock().queue.first().map(deadline_of),
        competition,
        tick: running.is_some() && (competition || percpu::online_cpus() > 1),
    }
}
