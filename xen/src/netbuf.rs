//! Which of netfront's buffer pages the backend may still reach (pure; host-tested and
//! fuzzed).
//!
//! A buffer page is granted to the backend only while a request for it is in flight:
//! granted when posted, and the grant ended when the backend's response comes back,
//! before the frontend looks at the page. Ending fails while the backend still uses the
//! grant (Xen's `GTF_reading`/`GTF_writing`); such a page is not handed to anyone (the
//! card stops, and the page is never freed), so "the backend is done with it" is
//! enforced, not assumed. Teardown ends every grant still standing and reports the
//! pages it could not take back, which must then be leaked rather than freed.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Grant operations (the grant table; a model in tests and fuzzing).
pub trait Grants {
    /// Grants the backend access to buffer page `page`; `None` when no reference is
    /// free.
    fn grant(&mut self, page: u16) -> Option<u32>;
    /// Ends grant `gref`; `false` (and the grant stays) while the backend uses it.
    fn end(&mut self, gref: u32) -> bool;
}

/// Why a buffer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// No grant reference was free to post the buffer.
    NoReference(u16),
    /// The buffer is granted already (posting it twice would give the backend two
    /// requests for one page).
    AlreadyGranted(u16),
    /// The backend still uses the buffer's grant: the page is not ours.
    StillInUse(u16),
    /// The buffer is not granted (a response for a buffer never posted).
    NotGranted(u16),
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::NoReference(id) => write!(f, "no grant reference for buffer {id}"),
            GrantError::AlreadyGranted(id) => write!(f, "buffer {id} is granted already"),
            GrantError::StillInUse(id) => {
                write!(
                    f,
                    "the backend still uses buffer {id}'s grant after answering"
                )
            }
            GrantError::NotGranted(id) => write!(f, "buffer {id} is not granted"),
        }
    }
}

/// Per buffer: its grant while the backend may reach it.
#[derive(Debug, Clone)]
pub struct BufferGrants {
    granted: Vec<Option<u32>>,
    /// Buffers whose grant could not be ended: never ours again.
    lost: Vec<bool>,
}

impl BufferGrants {
    /// `n` buffers, none granted.
    pub fn new(n: usize) -> Self {
        BufferGrants {
            granted: vec![None; n],
            lost: vec![false; n],
        }
    }

    /// Grants buffer `id` for a request; returns the reference to put in it.
    pub fn grant(&mut self, id: u16, g: &mut impl Grants) -> Result<u32, GrantError> {
        let i = usize::from(id);
        match self.granted.get(i) {
            None => return Err(GrantError::NotGranted(id)),
            Some(Some(_)) => return Err(GrantError::AlreadyGranted(id)),
            Some(None) if self.lost[i] => return Err(GrantError::StillInUse(id)),
            Some(None) => {}
        }
        let gref = g.grant(id).ok_or(GrantError::NoReference(id))?;
        self.granted[i] = Some(gref);
        Ok(gref)
    }

    /// Takes buffer `id` back after the backend answered: ends its grant. Only after
    /// `Ok` may the page be read or handed out.
    pub fn reclaim(&mut self, id: u16, g: &mut impl Grants) -> Result<(), GrantError> {
        let i = usize::from(id);
        let gref = self
            .granted
            .get(i)
            .copied()
            .flatten()
            .ok_or(GrantError::NotGranted(id))?;
        if !g.end(gref) {
            self.lost[i] = true;
            return Err(GrantError::StillInUse(id));
        }
        self.granted[i] = None;
        Ok(())
    }

    /// Whether the page of buffer `id` is ours (no grant stands, none was lost).
    pub fn owned(&self, id: u16) -> bool {
        let i = usize::from(id);
        self.granted.get(i) == Some(&None) && !self.lost[i]
    }

    /// Ends every grant still standing; returns the buffers whose pages the backend
    /// may still reach (they must be leaked, never freed).
    pub fn teardown(&mut self, g: &mut impl Grants) -> Vec<u16> {
        let mut kept = Vec::new();
        for i in 0..self.granted.len() {
            let id = i as u16;
            let gone = match self.granted[i] {
                Some(_) => self.reclaim(id, g).is_err(),
                None => self.lost[i],
            };
            if gone {
                kept.push(id);
            }
        }
        kept
    }
}

