//! Sleeping until a deadline, and the timer's view of the scheduler: which sleepers
//! are due, and whether the running task has competition (the tick).

use super::*;

/// Blocks the running task until `deadline_ns` (monotonic).
pub fn sleep_until(deadline_ns: u64) {
    crate::time::ensure_init();
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    if crate::time::now_ns() >= deadline_ns {
        return;
    }
    with(&irqs_off, |s| {
        let me = s.cur();
        s.sleep_seq += 1;
        let key = (deadline_ns, s.sleep_seq);
        s.sleepers.insert(key, me);
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
    });
    crate::time::program_next_event(&irqs_off);
    schedule(&irqs_off);
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

/// Wakes sleepers whose deadline passed, and says what the timer does next.
pub(crate) fn on_timer(irqs_off: &IrqsOff<'_>, now: u64) -> NextEvent {
    with(irqs_off, |s| {
        while let Some((&key, &id)) = s.sleepers.first_key_value() {
            if key.0 > now {
                break;
            }
            s.sleepers.remove(&key);
            make_ready(s, id);
        }
        s.next_event()
    })
}

/// What this CPU's timer must do next.
pub(crate) fn next_event(irqs_off: &IrqsOff<'_>) -> NextEvent {
    with(irqs_off, |s| s.next_event())
}
