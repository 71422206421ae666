//! The run queue: FIFO per priority, highest priority first, with a bitmap of the
//! non-empty levels so the pick is O(1) (pure; host-tested).
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

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; LEVELS] = [Priority::High, Priority::Normal, Priority::Low];

    fn from_level(level: u32) -> Priority {
        match level {
            0 => Priority::Low,
            1 => Priority::Normal,
            _ => Priority::High,
        }
    }
}

/// Ready tasks by priority.
#[derive(Debug, Default)]
pub struct RunQueue<T> {
    levels: [VecDeque<T>; LEVELS],
    /// Bit `p` set exactly when level `p` is non-empty (Linux's `rt_prio_array` bitmap):
    /// the best level is the highest set bit, one instruction.
    mask: u8,
    /// Tasks in all levels.
    len: usize,
}

impl<T: PartialEq> RunQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        RunQueue {
            levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
            mask: 0,
            len: 0,
        }
    }

    /// Appends `t` at the back of its priority level.
    pub fn push(&mut self, t: T, prio: Priority) {
        self.levels[prio as usize].push_back(t);
        self.mask |= 1 << prio as u8;
        self.len += 1;
    }

    /// The highest priority with a queued task (O(1)).
    pub fn best(&self) -> Option<Priority> {
        (self.mask != 0).then(|| Priority::from_level(7 - self.mask.leading_zeros()))
    }

    /// How many tasks of priority `prio` are queued.
    pub fn len_at(&self, prio: Priority) -> usize {
        self.levels[prio as usize].len()
    }

    /// The first task of the highest non-empty level, without taking it (O(1)).
    pub fn peek(&self) -> Option<&T> {
        self.levels[self.best()? as usize].front()
    }

    /// Takes the first task of the highest non-empty level (O(1)).
    pub fn pop(&mut self) -> Option<T> {
        let level = self.best()? as usize;
        let t = self.levels[level].pop_front();
        self.removed(level);
        t
    }

    /// Bookkeeping after one task left level `level`.
    fn removed(&mut self, level: usize) {
        self.len -= 1;
        if self.levels[level].is_empty() {
            self.mask &= !(1 << level);
        }
    }

    /// Takes the first task, highest level first, for which `eligible` holds (a scan:
    /// for work stealing, which skips tasks it may not take).
    pub fn take_first_where(&mut self, mut eligible: impl FnMut(&T) -> bool) -> Option<T> {
        let (level, i) = (0..LEVELS).rev().find_map(|level| {
            self.levels[level]
                .iter()
                .position(&mut eligible)
                .map(|i| (level, i))
        })?;
        let t = self.levels[level].remove(i);
        self.removed(level);
        t
    }

    /// Removes `t` wherever it is; returns whether it was queued.
    pub fn remove(&mut self, t: &T) -> bool {
        for level in 0..LEVELS {
            if let Some(i) = self.levels[level].iter().position(|x| x == t) {
                self.levels[level].remove(i);
                self.removed(level);
                return true;
            }
        }
        false
    }

    /// Number of ready tasks (O(1)).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no task is ready (O(1)).
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        assert_eq!(q.best(), Some(Priority::High));
        assert_eq!(q.len_at(Priority::Normal), 2);
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(3), Some(1), Some(4), Some(2), None]
        );
    }

    #[test]
    fn take_first_where_skips_ineligible_and_remove_keeps_order() {
        let mut q = RunQueue::new();
        q.push(1, Priority::High);
        q.push(2, Priority::Normal);
        q.push(3, Priority::Normal);
        q.push(4, Priority::Low);
        q.push(5, Priority::Normal);
        assert_eq!(q.take_first_where(|&t| t != 1 && t != 2), Some(3));
        assert_eq!(q.take_first_where(|&t| t > 10), None);
        assert!(q.remove(&5));
        assert!(!q.remove(&5));
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(1), Some(2), Some(4), None]
        );
    }

    /// A random mix of the operations against a plain list: the bitmap, the length and
    /// the O(1) pick always agree with a full scan.
    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        Pop,
        Remove(u16),
        TakeOdd,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Push),
            Just(Op::Pop),
            any::<u16>().prop_map(Op::Remove),
            Just(Op::TakeOdd),
        ]
    }

    proptest! {
        #[test]
        fn bitmap_pick_matches_a_full_scan(ops in proptest::collection::vec(op(), 0..80)) {
            let mut q = RunQueue::new();
            // Reference: (priority, sequence) in queue order.
            let mut model: alloc::vec::Vec<(Priority, u16)> = alloc::vec::Vec::new();
            let best = |m: &[(Priority, u16)]| {
                let p = m.iter().map(|e| e.0).max()?;
                m.iter().find(|e| e.0 == p).copied()
            };
            for (seq, op) in ops.into_iter().enumerate() {
                let seq = seq as u16;
                match op {
                    Op::Push(p) => {
                        let prio = [Priority::Low, Priority::Normal, Priority::High][p as usize];
                        q.push((prio, seq), prio);
                        model.push((prio, seq));
                    }
                    Op::Pop => {
                        let want = best(&model);
                        model.retain(|e| Some(*e) != want);
                        prop_assert_eq!(q.pop(), want);
                    }
                    Op::Remove(n) => {
                        let victim = model.get(n as usize % model.len().max(1)).copied();
                        if let Some(v) = victim {
                            model.retain(|e| *e != v);
                            prop_assert!(q.remove(&v));
                            prop_assert!(!q.remove(&v));
                        }
                    }
                    Op::TakeOdd => {
                        let odd = |e: &(Priority, u16)| e.1 % 2 == 1;
                        let want = Priority::ALL
                            .into_iter()
                            .find_map(|p| model.iter().find(|e| e.0 == p && odd(e)).copied());
                        model.retain(|e| Some(*e) != want);
                        prop_assert_eq!(q.take_first_where(odd), want);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.is_empty(), model.is_empty());
                prop_assert_eq!(q.best(), best(&model).map(|e| e.0));
                prop_assert_eq!(q.peek().copied(), best(&model));
                for p in Priority::ALL {
                    prop_assert_eq!(q.len_at(p), model.iter().filter(|e| e.0 == p).count());
                }
            }
        }

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
