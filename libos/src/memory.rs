//! Physical memory regions (pure; host-tested).
//!
//! Backends report RAM and the ranges in use (the image, boot data); [`free_regions`]
//! computes what the heap may take. No allocation: this runs before the heap exists.
#![forbid(unsafe_code)]

/// A half-open range `[start, end)` of physical (identity-mapped) addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Region {
    /// `[start, start + len)`, saturating at the top of the address space.
    pub const fn from_len(start: u64, len: u64) -> Self {
        Region {
            start,
            end: start.saturating_add(len),
        }
    }

    /// Size in bytes (0 for an empty or inverted region).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the region holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The region shrunk inwards to `align` boundaries (`align` a power of two).
    pub const fn align_inwards(&self, align: u64) -> Self {
        let start = self.start.saturating_add(align - 1) & !(align - 1);
        let end = self.end & !(align - 1);
        if start < end {
            Region { start, end }
        } else {
            Region { start, end: start }
        }
    }
}

/// Most regions [`free_regions`] reports; further pieces are dropped (and counted).
pub const MAX_FREE_REGIONS: usize = 32;

/// The free memory: `ram` minus every `reserved` range, page-aligned inwards.
#[derive(Debug, Clone, Copy)]
pub struct FreeRegions {
    regions: [Region; MAX_FREE_REGIONS],
    len: usize,
    /// Pieces that did not fit in the table (memory left unused).
    pub dropped: usize,
}

impl FreeRegions {
    /// The free regions, sorted by start address, disjoint, non-empty.
    pub fn as_slice(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Total free bytes.
    pub fn total(&self) -> u64 {
        self.as_slice().iter().map(Region::len).sum()
    }

    fn push(&mut self, r: Region) {
        if self.len < MAX_FREE_REGIONS {
            self.regions[self.len] = r;
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// Page size used for alignment of free regions.
pub const PAGE_SIZE: u64 = 4096;

/// Computes `ram` minus `reserved`, each piece aligned inwards to pages, sorted.
pub fn free_regions(ram: &[Region], reserved: &[Region]) -> FreeRegions {
    let mut out = FreeRegions {
        regions: [Region::default(); MAX_FREE_REGIONS],
        len: 0,
        dropped: 0,
    };
    // Walk RAM in address order so the output is sorted even for an unsorted map.
    let mut cursor = 0u64;
    loop {
        // The RAM piece with the lowest start >= cursor, clipped to begin at cursor.
        let next = ram
            .iter()
            .filter(|r| r.end > cursor && !r.is_empty())
            .map(|r| Region {
                start: r.start.max(cursor),
                end: r.end,
            })
            .min_by_key(|r| r.start);
        let Some(mut piece) = next else { break };
        // Merge overlapping or touching RAM entries so the map's duplicates do not split pieces.
        while let Some(more) = ram
            .iter()
            .find(|r| r.start <= piece.end && r.end > piece.end)
        {
            piece.end = more.end;
        }
        cursor = piece.end;
        subtract_into(piece, reserved, &mut out);
    }
    out
}

/// Pushes the parts of `piece` that no reserved range covers, lowest first.
fn subtract_into(piece: Region, reserved: &[Region], out: &mut FreeRegions) {
    let mut start = piece.start;
    while start < piece.end {
        // Skip past any reserved range covering `start`.
        if let Some(r) = reserved.iter().find(|r| r.contains(start)) {
            start = r.end;
            continue;
        }
        // The free stretch ends at the next reserved start inside the piece.
        let end = reserved
            .iter()
            .filter(|r| r.start > start && r.start < piece.end)
            .map(|r| r.start)
            .min()
            .unwrap_or(piece.end);
        let free = Region { start, end }.align_inwards(PAGE_SIZE);
        if !free.is_empty() {
            out.push(free);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> Region {
        Region { start, end }
    }

    #[test]
    fn image_and_low_memory_are_carved_out() {
        let ram = [r(0, 0x9fc00), r(0x100000, 0x800_0000)];
        let reserved = [r(0, 0x100000), r(0x100000, 0x180123)];
        let free = free_regions(&ram, &reserved);
        assert_eq!(free.as_slice(), &[r(0x181000, 0x800_0000)]);
    }

    #[test]
    fn unsorted_and_overlapping_ram() {
        let ram = [r(0x10000, 0x20000), r(0, 0x8000), r(0x18000, 0x30000)];
        let free = free_regions(&ram, &[r(0x1000, 0x2000)]);
        assert_eq!(
            free.as_slice(),
            &[r(0, 0x1000), r(0x2000, 0x8000), r(0x10000, 0x30000)]
        );
    }

    /// Whether the union of `ram` covers all of `page`.
    fn covered(ram: &[Region], page: Region) -> bool {
        let mut x = page.start;
        while x < page.end {
            match ram.iter().filter(|f| f.contains(x)).map(|f| f.end).max() {
                Some(end) => x = end,
                None => return false,
            }
        }
        true
    }

    fn region() -> impl Strategy<Value = Region> {
        (0u64..1 << 24, 0u64..1 << 20).prop_map(|(s, l)| Region::from_len(s, l))
    }

    proptest! {
        #[test]
        fn free_is_ram_minus_reserved(
            ram in proptest::collection::vec(region(), 0..6),
            reserved in proptest::collection::vec(region(), 0..6),
            probes in proptest::collection::vec(0u64..(1 << 24) + (1 << 20), 64),
        ) {
            let free = free_regions(&ram, &reserved);
            let s = free.as_slice();
            prop_assert!(s.windows(2).all(|w| w[0].end <= w[1].start), "sorted, disjoint: {s:?}");
            for f in s {
                prop_assert!(!f.is_empty() && f.start % PAGE_SIZE == 0 && f.end % PAGE_SIZE == 0);
            }
            for p in probes {
                let in_free = s.iter().any(|f| f.contains(p));
                let in_ram = ram.iter().any(|f| f.contains(p));
                let in_res = reserved.iter().any(|f| f.contains(p));
                if in_free {
                    prop_assert!(in_ram && !in_res, "{p:#x} free but not RAM or reserved");
                }
                // Every whole free page of RAM is reported (when nothing was dropped).
                let page = Region::from_len(p & !(PAGE_SIZE - 1), PAGE_SIZE);
                let page_free = covered(&ram, page)
                    && !reserved.iter().any(|f| f.start < page.end && page.start < f.end);
                if page_free && free.dropped == 0 {
                    prop_assert!(in_free, "{p:#x} is in a free page but not reported");
                }
            }
        }
    }
}
