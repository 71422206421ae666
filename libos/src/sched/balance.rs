//! Where ready tasks go and where a CPU takes its next one from: the policy of the
//! per-CPU run queues, as pure functions of snapshots (host-tested).
//!
//! - **Placement** ([`place`]): a task that becomes ready goes to an idle CPU (the one
//!   it ran on last first: its cache is warm there), else to the CPU running the
//!   lowest-priority task below its own, and that CPU is kicked; else it waits in the
//!   queue of the CPU it ran on last. The common cases cost no scan: the task's last
//!   CPU or this one is idle (one bit each in the idle mask), or no CPU is idle and the
//!   task is `Low` (nothing runs below it). Only a task that finds neither walks the
//!   idle mask's set bits, or, with every CPU busy, the online CPUs' running priorities.
//! - **Picking** ([`pick`]): a CPU takes the first task of its own queue's best level
//!   (O(1), no other queue looked at), except when it would go idle or its tick asked
//!   it to balance: then it runs the highest-priority task of all queues, its own first
//!   at equal priority, unless another queue holds at least [`STEAL_MARGIN`] more tasks
//!   of that priority: then it steals from the longest ([`source`]).
#![forbid(unsafe_code)]

use super::queue::Priority;

/// What a picking CPU sees of one CPU's run queue: the priority of its best task that
/// may be run now, and how many tasks of that priority it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueView {
    /// Highest priority among the queue's runnable tasks.
    pub prio: Priority,
    /// Runnable tasks of that priority in the queue.
    pub len: usize,
}

/// Another queue must hold this many more tasks of the best priority than the picking
/// CPU's own before that CPU steals at equal priority.
pub const STEAL_MARGIN: usize = 2;

/// The queue CPU `me` takes its next task from (`queues[c]` is CPU `c`'s view, `None`
/// for an empty queue or an offline CPU), or `None` if nothing is runnable anywhere.
pub fn source(me: usize, queues: &[Option<QueueView>]) -> Option<usize> {
    source_by(me, queues.len(), |c| queues[c])
}

/// [`source`] over `n` queues given by `view`.
fn source_by(me: usize, n: usize, view: impl Fn(usize) -> Option<QueueView>) -> Option<usize> {
    let best = (0..n).filter_map(&view).map(|q| q.prio).max()?;
    let own = (me < n)
        .then(|| view(me))
        .flatten()
        .filter(|q| q.prio == best)
        .map_or(0, |q| q.len);
    let (longest, len) = (0..n)
        .filter_map(|c| view(c).filter(|q| q.prio == best).map(|q| (c, q.len)))
        // The longest; among equals the lowest-numbered CPU (`max_by_key` keeps the
        // last maximum, so compare on (len, reversed index)).
        .max_by_key(|&(c, len)| (len, usize::MAX - c))?;
    if own > 0 && (longest == me || len < own + STEAL_MARGIN) {
        Some(me)
    } else {
        Some(longest)
    }
}

/// Whether CPU `me`, running a task of priority `running` (`None`: its idle task),
/// should call the scheduler at the next tick: some task would run instead of it, here
/// or by being stolen (the running task counted in its own queue, where a reschedule
/// puts it).
pub fn has_competition(me: usize, running: Option<Priority>, queues: &[Option<QueueView>]) -> bool {
    has_competition_by(me, running, queues.len(), |c| queues[c])
}

/// [`has_competition`] over `n` queues given by `view` (no array of every CPU's view to
/// build on the timer's path).
pub fn has_competition_by(
    me: usize,
    running: Option<Priority>,
    n: usize,
    view: impl Fn(usize) -> Option<QueueView>,
) -> bool {
    let Some(running) = running else {
        return (0..n).any(|c| view(c).is_some());
    };
    let own = if me < n { view(me) } else { None };
    if own.is_some_and(|q| q.prio >= running) {
        return true;
    }
    // The running task, put back in its own queue (which holds nothing of its priority
    // or higher), against every other queue.
    let with_running = |c: usize| {
        if c == me {
            Some(QueueView {
                prio: running,
                len: 1,
            })
        } else if c < n {
            view(c)
        } else {
            None
        }
    };
    source_by(me, n.max(me + 1), with_running) != Some(me)
}

/// What a placing CPU sees of one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuView {
    /// Online and scheduling.
    pub online: bool,
    /// Running its idle task.
    pub idle: bool,
    /// Already asked to reschedule (a kick on its way): a second task sent there would
    /// wait for the first.
    pub kicked: bool,
    /// The priority of its running task (meaningless when idle).
    pub running: Priority,
}

