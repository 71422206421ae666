//! Grant-table v1 entries and grant-reference allocation (pure; host-tested).
//!
//! A v1 entry is [`crate::abi::grant_entry_v1`]: `{u16 flags; u16 domid; u32 frame}`.
//! To grant, the guest writes `domid` and `frame`, then (after a write barrier) `flags = GTF_permit_access`
//! (`| GTF_readonly`). To revoke, it clears `flags` only if the peer is not using the
//! entry (`GTF_reading`/`GTF_writing` clear).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::mem::{offset_of, size_of};

use crate::abi::{GTF_permit_access, GTF_reading, GTF_readonly, GTF_writing, grant_entry_v1};

/// Bytes per v1 entry.
pub const ENTRY_LEN: usize = size_of::<grant_entry_v1>();
/// Byte offset of `domid` in an entry.
pub const DOMID_OFFSET: usize = offset_of!(grant_entry_v1, domid);
/// Byte offset of `frame` in an entry.
pub const FRAME_OFFSET: usize = offset_of!(grant_entry_v1, frame);
/// Entries reserved for the toolstack (console, xenstore, ...).
pub const RESERVED: u32 = crate::abi::GNTTAB_NR_RESERVED_ENTRIES;

/// The flags word of a grant.
pub fn grant_flags(readonly: bool) -> u16 {
    GTF_permit_access | if readonly { GTF_readonly } else { 0 }
}

/// Whether an entry with `flags` may be revoked now.
pub fn revocable(flags: u16) -> bool {
    flags & (GTF_reading | GTF_writing) == 0
}

/// Hands out grant references `RESERVED..capacity`, reusing freed ones.
#[derive(Debug)]
pub struct RefAllocator {
    next: u32,
    capacity: u32,
    free: Vec<u32>,
}

impl RefAllocator {
    /// An allocator for a table of `capacity` entries.
    pub const fn new(capacity: u32) -> Self {
        RefAllocator {
            next: RESERVED,
            capacity,
            free: Vec::new(),
        }
    }

    /// A free reference, if any.
    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop().or_else(|| {
            (self.next < self.capacity).then(|| {
                self.next += 1;
                self.next - 1
            })
        })
    }

    /// Returns `gref` for reuse. Refuses references it never handed out.
    pub fn release(&mut self, gref: u32) -> bool {
        if !(RESERVED..self.next).contains(&gref) || self.free.contains(&gref) {
            return false;
        }
        self.free.push(gref);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flags() {
        assert_eq!(grant_flags(true), GTF_permit_access | GTF_readonly);
        assert!(revocable(GTF_permit_access));
        assert!(!revocable(GTF_permit_access | GTF_writing));
    }

    proptest! {
        #[test]
        fn never_hands_out_a_live_or_reserved_ref(ops in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut a = RefAllocator::new(40);
            let mut live = alloc::collections::BTreeSet::new();
            for alloc_op in ops {
                if alloc_op {
                    if let Some(r) = a.alloc() {
                        prop_assert!((RESERVED..40).contains(&r));
                        prop_assert!(live.insert(r), "ref {} handed out twice", r);
                    } else {
                        prop_assert_eq!(live.len(), 40 - RESERVED as usize);
                    }
                } else if let Some(&r) = live.iter().next() {
                    live.remove(&r);
                    prop_assert!(a.release(r));
                    prop_assert!(!a.release(r), "double release accepted");
                }
            }
        }
    }
}
