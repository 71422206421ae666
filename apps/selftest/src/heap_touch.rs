//! `selftest -- touch-heap`: writes and reads back nearly all of the heap, so a test in a
//! large domain proves that all of its memory is mapped and usable, not only counted.

use alloc::vec::Vec;

use libos::testing::Checker;

/// Bytes per allocation.
const BLOCK: usize = 16 << 20;
/// Heap left untouched for everything else.
const SPARE: u64 = 32 << 20;

/// Allocates blocks until all but [`SPARE`] of the heap is taken, stamps every page with
/// its address, checks the stamps, and prints `heap_touched_top_mib=N` (the highest
/// address touched, in MiB).
pub fn check(c: &mut Checker) {
    let budget = libos::heap::total_bytes().saturating_sub(SPARE);
    let mut blocks: Vec<Vec<u64>> = Vec::new();
    let mut taken = 0u64;
    while taken + BLOCK as u64 <= budget {
        let mut b: Vec<u64> = Vec::new();
        if b.try_reserve_exact(BLOCK / 8).is_err() {
            break;
        }
        // One stamp per 4 KiB page: its own address.
        b.resize(BLOCK / 8, 0);
        for page in b.chunks_mut(512) {
            page[0] = page.as_ptr() as u64;
        }
        blocks.push(b);
        taken += BLOCK as u64;
    }
    let intact = blocks
        .iter()
        .flat_map(|b| b.chunks(512))
        .all(|page| page[0] == page.as_ptr() as u64);
    let top = blocks
        .iter()
        .map(|b| b.as_ptr() as u64 + BLOCK as u64)
        .max()
        .unwrap_or(0);
    c.check(
        "heap: all but 32 MiB written and read back",
        intact && taken + BLOCK as u64 > budget,
        format_args!("{} of {budget} bytes, intact: {intact}", taken),
    );
    libos::println!("heap_touched_top_mib={}", top >> 20);
}