/// What placement reads of the CPUs: masks for the O(1) checks, and per-CPU reads for
/// the rest (each a lock-free snapshot in the scheduler).
pub trait Cpus {
    /// How many CPUs there are to look at (ids `0..count`, at most 32).
    fn count(&self) -> usize;
    /// Bit `c` set: CPU `c` is online.
    fn online(&self) -> u32;
    /// Bit `c` set: CPU `c` runs its idle task.
    fn idle(&self) -> u32;
    /// CPU `c` was asked to reschedule already.
    fn kicked(&self, c: usize) -> bool;
    /// The priority of CPU `c`'s running task (meaningless when idle).
    fn running(&self, c: usize) -> Priority;
}

impl Cpus for [CpuView] {
    fn count(&self) -> usize {
        self.len()
    }
    fn online(&self) -> u32 {
        mask(self, |v| v.online)
    }
    fn idle(&self) -> u32 {
        mask(self, |v| v.idle)
    }
    fn kicked(&self, c: usize) -> bool {
        self[c].kicked
    }
    fn running(&self, c: usize) -> Priority {
        self[c].running
    }
}

fn mask(cpus: &[CpuView], f: impl Fn(&CpuView) -> bool) -> u32 {
    cpus.iter()
        .enumerate()
        .filter(|(_, v)| f(v))
        .fold(0, |m, (c, _)| m | 1 << c)
}

/// Where a task of `prio` that ran last on `last` is queued when it becomes ready on
/// CPU `me`, and whether that CPU must be kicked to run it now (see the module doc).
pub fn place(me: usize, last: usize, prio: Priority, cpus: &(impl Cpus + ?Sized)) -> (usize, bool) {
    let n = cpus.count().min(32);
    let all = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
    let online = cpus.online() & all;
    let bit = |c: usize| if c < n { 1u32 << c } else { 0 };
    // An idle CPU, in preference order: the task's last CPU, then this one, then the
    // lowest id. One not this one that was kicked already is left alone (the task it
    // was kicked for goes there).
    let idle = online & cpus.idle();
    if idle & bit(last) != 0 && (last == me || !cpus.kicked(last)) {
        return (last, true);
    }
    if idle & bit(me) != 0 {
        return (me, true);
    }
    let mut rest = idle & !bit(last) & !bit(me);
    while rest != 0 {
        let c = rest.trailing_zeros() as usize;
        if !cpus.kicked(c) {
            return (c, true);
        }
        rest &= rest - 1;
    }
    // Every usable CPU busy: the one running the lowest priority below the task's
    // (ties as above). Nothing runs below `Low`, so a `Low` task skips the walk.
    if prio > Priority::Low {
        let rank = |c: usize| (c != last, c != me, c);
        let busy = online & !cpus.idle();
        let lowest = (0..n)
            .filter(|&c| busy & bit(c) != 0)
            .map(|c| (cpus.running(c), c))
            .filter(|&(running, _)| running < prio)
            .min_by_key(|&(running, c)| (running, rank(c)));
        if let Some((_, c)) = lowest {
            return (c, true);
        }
    }
    let home = if online & bit(last) != 0 { last } else { me };
    (home, false)
}

/// Where a CPU's next task comes from (see [`pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The first task of its own queue's best level.
    Own,
    /// The first task it may take from CPU `.0`'s queue, at that queue's best level.
    Steal(usize),
    /// Nothing to run: its idle task.
    Idle,
}

