//! The per-CPU run queues, each under its own lock, and the moves between them:
//! wake-up (with placement), work stealing, and letting go of the task a CPU has just
//! switched away from.
//!
//! Lock order (every lock here is a spin lock taken with irqs off, because interrupt
//! handlers wake tasks):
//! 1. the task table's lock ([`super::task::TASKS`]: lookups by id, join, freeing);
//! 2. run-queue locks ([`RQ`]); two are taken in CPU-id order ([`lock_two`]), never
//!    three;
//! 3. leaf locks, never held while taking another: a wait queue's list, a CPU's
//!    sleeper queue, a task's `entry`/`stack` cells.
//!
//! Nothing is waited for while a run-queue lock is held. The one wait of the scheduler,
//! a waker's for a task's `on_cpu` to clear ([`wake`]), holds no run-queue lock (it may
//! hold the table lock, which the CPU it waits for does not take before clearing
//! `on_cpu`).
//!
//! What `RQ[c]` guards: its queue, its `current` and `idle`, and the scheduling state
//! of every task whose `cpu` is `c` (see [`super::task`]). Each CPU also publishes
//! lock-free snapshots of what others need for placement and stealing ([`SUMMARY`],
//! [`RUNNING`], [`IDLE_CPUS`]), written under its lock; a stale snapshot costs a kick
//! or a migration, never a lost task (the decisions are taken again under the locks).

use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire,
    Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};

use spinning_top::guard::SpinlockGuard;

use super::balance::{self, QueueView};
use super::protocol::{WakeStep, wake_step};
use super::queue::{Priority, RunQueue};
use super::task::{State, Task, TaskRef};
use crate::percpu::{self, CpuId, MAX_CPUS};

/// One CPU's run queue and what it runs.
pub(super) struct Rq {
    /// This queue's CPU.
    pub cpu: usize,
    /// Ready tasks whose `cpu` is this one (`queued` set exactly for these).
    pub queue: RunQueue<TaskRef>,
    /// The running task (set once the CPU registered).
    pub current: Option<TaskRef>,
    /// The CPU's idle task (never queued).
    pub idle: Option<TaskRef>,
}

pub(super) type RqGuard = SpinlockGuard<'static, Rq>;

/// Every CPU's run queue.
pub(super) static RQ: [spinning_top::Spinlock<Rq>; MAX_CPUS] = [const {
    spinning_top::Spinlock::new(Rq {
        cpu: 0,
        queue: RunQueue::new(),
        current: None,
        idle: None,
    })
}; MAX_CPUS];

