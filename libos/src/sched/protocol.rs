//! A task's scheduling state, and the two decisions taken on it under the lock of the
//! run queue of its CPU: what a switching CPU does with the task it leaves
//! ([`prev_step`]), and what a waker does with a blocked task ([`wake_step`]). Pure, and
//! model-checked below against every interleaving of a waker with a CPU that blocks
//! the task and then goes stealing (dropping its own lock in between).
//!
//! The rule (Linux's `__schedule` / `try_to_wake_up`): the switching CPU settles the
//! fate of the task it leaves *before it drops its lock for anything*: still running,
//! it is queued again; otherwise it is taken off its run queue (`on_rq` cleared). A
//! waker that finds the task blocked but still `on_rq` (it has not reached `schedule`
//! yet) lets it keep running. One that finds it off the run queue but still `on_cpu`
//! (its CPU is leaving its stack) waits for `on_cpu` to clear, holding no run-queue
//! lock, and then queues it like any other. So a wake-up can never mark running a task
//! its CPU has already decided to leave (the lost wake-up of the first per-CPU-lock
//! version, which looked at "is it its CPU's current task?" instead of `on_rq`: in the
//! window where a CPU going stealing had dropped its lock, the task was still current,
//! the waker marked it running, and the CPU then left it, queued nowhere).
#![forbid(unsafe_code)]

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum State {
    /// On a CPU.
    Running = 0,
    /// Waiting to run: in a run queue, or (`migrate_to`) on its way to one.
    Ready = 1,
    /// Waiting for a wake-up.
    Blocked = 2,
    /// Finished; freed once off its CPU and detached.
    Dead = 3,
}

impl State {
    pub(super) fn from_u8(x: u8) -> State {
        match x {
            0 => State::Running,
            1 => State::Ready,
            2 => State::Blocked,
            _ => State::Dead,
        }
    }
}

/// What a CPU does, under its run-queue lock, with the task `prev` it is about to
/// switch away from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PrevStep {
    /// Still running (a yield or a preemption): ready again, back in this CPU's queue
    /// (`on_rq` stays set).
    Requeue,
    /// Blocked, dead, or ready for another CPU (`migrate_to`): off the run queue now
    /// (`on_rq` cleared), before the lock is dropped for anything.
    Deactivate,
    /// The CPU's idle task: never queued.
    Idle,
}

/// [`PrevStep`] for a task in `state`.
pub(super) fn prev_step(state: State, is_idle: bool) -> PrevStep {
    if is_idle {
        PrevStep::Idle
    } else if state == State::Running {
        PrevStep::Requeue
    } else {
        PrevStep::Deactivate
    }
}

/// What a waker does with a task, from what it sees under the lock of the task's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WakeStep {
    /// Not blocked (awake already, or dead): nothing.
    Nothing,
    /// Blocked but its CPU has not left it yet (`on_rq`): it just keeps running
    /// (state back to running; Linux's `ttwu_runnable`).
    KeepRunning,
    /// Off its run queue but its CPU still stands on its stack (`on_cpu`): drop the
    /// locks, wait for `on_cpu` to clear, look again (Linux's
    /// `smp_cond_load_acquire(&p->on_cpu, !VAL)`).
    WaitOffCpu,
    /// Off every CPU: ready, queued where placement says.
    Enqueue,
}

/// [`WakeStep`] for a task in `state` with its `on_rq` and `on_cpu` flags.
pub(super) fn wake_step(state: State, on_rq: bool, on_cpu: bool) -> WakeStep {
    match (state, on_rq, on_cpu) {
        (State::Running | State::Ready | State::Dead, _, _) => WakeStep::Nothing,
        (State::Blocked, true, _) => WakeStep::KeepRunning,
        (State::Blocked, false, true) => WakeStep::WaitOffCpu,
        (State::Blocked, false, false) => WakeStep::Enqueue,
    }
}

#[cfg(test)]
mod tests {
    //! A model of the run-queue protocol: CPU A runs task P, which blocks (or yields)
    //! and calls `schedule`; A's own queue may hold a task, CPU B's queue may hold one
    //! that A steals (dropping A's lock in between, as the code does); one or two
    //! wakers wake P from other CPUs. Every interleaving of their steps (each step one
    //! critical section of the code) is explored; at the end P must be exactly one of:
    //! running on A, queued once, or (only if nobody woke it) blocked; and no step may
    //! wait forever.

