//! The sleeper queue: an intrusive pairing heap ordered by (deadline, sequence), whose
//! links live in the nodes themselves (a sleeping task's own fields), so entering and
//! leaving it never allocates and never fails.
//!
//! Insert is O(1) (a meld with the root); taking the first, or withdrawing any node, is
//! O(log n) amortized (Fredman, Sedgewick, Sleator and Tarjan's two-pass pairing). Each
//! node has three links: its first child, its next sibling, and `prev`, which is its
//! parent if it is a first child, else its previous sibling (what arbitrary removal
//! needs). The links are reached through [`Nodes`], so the same code runs on tasks in
//! the kernel and on an array in the host tests; no recursion, so no stack depth
//! grows with the number of sleepers.
#![forbid(unsafe_code)]

/// Where the heap keeps a node's key and links (under whatever lock guards the heap).
pub trait Nodes {
    /// A node's handle.
    type N: Copy + PartialEq;
    /// Its key: (deadline, sequence); the smallest is first.
    fn key(&self, n: Self::N) -> (u64, u64);
    fn child(&self, n: Self::N) -> Option<Self::N>;
    fn next(&self, n: Self::N) -> Option<Self::N>;
    fn prev(&self, n: Self::N) -> Option<Self::N>;
    fn set_child(&self, n: Self::N, to: Option<Self::N>);
    fn set_next(&self, n: Self::N, to: Option<Self::N>);
    fn set_prev(&self, n: Self::N, to: Option<Self::N>);
}

/// A pairing heap's root and size (the nodes hold the rest).
#[derive(Debug)]
pub struct TimerQueue<N> {
    root: Option<N>,
    len: usize,
}

impl<N: Copy + PartialEq> TimerQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        TimerQueue { root: None, len: 0 }
    }

    /// Nodes in the queue.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first node (smallest key), if any.
    pub fn first(&self) -> Option<N> {
        self.root
    }

    /// Enters `n`, which is in no queue, with its key already set.
    pub fn insert(&mut self, nodes: &impl Nodes<N = N>, n: N) {
        nodes.set_child(n, None);
        nodes.set_next(n, None);
        nodes.set_prev(n, None);
        self.root = Some(match self.root {
            None => n,
            Some(r) => meld(nodes, r, n),
        });
        self.len += 1;
    }

    /// Takes the first node out if its deadline is at most `now`.
    pub fn pop_due(&mut self, nodes: &impl Nodes<N = N>, now: u64) -> Option<N> {
        let r = self.root?;
        if nodes.key(r).0 > now {
            return None;
        }
        self.root = merge_pairs(nodes, nodes.child(r));
        self.len -= 1;
        clear(nodes, r);
        Some(r)
    }

    /// Takes `n`, which is in this queue, out.
    pub fn remove(&mut self, nodes: &impl Nodes<N = N>, n: N) {
        let rest = merge_pairs(nodes, nodes.child(n));
        if self.root == Some(n) {
            self.root = rest;
        } else {
            // Unlink `n` from its parent's child list (it is not the root, so it has a
            // `prev`), then meld what hung below it back in.
            let prev = nodes.prev(n).expect("a non-root node has a prev");
            let next = nodes.next(n);
            if nodes.child(prev) == Some(n) {
                nodes.set_child(prev, next);
            } else {
                nodes.set_next(prev, next);
            }
            if let Some(x) = next {
                nodes.set_prev(x, Some(prev));
            }
            if let Some(rest) = rest {
                let root = self.root.expect("n was in the queue");
                self.root = Some(meld(nodes, root, rest));
            }
        }
        self.len -= 1;
        clear(nodes, n);
    }
}

impl<N: Copy + PartialEq> Default for TimerQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn clear<S: Nodes + ?Sized>(nodes: &S, n: S::N) {
    nodes.set_child(n, None);
    nodes.set_next(n, None);
    nodes.set_prev(n, None);
}

/// Melds two roots (each with no sibling and no prev); returns the new root.
fn meld<S: Nodes + ?Sized>(nodes: &S, a: S::N, b: S::N) -> S::N {
    // Ties go to `a`, the older root: equal keys cannot occur (the sequence differs),
    // but the choice keeps the meld deterministic anyway.
    let (top, below) = if nodes.key(b) < nodes.key(a) {
        (b, a)
    } else {
        (a, b)
    };
    let first = nodes.child(top);
    nodes.set_next(below, first);
    if let Some(f) = first {
        nodes.set_prev(f, Some(below));
    }
    nodes.set_prev(below, Some(top));
    nodes.set_child(top, Some(below));
    top
}

/// The two-pass pairing of a sibling list starting at `first`: meld pairs left to right,
/// then meld the results right to left. Returns the new root (no sibling, no prev).
fn merge_pairs<S: Nodes + ?Sized>(nodes: &S, first: Option<S::N>) -> Option<S::N> {
    // Pass 1: pairs, pushed on a stack threaded through `next` (the last pair on top).
    let mut stack: Option<S::N> = None;
    let mut cur = first;
    while let Some(a) = cur {
        let b = nodes.next(a);
        let pair = match b {
            None => {
                cur = None;
                detach(nodes, a);
                a
            }
            Some(b) => {
                cur = nodes.next(b);
                detach(nodes, a);
                detach(nodes, b);
                meld(nodes, a, b)
            }
        };
        nodes.set_next(pair, stack);
        stack = Some(pair);
    }
    // Pass 2: meld from the last pair back to the first.
    let mut root = stack?;
    let mut rest = nodes.next(root);
    nodes.set_next(root, None);
    while let Some(p) = rest {
        rest = nodes.next(p);
        nodes.set_next(p, None);
        root = meld(nodes, root, p);
    }
    Some(root)
}

