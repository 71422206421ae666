//! The run queue: FIFO per priority, highest priority first (pure; host-tested).
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;

/// Task priority; higher runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Background work.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Latency-sensitive tasks.
    High = 2,
}

const LEVELS: usize = 3;

/// Ready tasks by priority.
#[derive(Debug, Default)]
pub struct RunQueue<T> {
    levels: [VecDeque<T>; LEVELS],
}

impl<T: PartialEq> RunQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        RunQueue {
            levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
        }
    }

    /// Appends `t` at the back of its priority level.
    pub fn push(&mut self, t: T, prio: Priority) {
        self.levels[prio as usize].push_back(t);
    }

    /// Takes the first task of the highest non-empty level.
    pub fn pop(&mut self) -> Option<T> {
        self.levels.iter_mut().rev().find_map(VecDeque::pop_front)
    }

    /// The first task, highest level first, for which `eligible` holds.
    pub fn first_where(&self, mut eligible: impl FnMut(&T) -> bool) -> Option<&T> {
        self.levels
            .iter()
            .rev()
            .find_map(|level| level.iter().find(|t| eligible(t)))
    }

    /// The highest priority with a task for which `eligible` holds, and how many such
    /// tasks that level holds (the level where [`Self::first_where`] with the same test
    /// finds its task).
    pub fn best_where(&self, mut eligible: impl FnMut(&T) -> bool) -> Option<(Priority, usize)> {
        if self.is_empty() {
            return None;
        }
        [Priority::High, Priority::Normal, Priority::Low]
            .into_iter()
            .find_map(|p| {
                let n = self.levels[p as usize]
                    .iter()
                    .filter(|t| eligible(t))
                    .count();
                (n > 0).then_some((p, n))
            })
    }

    /// Removes `t` wherever it is; returns whether it was queued.
    pub fn remove(&mut self, t: &T) -> bool {
        for level in &mut self.levels {
            if let Some(i) = level.iter().position(|x| x == t) {
                level.remove(i);
                return true;
            }
        }
        false
    }

    /// Number of ready tasks.
    pub fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// Whether no task is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn priority_then_fifo() {
        let mut q = RunQueue::new();
        q.push(1, Priority::Normal);
        q.push(2, Priority::Low);
        q.push(3, Priority::High);
        q.push(4, Priority::Normal);
        assert_eq!(q.best_where(|_| true), Some((Priority::High, 1)));
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(3), Some(1), Some(4), Some(2), None]
        );
    }

    #[test]
    fn first_where_skips_ineligible_and_remove_keeps_order() {
        let mut q = RunQueue::new();
        q.push(1, Priority::High);
        q.push(2, Priority::Normal);
        q.push(3, Priority::Normal);
        q.push(4, Priority::Low);
        assert_eq!(q.best_where(|&t| t != 1), Some((Priority::Normal, 2)));
        assert_eq!(q.best_where(|&t| t == 4), Some((Priority::Low, 1)));
        assert_eq!(q.best_where(|_| false), None);
        assert_eq!(q.first_where(|&t| t != 1 && t != 2), Some(&3));
        assert_eq!(q.first_where(|&t| t > 10), None);
        assert!(q.remove(&3));
        assert!(!q.remove(&3));
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(1), Some(2), Some(4), None]
        );
    }

    proptest! {
        #[test]
        fn pops_are_sorted_by_priority_and_stable(ops in proptest::collection::vec((0u8..3, any::<u16>()), 0..50)) {
            let mut q = RunQueue::new();
            for (i, &(p, _)) in ops.iter().enumerate() {
                let prio = [Priority::Low, Priority::Normal, Priority::High][p as usize];
                q.push((prio, i), prio);
            }
            prop_assert_eq!(q.len(), ops.len());
            let mut out = alloc::vec::Vec::new();
            while let Some(x) = q.pop() { out.push(x); }
            let mut sorted = out.clone();
            sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            prop_assert_eq!(out, sorted);
        }
    }
}