    use super::*;
    use alloc::vec::Vec;

    /// How the waker decides that P "never left" its CPU.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Variant {
        /// The protocol of this module: P's `on_rq`, settled by `prev_step`.
        OnRq,
        /// The first per-CPU-lock version's: P is still its CPU's current task.
        IsCurrent,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Cur {
        P,
        Own,
        Stolen,
        Idle,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct World {
        variant: Variant,
        /// P's fields.
        state: State,
        on_rq: bool,
        on_cpu: bool,
        /// How many times P is in a run queue (A's; placement is A's business).
        queued: u32,
        /// A's current task and program counter.
        current: Cur,
        a_pc: u8,
        /// A's own queue holds another task; B's queue holds one A may steal.
        own: bool,
        theirs: bool,
        /// P is in the wait queue.
        waiting: bool,
        /// Each waker's program counter.
        w_pc: [u8; 2],
        wakers: usize,
        /// P blocks (true) or yields.
        blocks: bool,
    }

    impl World {
        /// CPU A's next step, if it can take one. Steps: 0 block (or not), 1 schedule
        /// under A's lock (prev settled, pick or decide to steal), 2 the steal under
        /// both locks, 3 the switch and `finish_switch` (clears P's `on_cpu`).
        fn step_a(&mut self) -> bool {
            match self.a_pc {
                0 => {
                    if self.blocks {
                        self.state = State::Blocked;
                        self.waiting = true;
                    }
                    self.a_pc = 1;
                }
                1 => {
                    match prev_step(self.state, false) {
                        PrevStep::Requeue => {
                            self.state = State::Ready;
                            self.queued += 1;
                        }
                        PrevStep::Deactivate => {
                            if self.variant == Variant::OnRq {
                                self.on_rq = false;
                            }
                        }
                        PrevStep::Idle => unreachable!(),
                    }
                    if self.own {
                        self.pick_own();
                        self.a_pc = 3;
                    } else if self.theirs {
                        // Drops A's lock to take both in order.
                        self.a_pc = 2;
                    } else if self.queued > 0 {
                        self.take_p();
                        self.a_pc = 4;
                    } else {
                        self.current = Cur::Idle;
                        self.a_pc = 3;
                    }
                }
                2 => {
                    // The first version re-checked P here; this protocol needs not.
                    self.theirs = false;
                    self.current = Cur::Stolen;
                    self.a_pc = 3;
                }
                3 => {
                    // Off P's stack.
                    self.on_cpu = false;
                    self.a_pc = 4;
                }
                _ => return false,
            }
            true
        }

        fn pick_own(&mut self) {
            // P (queued last) is behind the other task.
            self.own = false;
            self.current = Cur::Own;
        }

        fn take_p(&mut self) {
            self.queued -= 1;
            self.state = State::Running;
            self.current = Cur::P;
        }

        /// Waker `i`'s next step: 0 take P off the wait queue, 1 under P's CPU's lock
        /// decide (`wake_step`), 2 wait for `on_cpu` to clear, then decide again.
        fn step_w(&mut self, i: usize) -> bool {
            match self.w_pc[i] {
                // (A waker acts once P is a waiter: before that, the blocking task's
                // re-check of its condition catches the wake-up.)
                0 if self.a_pc >= 1 || !self.blocks => {
                    self.w_pc[i] = if core::mem::take(&mut self.waiting) {
                        1
                    } else {
                        3
                    };
                }
                1 => {
                    let on_rq = match self.variant {
                        Variant::OnRq => self.on_rq,
                        Variant::IsCurrent => self.current == Cur::P,
                    };
                    match wake_step(self.state, on_rq, self.on_cpu) {
                        WakeStep::Nothing => self.w_pc[i] = 3,
                        WakeStep::KeepRunning => {
                            self.state = State::Running;
                            self.w_pc[i] = 3;
                        }
                        WakeStep::WaitOffCpu => self.w_pc[i] = 2,
                        WakeStep::Enqueue => {
                            self.state = State::Ready;
                            self.on_rq = true;
                            self.queued += 1;
                            self.w_pc[i] = 3;
                        }
                    }
                }
                2 if !self.on_cpu => self.w_pc[i] = 1,
                _ => return false,
            }
            true
        }

        fn done(&self) -> bool {
            self.a_pc == 4 && self.w_pc[..self.wakers].iter().all(|&pc| pc == 3)
        }

        /// What is wrong with a finished run, if anything.
        fn check_end(&self) -> Option<&'static str> {
            let running = self.current == Cur::P;
            match (self.state, running, self.queued) {
                (State::Running, true, 0) | (State::Ready, false, 1) => None,
                (State::Blocked, false, 0) if self.waiting => None,
                (State::Running, false, 0) => Some("P is running, but on no CPU and in no queue"),
                _ => Some("P is lost or in two places"),
            }
        }
    }

