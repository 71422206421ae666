//! The balloon's bookkeeping against the hypervisor (pure; host-tested).
//!
//! Balloon-in asks Xen to populate a run of pseudo-physical frames and maps them. Xen
//! may populate only the first `k` (out of memory on its side): those `k` frames then
//! belong to the domain but are neither in the p2m list nor mapped, and a retry would
//! populate them again, leaking them for good. So a partial result gives back exactly
//! the `k` frames it got before reporting the error. Shrinking is planned in bounded
//! chunks ([`chunks`]), so no single heap allocation has to find the whole amount in
//! one piece.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use libos::balloon::Error;

/// Pages in one balloon-out chunk (2 MiB).
pub const CHUNK_PAGES: usize = 512;

/// The hypervisor's reservation calls and the domain's mapping of frames.
pub trait Reservation {
    /// `XENMEM_populate_physmap`: `list` holds pfns; Xen replaces each one it
    /// populated with its new machine frame, in order; returns how many (or < 0).
    fn populate(&mut self, list: &mut [u64]) -> i64;
    /// `XENMEM_decrease_reservation` of the machine frames in `list`; returns how many
    /// were released (or < 0).
    fn decrease(&mut self, list: &mut [u64]) -> i64;
    /// Enters `mfns` in the p2m list from pfn `first` on and maps them.
    fn map(&mut self, first: u64, mfns: &[u64]) -> Result<(), i64>;
}

/// Takes `pages` frames back from the hypervisor at pfn `first` and maps them. On a
/// partial result, the frames that were populated are released again, so the domain
/// holds exactly what it held before and a retry starts clean.
pub fn balloon_in(hv: &mut impl Reservation, first: u64, pages: usize) -> Result<(), Error> {
    if pages == 0 {
        return Ok(());
    }
    let mut list: Vec<u64> = (0..pages as u64).map(|i| first + i).collect();
    let rc = hv.populate(&mut list);
    if rc == pages as i64 {
        return hv.map(first, &list).map_err(Error::Hypervisor);
    }
    let done = rc.clamp(0, pages as i64) as usize;
    if done > 0 {
        let back = hv.decrease(&mut list[..done]);
        if back != done as i64 {
            // Xen took back fewer than it gave: those frames are lost to the domain
            // (nothing maps them), which is all that can be done.
            return Err(Error::Hypervisor(back.min(-1)));
        }
    }
    Err(if rc < 0 {
        Error::Hypervisor(rc)
    } else {
        Error::Partial { done, asked: pages }
    })
}

/// Splits a shrink of `pages` pages into chunks of at most [`CHUNK_PAGES`].
pub fn chunks(pages: usize) -> impl Iterator<Item = usize> {
    let n = pages.div_ceil(CHUNK_PAGES);
    (0..n).map(move |i| (pages - i * CHUNK_PAGES).min(CHUNK_PAGES))
}

/// A hypervisor that populates at most `limit` frames per call: the tests' (and the
/// fuzzers') model. It counts the frames the domain holds and those it has mapped.
#[cfg(any(test, feature = "fuzzing"))]
pub mod model {
    use super::Reservation;
    use alloc::collections::BTreeMap;

    /// The model.
    #[derive(Debug, Default)]
    pub struct Xen {
        /// Frames Xen would still give.
        pub free: u64,
        /// Most frames one populate call gives.
        pub limit: u64,
        /// Frames the domain holds: mfn → pfn it was populated for.
        pub held: BTreeMap<u64, u64>,
        /// pfn → mfn the domain mapped.
        pub mapped: BTreeMap<u64, u64>,
        next_mfn: u64,
    }

    impl Xen {
        /// A model with `free` frames to give, at most `limit` per call.
        pub fn new(free: u64, limit: u64) -> Self {
            Xen {
                free,
                limit,
                next_mfn: 0x1000,
                ..Xen::default()
            }
        }

        /// Frames the domain holds but has not mapped: leaked.
        pub fn leaked(&self) -> usize {
            self.held
                .keys()
                .filter(|m| !self.mapped.values().any(|v| v == *m))
                .count()
        }
    }

    impl Reservation for Xen {
        fn populate(&mut self, list: &mut [u64]) -> i64 {
            let n = (list.len() as u64).min(self.limit).min(self.free);
            for e in &mut list[..n as usize] {
                self.next_mfn += 1;
                self.held.insert(self.next_mfn, *e);
                *e = self.next_mfn;
            }
            self.free -= n;
            n as i64
        }

        fn decrease(&mut self, list: &mut [u64]) -> i64 {
            let mut n = 0;
            for m in list.iter() {
                if self.held.remove(m).is_some() {
                    self.free += 1;
                    n += 1;
                } else {
                    break;
                }
            }
            n
        }

        fn map(&mut self, first: u64, mfns: &[u64]) -> Result<(), i64> {
            for (i, &m) in mfns.iter().enumerate() {
                self.mapped.insert(first + i as u64, m);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::Xen;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_partial_populate_gives_back_what_it_got_and_a_retry_leaks_nothing() {
        let mut xen = Xen::new(1000, 300);
        assert_eq!(
            balloon_in(&mut xen, 0x100, 512),
            Err(Error::Partial {
                done: 300,
                asked: 512
            })
        );
        assert_eq!(xen.leaked(), 0, "frames held but not mapped");
        assert_eq!(xen.free, 1000);
        xen.limit = 1000;
        assert_eq!(balloon_in(&mut xen, 0x100, 512), Ok(()));
        assert_eq!(xen.leaked(), 0);
        assert_eq!(xen.held.len(), 512);
        assert_eq!(xen.mapped.len(), 512);
    }

    #[test]
    fn shrinking_goes_in_bounded_chunks() {
        assert_eq!(chunks(0).count(), 0);
        assert_eq!(chunks(512).collect::<Vec<_>>(), [512]);
        assert_eq!(chunks(1300).collect::<Vec<_>>(), [512, 512, 276]);
    }

    proptest! {
        /// Retries against a hypervisor that gives a bounded number per call: every
        /// frame the domain holds is mapped, whatever the sequence.
        #[test]
        fn no_frame_is_ever_held_unmapped(free in 0u64..2000, limit in 0u64..700, asks in proptest::collection::vec(1usize..600, 1..6)) {
            let mut xen = Xen::new(free, limit);
            let mut next = 0u64;
            for pages in asks {
                if balloon_in(&mut xen, next, pages).is_ok() {
                    next += pages as u64;
                }
                prop_assert_eq!(xen.leaked(), 0);
            }
        }

        #[test]
        fn chunks_add_up(pages in 0usize..100_000) {
            prop_assert_eq!(chunks(pages).sum::<usize>(), pages);
            prop_assert!(chunks(pages).all(|c| (1..=CHUNK_PAGES).contains(&c)));
        }
    }
}