/// Where CPU `me` takes its next task from, its queue's view being `own` (the task it
/// switches away from, if still ready, already queued there). Without `balance` and
/// with a task of its own that is O(1): no other queue is looked at. With `balance`
/// (its tick asked for it) or with an empty queue (it would go idle) it looks at every
/// queue (`others(c)`, `None` for an empty queue or an offline CPU; `others(me)` is
/// not consulted) and follows [`source`].
pub fn pick(
    me: usize,
    own: Option<QueueView>,
    balance: bool,
    n: usize,
    others: impl Fn(usize) -> Option<QueueView>,
) -> Pick {
    if own.is_some() && !balance {
        return Pick::Own;
    }
    let view = |c: usize| if c == me { own } else { others(c) };
    match source_by(me, n.max(me + 1), view) {
        Some(c) if c == me => Pick::Own,
        Some(c) => Pick::Steal(c),
        None => Pick::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::{High, Low, Normal};
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn q(prio: Priority, len: usize) -> Option<QueueView> {
        Some(QueueView { prio, len })
    }

    #[test]
    fn own_queue_first_at_equal_priority() {
        assert_eq!(source(1, &[q(Normal, 2), q(Normal, 1)]), Some(1));
        assert_eq!(source(0, &[None, None]), None);
    }

    #[test]
    fn higher_priority_anywhere_wins() {
        assert_eq!(source(0, &[q(Normal, 5), None, q(High, 1)]), Some(2));
    }

    #[test]
    fn steals_from_the_longest_when_unbalanced_or_empty() {
        assert_eq!(
            source(0, &[q(Normal, 1), q(Normal, 3), q(Normal, 2)]),
            Some(1)
        );
        assert_eq!(source(0, &[None, q(Low, 1), q(Low, 1)]), Some(1));
        assert_eq!(source(0, &[q(Low, 4), q(Normal, 1)]), Some(1));
    }

    #[test]
    fn competition_for_a_running_task() {
        // Idle: anything anywhere.
        assert!(has_competition(0, None, &[None, q(Low, 1)]));
        assert!(!has_competition(0, None, &[None, None]));
        // Own queue at its priority: a time slice.
        assert!(has_competition(0, Some(Normal), &[q(Normal, 1), None]));
        assert!(!has_competition(0, Some(Normal), &[q(Low, 3), None]));
        // Another queue overloaded at its priority: steal (me + 0 queued vs 3).
        assert!(has_competition(0, Some(Normal), &[None, q(Normal, 3)]));
        assert!(!has_competition(0, Some(Normal), &[None, q(Normal, 1)]));
        // Higher priority elsewhere (that CPU should have been kicked; take it).
        assert!(has_competition(0, Some(Normal), &[None, q(High, 1)]));
    }

    fn cpu(idle: bool, running: Priority) -> CpuView {
        CpuView {
            online: true,
            idle,
            kicked: false,
            running,
        }
    }

    #[test]
    fn placement_prefers_idle_last_cpu_then_lowest_then_home() {
        let cpus = [cpu(false, Normal), cpu(true, Low), cpu(true, Low)];
        assert_eq!(place(0, 2, Normal, &cpus[..]), (2, true));
        assert_eq!(place(0, 0, Normal, &cpus[..]), (1, true));
        let busy = [cpu(false, Normal), cpu(false, Low), cpu(false, Normal)];
        assert_eq!(place(0, 2, Normal, &busy[..]), (1, true));
        assert_eq!(place(0, 2, Low, &busy[..]), (2, false));
        let mut kicked = cpus;
        kicked[1].kicked = true;
        kicked[2].kicked = true;
        assert_eq!(place(0, 1, Normal, &kicked[..]), (1, false));
        let mut offline = busy;
        offline[2].online = false;
        assert_eq!(place(1, 2, High, &offline[..]), (1, true));
        assert_eq!(place(1, 2, Low, &offline[..]), (1, false));
    }

    #[test]
    fn pick_looks_only_at_its_own_queue_unless_balancing_or_empty() {
        let others = |c: usize| [None, q(High, 1)][c];
        assert_eq!(pick(0, q(Low, 1), false, 2, others), Pick::Own);
        assert_eq!(pick(0, q(Low, 1), true, 2, others), Pick::Steal(1));
        assert_eq!(pick(0, None, false, 2, others), Pick::Steal(1));
        assert_eq!(pick(0, None, false, 2, |_| None), Pick::Idle);
        assert_eq!(pick(1, q(High, 1), true, 2, others), Pick::Own);
    }

    /// The placement of the single-lock scheduler, a scan of every CPU: [`place`] must
    /// choose as it did.
    fn place_by_scan(me: usize, last: usize, prio: Priority, cpus: &[CpuView]) -> (usize, bool) {
        let rank = |c: usize| (c != last, c != me, c);
        let usable = |c: usize| cpus[c].online && (c == me || !cpus[c].kicked);
        let idle = (0..cpus.len())
            .filter(|&c| usable(c) && cpus[c].idle)
            .min_by_key(|&c| rank(c));
        if let Some(c) = idle {
            return (c, true);
        }
        let lowest = (0..cpus.len())
            .filter(|&c| cpus[c].online && !cpus[c].idle && cpus[c].running < prio)
            .min_by_key(|&c| (cpus[c].running, rank(c)));
        if let Some(c) = lowest {
            return (c, true);
        }
        let home = if cpus.get(last).is_some_and(|v| v.online) {
            last
        } else {
            me
        };
        (home, false)
    }

    /// A model of CPUs running the policy (queues, running tasks, blocked tasks) for
    /// the property test of the whole: no task lost or duplicated, priorities
    /// honoured.
    struct Sim {
        prio: Vec<Priority>,
        last: Vec<usize>,
        queues: Vec<super::super::queue::RunQueue<usize>>,
        running: Vec<Option<usize>>,
        kicked: Vec<bool>,
        blocked: Vec<usize>,
    }

    #[derive(Debug, Clone)]
    enum SimOp {
        /// Wake blocked task `.0 % blocked` from CPU `.1`.
        Wake(usize, usize),
        /// The task running on CPU `.0` blocks (and the CPU schedules).
        Block(usize),
        /// CPU `.0` schedules (a yield, a kick, or with `.1` its tick: balance).
        Schedule(usize, bool),
    }

    impl Sim {
        fn new(n: usize, prio: Vec<Priority>) -> Sim {
            let tasks = prio.len();
            Sim {
                last: (0..tasks).map(|t| t % n).collect(),
                prio,
                queues: (0..n)
                    .map(|_| super::super::queue::RunQueue::new())
                    .collect(),
                running: vec![None; n],
                kicked: vec![false; n],
                blocked: (0..tasks).collect(),
            }
        }

        fn view(&self, c: usize) -> Option<QueueView> {
            let q = &self.queues[c];
            q.best().map(|prio| QueueView {
                prio,
                len: q.len_at(prio),
            })
        }

        fn cpus(&self) -> Vec<CpuView> {
            (0..self.queues.len())
                .map(|c| CpuView {
                    online: true,
                    idle: self.running[c].is_none(),
                    kicked: self.kicked[c],
                    running: self.running[c].map_or(Low, |t| self.prio[t]),
                })
                .collect()
        }

        fn wake(&mut self, i: usize, me: usize) -> Result<(), TestCaseError> {
            if self.blocked.is_empty() {
                return Ok(());
            }
            let t = self.blocked.remove(i % self.blocked.len());
            let cpus = self.cpus();
            let (c, kick) = place(me, self.last[t], self.prio[t], &cpus[..]);
            prop_assert_eq!(
                (c, kick),
                place_by_scan(me, self.last[t], self.prio[t], &cpus)
            );
            if !kick {
                // Nobody could run it now: no usable idle CPU, none running lower.
                let runs_it_now = |(i, v): (usize, &CpuView)| {
                    (v.idle && (i == me || !v.kicked)) || (!v.idle && v.running < self.prio[t])
                };
                prop_assert!(!cpus.iter().enumerate().any(runs_it_now));
            }
            self.queues[c].push(t, self.prio[t]);
            self.kicked[c] |= kick;
            Ok(())
        }

        fn schedule(&mut self, me: usize, balance: bool) -> Result<(), TestCaseError> {
            self.kicked[me] = false;
            if let Some(prev) = self.running[me].take() {
                self.queues[me].push(prev, self.prio[prev]);
            }
            let n = self.queues.len();
            let looked_everywhere = balance || self.view(me).is_none();
            let next = match pick(me, self.view(me), balance, n, |c| self.view(c)) {
                Pick::Own => self.queues[me].pop(),
                Pick::Steal(c) => {
                    prop_assert_ne!(c, me);
                    self.queues[c].pop()
                }
                Pick::Idle => None,
            };
            if let Some(t) = next {
                self.last[t] = me;
                // Priorities honoured: nothing better waits in its own queue; when it
                // looked everywhere, nothing better waits anywhere.
                let p = self.prio[t];
                prop_assert!(self.queues[me].best().is_none_or(|b| b <= p));
                if looked_everywhere {
                    prop_assert!(self.queues.iter().all(|q| q.best().is_none_or(|b| b <= p)));
                }
            } else {
                // Going idle only when no queue holds anything.
                prop_assert!(self.queues.iter().all(|q| q.is_empty()));
            }
            self.running[me] = next;
            Ok(())
        }

        fn apply(&mut self, op: &SimOp) -> Result<(), TestCaseError> {
            let n = self.queues.len();
            match *op {
                SimOp::Wake(i, me) => self.wake(i, me % n)?,
                SimOp::Block(c) => {
                    let c = c % n;
                    if let Some(t) = self.running[c].take() {
                        self.blocked.push(t);
                    }
                    self.schedule(c, false)?;
                }
                SimOp::Schedule(c, balance) => self.schedule(c % n, balance)?,
            }
            // No task lost, none in two places.
            let mut seen = vec![0u32; self.prio.len()];
            for &t in self.running.iter().flatten().chain(&self.blocked) {
                seen[t] += 1;
            }
            for q in &mut self.queues {
                let mut back = Vec::new();
                while let Some(t) = q.pop() {
                    seen[t] += 1;
                    back.push(t);
                }
                for t in back {
                    q.push(t, self.prio[t]);
                }
            }
            prop_assert!(seen.iter().all(|&k| k == 1), "task counts {:?}", seen);
            Ok(())
        }
    }

    fn sim_op() -> impl Strategy<Value = SimOp> {
        prop_oneof![
            (any::<usize>(), 0usize..8).prop_map(|(i, c)| SimOp::Wake(i, c)),
            (0usize..8).prop_map(SimOp::Block),
            (0usize..8, any::<bool>()).prop_map(|(c, b)| SimOp::Schedule(c, b)),
        ]
    }

    fn prio() -> impl Strategy<Value = Priority> {
        prop_oneof![Just(Low), Just(Normal), Just(High)]
    }

    fn views() -> impl Strategy<Value = Vec<Option<QueueView>>> {
        proptest::collection::vec(
            proptest::option::of(
                (prio(), 1usize..6).prop_map(|(prio, len)| QueueView { prio, len }),
            ),
            1..8,
        )
    }

    proptest! {
        /// The source holds a task of the highest priority anywhere, and at equal
        /// priority a CPU leaves its own queue only for one at least STEAL_MARGIN longer.
        #[test]
        fn source_takes_the_best_priority_and_steals_only_with_margin(qs in views(), me in 0usize..8) {
            let me = me % qs.len();
            let best = qs.iter().flatten().map(|v| v.prio).max();
            match source(me, &qs) {
                None => prop_assert!(best.is_none()),
                Some(s) => {
                    let v = qs[s].expect("source is a non-empty queue");
                    prop_assert_eq!(Some(v.prio), best);
                    if s != me && let Some(own) = qs[me].filter(|o| Some(o.prio) == best) {
                        prop_assert!(v.len >= own.len + STEAL_MARGIN);
                    }
                }
            }
        }

        /// Placement kicks only a CPU that can run the task now (idle and not kicked
        /// by someone else, or running lower priority), and never an offline one.
        #[test]
        fn placement_kicks_only_a_cpu_that_runs_it_now(
            states in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), prio()), 1..8),
            me in 0usize..8, last in 0usize..8, p in prio(),
        ) {
            let mut cpus: Vec<CpuView> = states
                .iter()
                .map(|&(online, idle, kicked, running)| CpuView { online, idle, kicked, running })
                .collect();
            let me = me % cpus.len();
            cpus[me].online = true;
            let last = last % cpus.len();
            let (c, kick) = place(me, last, p, &cpus[..]);
            prop_assert_eq!((c, kick), place_by_scan(me, last, p, &cpus));
            prop_assert!(cpus[c].online);
            if kick {
                let v = cpus[c];
                prop_assert!((v.idle && (c == me || !v.kicked)) || (!v.idle && v.running < p));
            } else {
                prop_assert!(c == last || c == me);
                let runnable_now = (0..cpus.len()).any(|i| {
                    let v = cpus[i];
                    v.online && ((v.idle && (i == me || !v.kicked)) || (!v.idle && v.running < p))
                });
                prop_assert!(!runnable_now);
            }
        }

        /// CPUs running the policy: every task is in exactly one place (running on one
        /// CPU, in one queue, or blocked) after every step, a CPU runs the best task of
        /// its queue (of every queue when it balances or would idle), idles only when
        /// every queue is empty, and placement leaves a task unkicked only when no CPU
        /// could run it now.
        #[test]
        fn cpus_running_the_policy_lose_no_task_and_honour_priorities(
            n in 1usize..6,
            prios in proptest::collection::vec(prio(), 1..12),
            ops in proptest::collection::vec(sim_op(), 0..120),
        ) {
            let mut sim = Sim::new(n, prios);
            for op in &ops {
                sim.apply(op)?;
            }
        }
    }
}
