//! Where ready tasks go and where a CPU takes its next one from: the policy of the
//! per-CPU run queues, as pure functions of snapshots (host-tested).
//!
//! - **Placement** ([`place`]): a task that becomes ready goes to an idle CPU (the one
//!   it ran on last first: its cache is warm there), else to the CPU running the
//!   lowest-priority task below its own, and that CPU is kicked; else it waits in the
//!   queue of the CPU it ran on last.
//! - **Picking** ([`source`]): a CPU runs the highest-priority task of all queues (a
//!   high-priority task waits for no particular CPU); at equal priority its own queue
//!   first, unless another queue holds at least [`STEAL_MARGIN`] more tasks of that
//!   priority: then it steals from the longest (work stealing evens the load, and a CPU
//!   about to idle takes anything).
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
    let Some(running) = running else {
        return queues.iter().any(Option::is_some);
    };
    let own = queues.get(me).copied().flatten();
    if own.is_some_and(|q| q.prio >= running) {
        return true;
    }
    // The running task, put back in its own queue (which holds nothing of its priority
    // or higher), against every other queue.
    let n = queues.len().max(me + 1);
    let view = |c: usize| {
        if c == me {
            Some(QueueView {
                prio: running,
                len: 1,
            })
        } else {
            queues.get(c).copied().flatten()
        }
    };
    source_by(me, n, view) != Some(me)
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

/// Where a task of `prio` that ran last on `last` is queued when it becomes ready on
/// CPU `me`, and whether that CPU must be kicked to run it now (see the module doc).
pub fn place(me: usize, last: usize, prio: Priority, cpus: &[CpuView]) -> (usize, bool) {
    // Preference order among equals: the task's last CPU, then this one, then by index.
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

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::{High, Low, Normal};
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
        assert_eq!(place(0, 2, Normal, &cpus), (2, true));
        assert_eq!(place(0, 0, Normal, &cpus), (1, true));
        let busy = [cpu(false, Normal), cpu(false, Low), cpu(false, Normal)];
        assert_eq!(place(0, 2, Normal, &busy), (1, true));
        assert_eq!(place(0, 2, Low, &busy), (2, false));
        let mut kicked = cpus;
        kicked[1].kicked = true;
        kicked[2].kicked = true;
        assert_eq!(place(0, 1, Normal, &kicked), (1, false));
        let mut offline = busy;
        offline[2].online = false;
        assert_eq!(place(1, 2, High, &offline), (1, true));
        assert_eq!(place(1, 2, Low, &offline), (1, false));
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
            let (c, kick) = place(me, last, p, &cpus);
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
    }
}