/// A grant table that plays the backend: used by the tests and the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub mod model {
    use super::Grants;
    use alloc::vec::Vec;

    /// Grants by reference: (page, in use by the backend right now).
    #[derive(Debug, Default)]
    pub struct Table {
        /// Live grants: reference → (page, the backend has it mapped or is copying).
        pub live: Vec<(u32, u16, bool)>,
        /// References free for reuse.
        pub free_refs: u32,
        next: u32,
    }

    impl Table {
        /// A table with `refs` references.
        pub fn new(refs: u32) -> Self {
            Table {
                live: Vec::new(),
                free_refs: refs,
                next: 0,
            }
        }

        /// Whether the backend may reach `page` now.
        pub fn reachable(&self, page: u16) -> bool {
            self.live.iter().any(|&(_, p, _)| p == page)
        }

        /// The backend starts or stops using the grant of `page`.
        pub fn set_busy(&mut self, page: u16, busy: bool) {
            for g in self.live.iter_mut().filter(|g| g.1 == page) {
                g.2 = busy;
            }
        }
    }

    impl Grants for Table {
        fn grant(&mut self, page: u16) -> Option<u32> {
            if self.free_refs == 0 {
                return None;
            }
            self.free_refs -= 1;
            self.next += 1;
            self.live.push((self.next, page, false));
            Some(self.next)
        }

        fn end(&mut self, gref: u32) -> bool {
            match self.live.iter().position(|g| g.0 == gref) {
                Some(i) if !self.live[i].2 => {
                    self.live.swap_remove(i);
                    self.free_refs += 1;
                    true
                }
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::Table;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_page_is_unreachable_once_answered_and_granted_again_when_posted() {
        let mut t = Table::new(16);
        let mut b = BufferGrants::new(4);
        for id in 0..4 {
            b.grant(id, &mut t).unwrap();
        }
        // The backend answers buffer 2: the frontend takes it back before reading.
        b.reclaim(2, &mut t).unwrap();
        assert!(b.owned(2));
        assert!(
            !t.reachable(2),
            "the backend can still write a page being read"
        );
        b.grant(2, &mut t).unwrap();
        assert!(t.reachable(2));
        assert_eq!(b.grant(2, &mut t), Err(GrantError::AlreadyGranted(2)));
    }

    #[test]
    fn a_grant_still_in_use_keeps_the_page_away_for_good() {
        let mut t = Table::new(16);
        let mut b = BufferGrants::new(2);
        b.grant(0, &mut t).unwrap();
        t.set_busy(0, true);
        assert_eq!(b.reclaim(0, &mut t), Err(GrantError::StillInUse(0)));
        assert!(!b.owned(0));
        assert_eq!(b.grant(0, &mut t), Err(GrantError::AlreadyGranted(0)));
        assert_eq!(b.teardown(&mut t), vec![0]);
    }

    #[test]
    fn teardown_ends_every_grant() {
        let mut t = Table::new(16);
        let mut b = BufferGrants::new(8);
        for id in 0..8 {
            b.grant(id, &mut t).unwrap();
        }
        assert_eq!(b.teardown(&mut t), Vec::<u16>::new());
        assert!(t.live.is_empty(), "grants left standing: {:?}", t.live);
        assert_eq!(t.free_refs, 16);
    }

    proptest! {
        /// Any sequence of posts, answers, busy/idle backend and a final teardown: a
        /// page is owned only when the backend cannot reach it, references are never
        /// leaked, and teardown leaves grants only on pages it reports.
        #[test]
        fn owned_pages_are_never_reachable(ops in proptest::collection::vec((0u8..4, 0u16..8), 0..200)) {
            let mut t = Table::new(6);
            let mut b = BufferGrants::new(8);
            for (op, id) in ops {
                match op {
                    0 => { let _ = b.grant(id, &mut t); }
                    1 => { let _ = b.reclaim(id, &mut t); }
                    2 => t.set_busy(id, true),
                    _ => t.set_busy(id, false),
                }
                for p in 0..8 {
                    prop_assert!(!(b.owned(p) && t.reachable(p)), "page {} owned but reachable", p);
                }
                prop_assert_eq!(t.free_refs as usize + t.live.len(), 6);
            }
            let kept = b.teardown(&mut t);
            for p in 0..8 {
                prop_assert_eq!(t.reachable(p), kept.contains(&p) && t.reachable(p));
                if t.reachable(p) { prop_assert!(kept.contains(&p)); }
            }
        }
    }
}