/// Per CPU: its queue's view ([`encode`]d; 0 for empty), written under its lock.
static SUMMARY: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Per CPU: the priority of its running task, written under its lock at each switch.
static RUNNING: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
/// Bit `c`: CPU `c` runs its idle task. Changed by `c` under its lock.
pub(super) static IDLE_CPUS: AtomicU32 = AtomicU32::new(0);
/// CPUs registered (boot CPU and every AP that called `init_secondary`): 1 + the
/// highest id. Queues beyond are never looked at.
pub(super) static NCPUS: AtomicUsize = AtomicUsize::new(1);
/// Per CPU: its tick found competition from another queue; its next pick balances.
pub(super) static BALANCE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the id of its running task (a snapshot for `current()`), written at switch.
pub(super) static CURRENT_ID: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(1) }; MAX_CPUS];
/// Per CPU: the task it is switching away from (null: none). Written by `schedule`
/// under the lock just before the stack switch, taken by `finish_switch` on the same
/// CPU right after it.
pub(super) static SWITCHED_FROM: [AtomicPtr<Task>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Per CPU statistics, each written only by its CPU (a load and a store, no locked
/// instruction): tasks taken from other queues, and switches into a task that ran on
/// another CPU last.
pub(super) static STEALS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub(super) static MIGRATIONS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Adds one to a counter only its own CPU writes.
pub(super) fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
}

fn encode(v: Option<QueueView>) -> u32 {
    v.map_or(0, |v| {
        (v.prio as u32 + 1) | (v.len.min(0xff_ffff) as u32) << 8
    })
}

fn decode(x: u32) -> Option<QueueView> {
    let prio = match x & 0xff {
        0 => return None,
        1 => Priority::Low,
        2 => Priority::Normal,
        _ => Priority::High,
    };
    Some(QueueView {
        prio,
        len: (x >> 8) as usize,
    })
}

/// CPU `c`'s queue as last published (lock-free).
pub(super) fn summary(c: usize) -> Option<QueueView> {
    SUMMARY.get(c).and_then(|s| decode(s.load(Relaxed)))
}

/// Whether any registered CPU's queue holds a task (lock-free snapshot).
pub(super) fn anything_queued() -> bool {
    SUMMARY[..NCPUS.load(Relaxed)]
        .iter()
        .any(|s| s.load(Relaxed) != 0)
}

impl Rq {
    /// Its queue's view: best priority and how many tasks of it.
    pub fn view(&self) -> Option<QueueView> {
        let prio = self.queue.best()?;
        Some(QueueView {
            prio,
            len: self.queue.len_at(prio),
        })
    }

    /// Writes this queue's summary for other CPUs (under the lock).
    pub fn publish(&self) {
        SUMMARY[self.cpu].store(encode(self.view()), Relaxed);
    }

    /// Queues ready task `t`, whose `cpu` is this queue's.
    pub fn enqueue(&mut self, t: TaskRef) {
        self.enqueue_unpublished(t);
        self.publish();
    }

    /// [`Self::enqueue`] without updating the summary: for `schedule`, whose pick
    /// publishes it (before it drops the lock, or on its steal path after taking it
    /// again; until then no other CPU can be misled, as the lock is held).
    pub fn enqueue_unpublished(&mut self, t: TaskRef) {
        let task = t.get();
        debug_assert!(task.state() == State::Ready && !task.queued.load(Relaxed));
        debug_assert_eq!(task.cpu.load(Relaxed) as usize, self.cpu);
        task.queued.store(true, Relaxed);
        task.on_rq.store(true, Relaxed);
        self.queue.push(t, task.prio);
    }

    /// Takes the first task of the best level (O(1)). (Only this CPU's own task can be
    /// on a CPU while queued here: the one it is switching away from, which it may pick
    /// again. Every other way into this queue waits for `on_cpu` to clear.)
    pub fn pop(&mut self) -> Option<TaskRef> {
        let t = self.queue.pop()?;
        debug_assert!(!t.get().on_cpu.load(Relaxed) || self.current == Some(t));
        t.get().queued.store(false, Relaxed);
        self.publish();
        Some(t)
    }

    /// Takes `t` out of the queue (it is queued here).
    pub fn remove(&mut self, t: TaskRef) {
        let found = self.queue.remove(&t);
        debug_assert!(found);
        t.get().queued.store(false, Relaxed);
        self.publish();
    }

    /// Takes the first task of the best level that no CPU stands on (for a stealer:
    /// the owner's switched-away task may still be on its stack), a scan.
    fn take_runnable(&mut self) -> Option<TaskRef> {
        let t = self
            .queue
            .take_first_where(|t| !t.get().on_cpu.load(Acquire))?;
        t.get().queued.store(false, Relaxed);
        self.publish();
        Some(t)
    }

    /// Records the switch to `next` in the published snapshots.
    pub fn switched(&self, prev_idle: bool, next: &Task) {
        let bit = 1u32 << self.cpu;
        // (SeqCst: see `kick_idle_after_enqueue`.)
        if next.is_idle && !prev_idle {
            IDLE_CPUS.fetch_or(bit, SeqCst);
        } else if prev_idle && !next.is_idle {
            IDLE_CPUS.fetch_and(!bit, Relaxed);
        }
        RUNNING[self.cpu].store(next.prio as u8, Relaxed);
        CURRENT_ID[self.cpu].store(next.id.0, Relaxed);
    }
}

/// Locks the run queues of CPUs `a` and `b` in id order; returns `a`'s guard and `b`'s
/// (`None` if `b` is `a`).
pub(super) fn lock_two(a: usize, b: usize) -> (RqGuard, Option<RqGuard>) {
    if a == b {
        (RQ[a].lock(), None)
    } else if a < b {
        let ga = RQ[a].lock();
        (ga, Some(RQ[b].lock()))
    } else {
        let gb = RQ[b].lock();
        (RQ[a].lock(), Some(gb))
    }
}

/// What placement reads: the published snapshots.
struct Snapshot;

impl balance::Cpus for Snapshot {
    fn count(&self) -> usize {
        NCPUS.load(Relaxed)
    }
    fn online(&self) -> u32 {
        percpu::online_mask()
    }
    fn idle(&self) -> u32 {
        IDLE_CPUS.load(Relaxed)
    }
    fn kicked(&self, c: usize) -> bool {
        percpu::cpu(c as CpuId).is_some_and(|a| a.need_resched.load(Relaxed))
    }
    fn running(&self, c: usize) -> Priority {
        running(c)
    }
}

/// The priority of CPU `c`'s running task as last published (exact for this CPU's
/// own, with irqs off).
pub(super) fn running(c: usize) -> Priority {
    match RUNNING[c].load(Relaxed) {
        0 => Priority::Low,
        1 => Priority::Normal,
        _ => Priority::High,
    }
}

/// Where [`balance::place`] puts task `t` becoming ready on CPU `me`, and whether to
/// kick there.
fn placement(me: CpuId, t: &Task) -> (usize, bool) {
    balance::place(
        me as usize,
        t.last_cpu.load(Relaxed) as usize,
        t.prio,
        &Snapshot,
    )
}

/// Makes blocked task `t` ready, from CPU `me`, by [`wake_step`]: a task whose CPU has
/// not left it yet just keeps running; one whose CPU is leaving its stack is waited for
/// (with no run-queue lock held: that CPU has irqs off and takes no lock before it
/// clears `on_cpu` that a waker may hold while waiting); one off every CPU is queued
/// where placement says, and that CPU kicked if it should run it now. Returns true if
/// it now waits in this CPU's queue without a kick: it competes with the running task
/// for a time slice, so the caller must see that the tick runs.
///
/// Context: irqs off, the table lock held (it keeps `t` alive), no run-queue lock.
pub(super) fn wake(t: TaskRef, me: CpuId) -> bool {
    let task = t.get();
    loop {
        if task.state() != State::Blocked {
            // (A snapshot, taken again under the lock below. Spares the placement for
            // the common case of waking a task that is awake.)
            return false;
        }
        let (target, kick) = placement(me, task);
        let c = task.cpu.load(Relaxed) as usize;
        let (mut home, mut other) = lock_two(c, target);
        if task.cpu.load(Relaxed) as usize != c {
            continue;
        }
        match wake_step(
            task.state(),
            task.on_rq.load(Relaxed),
            task.on_cpu.load(Acquire),
        ) {
            WakeStep::Nothing => return false,
            WakeStep::KeepRunning => {
                task.set_state(State::Running);
                return false;
            }
            WakeStep::WaitOffCpu => {
                drop((home, other));
                while task.on_cpu.load(Acquire) {
                    core::hint::spin_loop();
                }
                continue;
            }
            WakeStep::Enqueue => {}
        }
        task.set_state(State::Ready);
        match other.as_mut() {
            Some(dest) => {
                task.cpu.store(target as CpuId, Relaxed);
                dest.enqueue(t);
            }
            None => home.enqueue(t),
        }
        drop((home, other));
        if kick {
            crate::smp::kick(target as CpuId);
        } else if percpu::online_mask() == 0 {
            // Before the boot CPU is marked online (scheduler being set up).
            percpu::set_need_resched();
        } else {
            kick_idle_after_enqueue(target);
        }
        return !kick && target == me as usize;
    }
}

/// After queueing a task on busy CPU `target` without a kick: if a CPU went idle
/// meanwhile (placement read an older idle mask), kick it, so it steals the task.
/// Pairs with [`Rq::switched`]: a CPU going idle sets its bit, then (SeqCst, a locked
/// instruction) looks at the queue summaries; the waker wrote the summary, then (the
/// fence) reads the mask. One of the two sees the other (no store-buffer miss with a
/// task left waiting in a busy CPU's queue while another CPU halts).
fn kick_idle_after_enqueue(target: usize) {
    core::sync::atomic::fence(SeqCst);
    let idle = IDLE_CPUS.load(Relaxed) & percpu::online_mask() & !(1 << target);
    if idle != 0 {
        crate::smp::kick(idle.trailing_zeros());
    }
}

/// Takes a task CPU `me` may run from CPU `from`'s queue (not one still on its CPU),
/// making it `me`'s. Returns `me`'s queue locked, and the task.
///
/// Context: irqs off, on `me`, no run-queue lock held.
pub(super) fn steal(me: usize, from: usize) -> (RqGuard, Option<TaskRef>) {
    let (mine, theirs) = lock_two(me, from);
    let Some(mut theirs) = theirs else {
        return (mine, None);
    };
    let t = theirs.take_runnable();
    if let Some(t) = t {
        t.get().cpu.store(me as CpuId, Relaxed);
        bump(&STEALS[me]);
    }
    drop(theirs);
    (mine, t)
}

/// Lets go of `prev`, which CPU `me` has just switched away from: clears its `on_cpu`
/// and, if it is ready, may give it to another CPU: the one `migrate_to` named, or an
/// idle one (a CPU that skipped it while we stood on its stack may have gone idle).
/// Returns the state it had.
///
/// Context: irqs off, on `me`, in the task switched to, no lock held.
pub(super) fn release(me: usize, prev: TaskRef) -> State {
    let p = prev.get();
    // Read while `on_cpu` still pins the task (once it is clear, another CPU may run it,
    // and if it is dead, free it).
    let state = p.state();
    let migrate = p.migrate_to.load(Relaxed);
    let target = if state != State::Ready || p.is_idle {
        None
    } else if migrate != 0 {
        Some(((migrate - 1) as usize, true))
    } else if IDLE_CPUS.load(Relaxed) & percpu::online_mask() & !(1 << me) != 0 {
        let (c, kick) = placement(me as CpuId, p);
        (kick && c != me).then_some((c, false))
    } else {
        None
    };
    let Some((target, migrating)) = target else {
        p.on_cpu.store(false, Release);
        return state;
    };
    let (mut mine, theirs) = lock_two(me, target);
    let mut theirs = theirs.expect("target is another CPU");
    if migrating {
        p.migrate_to.store(0, Relaxed);
        p.cpu.store(target as CpuId, Relaxed);
        theirs.enqueue(prev);
    } else if p.queued.load(Relaxed) && p.cpu.load(Relaxed) as usize == me {
        mine.remove(prev);
        p.cpu.store(target as CpuId, Relaxed);
        theirs.enqueue(prev);
    }
    // Cleared before the target can look (it needs its lock): it never finds a task on
    // another CPU's stack in its own queue.
    p.on_cpu.store(false, Release);
    drop((mine, theirs));
    crate::smp::kick(target as CpuId);
    state
}
