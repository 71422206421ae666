//! Wait queues and blocking on them without a lost wake-up (the waiter registers
//! before it re-checks its condition).

use super::*;

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
    let me = with(irqs_off, |s| {
        let me = s.cur();
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
        me
    });
    queue.waiters.lock().push_back(me);
    if ready() {
        // Cancel. A waker may have taken us off the wait queue and queued us to run
        // meanwhile; no CPU can have picked us (we are on this one: `on_cpu`).
        queue.waiters.lock().retain(|&w| w != me);
        with(irqs_off, |s| {
            s.dequeue(me);
            s.tasks.get_mut(&me).expect("current exists").state = State::Running;
        });
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
    let (me, key) = with(irqs_off, |s| {
        let me = s.cur();
        s.sleep_seq += 1;
        let key = (deadline_ns, s.sleep_seq);
        if timed {
            s.sleepers.insert(key, me);
        }
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
        (me, key)
    });
    queue.waiters.lock().push_back(me);
    if ready() {
        // Cancel, as in `block_on_unless`.
        queue.waiters.lock().retain(|&w| w != me);
        with(irqs_off, |s| {
            s.sleepers.remove(&key);
            s.dequeue(me);
            s.tasks.get_mut(&me).expect("current exists").state = State::Running;
        });
        return;
    }
    if timed {
        crate::time::program_next_event(irqs_off);
    }
    schedule(irqs_off);
    // Woken by one of the two: withdraw from the other (irqs still off, so it cannot
    // fire in between), or it would later wake this task out of an unrelated wait.
    with(irqs_off, |s| s.sleepers.remove(&key));
    queue.waiters.lock().retain(|&t| t != me);
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