    /// Explores every interleaving from `w`; returns the first violation found.
    fn explore(w: &World, trace: &mut Vec<u8>) -> Option<(&'static str, Vec<u8>)> {
        if w.queued > 1 {
            return Some(("P queued twice", trace.clone()));
        }
        let mut moved = false;
        for actor in 0..=w.wakers {
            let mut next = w.clone();
            let stepped = if actor == 0 {
                next.step_a()
            } else {
                next.step_w(actor - 1)
            };
            if stepped {
                moved = true;
                trace.push(actor as u8);
                let bad = explore(&next, trace);
                trace.pop();
                if bad.is_some() {
                    return bad;
                }
            }
        }
        if moved {
            None
        } else if !w.done() {
            Some(("nobody can move: a wait that never ends", trace.clone()))
        } else {
            w.check_end().map(|m| (m, trace.clone()))
        }
    }

    fn worlds(variant: Variant) -> impl Iterator<Item = World> {
        (0..16u8).map(move |bits| World {
            variant,
            state: State::Running,
            on_rq: true,
            on_cpu: true,
            queued: 0,
            current: Cur::P,
            a_pc: 0,
            own: bits & 1 != 0,
            theirs: bits & 2 != 0,
            waiting: false,
            w_pc: [0; 2],
            wakers: 1 + usize::from(bits & 4 != 0),
            blocks: bits & 8 != 0,
        })
    }

    #[test]
    fn no_interleaving_of_wake_and_steal_loses_the_task() {
        for w in worlds(Variant::OnRq) {
            let bad = explore(&w, &mut Vec::new());
            assert!(bad.is_none(), "{w:?}: {bad:?}");
        }
    }

    /// The model sees the bug the protocol exists for: deciding "it never left" from
    /// "it is still its CPU's current task" loses the task when its CPU has dropped its
    /// lock to steal (actor 0 is the CPU, 1 the waker; the trace is the order of steps).
    #[test]
    fn deciding_by_current_task_loses_it_while_its_cpu_steals() {
        let lost: Vec<_> = worlds(Variant::IsCurrent)
            .filter_map(|w| explore(&w, &mut Vec::new()).map(|bad| (w, bad)))
            .collect();
        assert!(!lost.is_empty());
        for (w, (msg, _)) in &lost {
            assert!(w.blocks && w.theirs && !w.own, "{w:?}");
            assert_eq!(*msg, "P is running, but on no CPU and in no queue");
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(prev_step(State::Running, false), PrevStep::Requeue);
        assert_eq!(prev_step(State::Blocked, false), PrevStep::Deactivate);
        assert_eq!(prev_step(State::Ready, false), PrevStep::Deactivate);
        assert_eq!(prev_step(State::Running, true), PrevStep::Idle);
        assert_eq!(wake_step(State::Ready, true, true), WakeStep::Nothing);
        assert_eq!(wake_step(State::Blocked, true, true), WakeStep::KeepRunning);
        assert_eq!(wake_step(State::Blocked, false, true), WakeStep::WaitOffCpu);
        assert_eq!(wake_step(State::Blocked, false, false), WakeStep::Enqueue);
        for x in 0..4 {
            assert_eq!(State::from_u8(x) as u8, x);
        }
    }
}
