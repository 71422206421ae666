//! Wait queues and blocking on them without a lost wake-up (the waiter registers
//! before it re-checks its condition), and waking tasks by id.
//!
//! A waiter is named by id in its wait queue; waking one looks it up under the task
//! table's lock, then takes the run-queue lock of its CPU ([`super::runq::wake`]). A
//! timed waiter also sleeps in its CPU's sleeper queue ([`super::sleep`]). A wait
//! queue's list is a leaf lock.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::runq::{self as rq, RQ};
use super::sleep::{add_sleeper, withdraw};
use super::switch::schedule;
use super::task::{self, State, TaskId, TaskRef};
use crate::irqflags::{IrqGuard, IrqsOff};
use crate::percpu::PerCpu;

/// Marks the running task blocked (it stays on this CPU until it calls `schedule`, and
/// a wake-up before that just lets it keep running); returns it.
pub(super) fn block_current(irqs_off: &IrqsOff<'_>) -> TaskRef {
    let rq = RQ[PerCpu::get(irqs_off).id() as usize].lock();
    let me = rq.current.expect("CPU registered");
    me.get().set_state(State::Blocked);
    me
}

/// Takes back [`block_current`] (the caller's condition already holds).
fn unblock_current(irqs_off: &IrqsOff<'_>, me: TaskRef) {
    let _rq = RQ[PerCpu::get(irqs_off).id() as usize].lock();
    // (A waker that came first found it on this CPU and did the same.)
    me.get().set_state(State::Running);
}

/// Wakes tasks `ids` (blocked ones become ready) and, if one of them now competes with
/// the running task on this CPU, starts the time-slice tick: an idle-tickless CPU would
/// otherwise let the running task keep the CPU until it blocks (Linux starts the tick
/// when a wake-up gives the running task competition). A task worth running at once was
/// kicked instead; under `full` the caller's irq-guard release then preempts.
///
/// Context: irqs off; takes the table lock and run-queue locks.
pub(super) fn wake_tasks(irqs_off: &IrqsOff<'_>, ids: impl IntoIterator<Item = TaskId>) {
    let me = PerCpu::get(irqs_off).id();
    let compete = task::with_table(irqs_off, |tab| {
        ids.into_iter().fold(false, |c, id| {
            tab.get(id).is_some_and(|t| rq::wake(t, me)) | c
        })
    });
    if compete {
        crate::time::start_tick(irqs_off);
    }
}

/// Blocks the running task on `queue` unless `ready()`, checked *after* the task is
/// registered as a waiter, says the condition already holds (closing the window in
/// which a waker on another CPU found the queue empty: no lost wake-up). The caller
/// re-checks its condition afterwards either way. (There is no variant without
/// `ready`: on SMP, a task that checked its condition and then blocked without the
/// re-check could sleep through the only wake-up it gets.)
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock;
/// `ready` may take short irq-safe locks.
pub fn block_on_unless(irqs_off: &IrqsOff<'_>, queue: &WaitQueue, ready: impl FnOnce() -> bool) {
    let me = block_current(irqs_off);
    let id = me.get().id;
    queue.waiters.lock().push_back(id);
    if ready() {
        // Cancel. A waker may have taken us off the wait queue meanwhile; it found us
        // on this CPU and left us running.
        queue.waiters.lock().retain(|&w| w != id);
        unblock_current(irqs_off, me);
        return;
    }
    schedule(irqs_off);
}

/// Blocks the running task on `queue` until it is woken or `deadline_ns` (monotonic;
/// `time::NEVER` for no deadline) passes, whichever comes first, unless `ready()` holds
/// once the task is queued as a waiter (a waker on another CPU that found no waiter
/// before that has already made it true: no lost wake-up). The caller re-checks its
/// condition afterwards.
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock.
pub fn block_on_until_unless(
    irqs_off: &IrqsOff<'_>,
    queue: &WaitQueue,
    deadline_ns: u64,
    ready: impl FnOnce() -> bool,
) {
    let timed = deadline_ns != crate::time::NEVER;
    if timed {
        crate::time::ensure_init();
    }
    let me = block_current(irqs_off);
    let id = me.get().id;
    if timed {
        add_sleeper(irqs_off, me, deadline_ns);
    }
    queue.waiters.lock().push_back(id);
    let withdraw_both = || {
        if timed {
            withdraw(me);
        }
        queue.waiters.lock().retain(|&t| t != id);
    };
    if ready() {
        // Cancel, as in `block_on_unless`.
        withdraw_both();
        unblock_current(irqs_off, me);
        return;
    }
    schedule(irqs_off);
    // Woken by one of the two: withdraw from the other (irqs still off, so it cannot
    // fire in between), or it would later wake this task out of an unrelated wait.
    withdraw_both();
}

/// Tasks waiting for something; see [`crate::sync`] for the primitives built on it.
#[derive(Debug, Default)]
pub struct WaitQueue {
    waiters: spinning_top::Spinlock<VecDeque<TaskId>>,
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        WaitQueue {
            waiters: spinning_top::Spinlock::new(VecDeque::new()),
        }
    }

    /// Wakes the longest waiter; returns whether there was one.
    pub fn wake_one(&self) -> bool {
        let guard = IrqGuard::new();
        let next = self.waiters.lock().pop_front();
        if let Some(id) = next {
            wake_tasks(&guard.token(), [id]);
        }
        next.is_some()
    }

    /// Wakes every waiter.
    pub fn wake_all(&self) {
        let guard = IrqGuard::new();
        let all: Vec<TaskId> = self.waiters.lock().drain(..).collect();
        wake_tasks(&guard.token(), all);
    }
}