/// Makes `n` a lone root (keeps its children).
fn detach<S: Nodes + ?Sized>(nodes: &S, n: S::N) {
    nodes.set_next(n, None);
    nodes.set_prev(n, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use core::cell::Cell;
    use proptest::prelude::*;

    #[derive(Default)]
    struct Node {
        key: Cell<(u64, u64)>,
        child: Cell<Option<usize>>,
        next: Cell<Option<usize>>,
        prev: Cell<Option<usize>>,
    }

    struct Arena(Vec<Node>);

    impl Nodes for Arena {
        type N = usize;
        fn key(&self, n: usize) -> (u64, u64) {
            self.0[n].key.get()
        }
        fn child(&self, n: usize) -> Option<usize> {
            self.0[n].child.get()
        }
        fn next(&self, n: usize) -> Option<usize> {
            self.0[n].next.get()
        }
        fn prev(&self, n: usize) -> Option<usize> {
            self.0[n].prev.get()
        }
        fn set_child(&self, n: usize, to: Option<usize>) {
            self.0[n].child.set(to);
        }
        fn set_next(&self, n: usize, to: Option<usize>) {
            self.0[n].next.set(to);
        }
        fn set_prev(&self, n: usize, to: Option<usize>) {
            self.0[n].prev.set(to);
        }
    }

    /// Every node reachable from the root, each once, with the heap order and the
    /// `prev` links right.
    fn check_shape(q: &TimerQueue<usize>, a: &Arena) -> Vec<usize> {
        let mut seen = Vec::new();
        let mut todo: Vec<usize> = q.root.into_iter().collect();
        if let Some(r) = q.root {
            assert_eq!(a.prev(r), None);
            assert_eq!(a.next(r), None);
        }
        while let Some(n) = todo.pop() {
            assert!(!seen.contains(&n), "node {n} reachable twice");
            seen.push(n);
            let mut prev = n;
            let mut c = a.child(n);
            while let Some(x) = c {
                assert_eq!(a.prev(x), Some(prev), "prev link of {x}");
                assert!(a.key(x) >= a.key(n), "heap order {n} -> {x}");
                todo.push(x);
                prev = x;
                c = a.next(x);
            }
        }
        assert_eq!(seen.len(), q.len());
        seen
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Sleep node `.0` until `.1` (if it is not asleep already).
        Insert(usize, u64),
        /// Withdraw node `.0` (if asleep): an early wake-up.
        Remove(usize),
        /// The timer at time `.0`: take every due node.
        Fire(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..24usize, 0..64u64).prop_map(|(n, d)| Op::Insert(n, d)),
            2 => (0..24usize).prop_map(Op::Remove),
            1 => (0..80u64).prop_map(Op::Fire),
        ]
    }

    proptest! {
        /// Against a sorted map: no sleeper lost or woken twice, due ones woken in
        /// deadline order (equal deadlines in the order they went to sleep), none early.
        #[test]
        fn matches_a_sorted_map(ops in proptest::collection::vec(op(), 0..200)) {
            let a = Arena((0..24).map(|_| Node::default()).collect());
            let mut q = TimerQueue::new();
            let mut model: BTreeMap<(u64, u64), usize> = BTreeMap::new();
            let mut asleep: [Option<(u64, u64)>; 24] = [None; 24];
            let mut seq = 0;
            for op in ops {
                match op {
                    Op::Insert(n, d) if asleep[n].is_none() => {
                        seq += 1;
                        a.0[n].key.set((d, seq));
                        q.insert(&a, n);
                        model.insert((d, seq), n);
                        asleep[n] = Some((d, seq));
                    }
                    Op::Insert(..) => {}
                    Op::Remove(n) => {
                        if let Some(k) = asleep[n].take() {
                            q.remove(&a, n);
                            model.remove(&k);
                        }
                    }
                    Op::Fire(now) => {
                        while let Some(n) = q.pop_due(&a, now) {
                            let (&k, &m) = model.iter().next().expect("model has it");
                            prop_assert_eq!(n, m, "woken out of order");
                            prop_assert!(k.0 <= now, "woken early");
                            model.remove(&k);
                            asleep[n] = None;
                        }
                        prop_assert!(model.keys().next().is_none_or(|k| k.0 > now), "a due sleeper was left");
                    }
                }
                let mut seen = check_shape(&q, &a);
                seen.sort_unstable();
                let mut want: Vec<usize> = model.values().copied().collect();
                want.sort_unstable();
                prop_assert_eq!(seen, want, "the queue holds exactly the sleepers");
                prop_assert_eq!(q.first().map(|n| a.key(n)), model.keys().next().copied());
            }
        }
    }

    #[test]
    fn removing_every_node_in_any_position_empties_it() {
        let a = Arena((0..64).map(|_| Node::default()).collect());
        let mut q = TimerQueue::new();
        for n in 0..64 {
            a.0[n].key.set(((n as u64 * 37) % 11, n as u64));
            q.insert(&a, n);
        }
        // One pop first, so the heap has depth (children lists) before removals.
        assert_eq!(q.pop_due(&a, 0), Some(0));
        for n in (1..64)
            .rev()
            .step_by(2)
            .chain((1..64).rev().skip(1).step_by(2))
        {
            q.remove(&a, n);
            check_shape(&q, &a);
        }
        assert_eq!(q.first(), None);
        assert_eq!(q.len(), 0);
    }
}
