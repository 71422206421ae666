//! The kernel's own page tables: an identity map of RAM.
//!
//! RAM from the memory map is mapped with 2 MiB pages; the 2 MiB ranges holding a page
//! that must stay unmapped (page 0, stack guard pages) are split into 4 KiB pages and
//! those pages are left not-present, so a null dereference or a stack overflow faults.
//! Tables come from a static pool (no allocator exists yet).

use core::fmt;

use libos::memory::Region;
use x86_64::PhysAddr;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};

const ENTRIES: usize = 512;
const SIZE_4K: u64 = 4096;
const SIZE_2M: u64 = 2 << 20;
/// Tables available: 1 PML4 + 1 PDPT per 512 GiB + 1 PD per GiB + 1 PT per split 2 MiB.
const POOL_TABLES: usize = 96;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Table([u64; ENTRIES]);

// Only `Builder` touches the pool, once, on the boot CPU before the tables are live.
static mut POOL: [Table; POOL_TABLES] = [Table([0; ENTRIES]); POOL_TABLES];

/// The static pool ran out (too much RAM or too many unmapped pages).
#[derive(Debug)]
pub struct OutOfTables;

impl fmt::Display for OutOfTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page-table pool exhausted ({POOL_TABLES} tables): too much RAM for the boot map"
        )
    }
}

struct Builder {
    used: usize,
}

const TABLE: F = F::PRESENT.union(F::WRITABLE);
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

impl Builder {
    fn alloc(&mut self) -> Result<*mut Table, OutOfTables> {
        if self.used == POOL_TABLES {
            return Err(OutOfTables);
        }
        // SAFETY: index < POOL_TABLES; each table is handed out once, and the pool is
        // only used by this builder on the boot CPU (see POOL).
        let t = unsafe { (&raw mut POOL).cast::<Table>().add(self.used) };
        self.used += 1;
        Ok(t)
    }

    /// The next-level table under `entry`, creating it if absent.
    ///
    /// # Safety
    /// `entry` points into a table of this builder.
    unsafe fn next(&mut self, entry: *mut u64) -> Result<*mut Table, OutOfTables> {
        // SAFETY: the caller passes a valid entry of one of our tables.
        let e = unsafe { *entry };
        if e & F::PRESENT.bits() != 0 {
            return Ok((e & ADDR_MASK) as *mut Table);
        }
        let t = self.alloc()?;
        // SAFETY: as above; the new table's address is identity-mapped RAM in .bss.
        unsafe { *entry = t as u64 | TABLE.bits() };
        Ok(t)
    }

    /// The PD entry covering `addr`.
    fn pd_entry(&mut self, pml4: *mut Table, addr: u64) -> Result<*mut u64, OutOfTables> {
        let idx = |shift: u32| ((addr >> shift) & 0x1ff) as usize;
        // SAFETY: pml4 and every table `next` returns are ours; indices are < 512.
        unsafe {
            let pdpt = self.next(&raw mut (*pml4).0[idx(39)])?;
            let pd = self.next(&raw mut (*pdpt).0[idx(30)])?;
            Ok(&raw mut (*pd).0[idx(21)])
        }
    }

    fn map_2m(&mut self, pml4: *mut Table, addr: u64) -> Result<(), OutOfTables> {
        let e = self.pd_entry(pml4, addr)?;
        // SAFETY: `e` is an entry of our PD.
        unsafe {
            if *e & F::PRESENT.bits() == 0 {
                *e = addr | (TABLE | F::HUGE_PAGE).bits();
            }
        }
        Ok(())
    }

    /// Leaves the 4 KiB page at `addr` unmapped, splitting its 2 MiB page if needed.
    fn unmap_4k(&mut self, pml4: *mut Table, addr: u64) -> Result<(), OutOfTables> {
        let e = self.pd_entry(pml4, addr)?;
        // SAFETY: `e` is an entry of our PD; the new PT is ours.
        unsafe {
            if *e & F::HUGE_PAGE.bits() != 0 {
                let base = *e & ADDR_MASK;
                let pt = self.alloc()?;
                for (i, pte) in (*pt).0.iter_mut().enumerate() {
                    *pte = (base + i as u64 * SIZE_4K) | TABLE.bits();
                }
                *e = pt as u64 | TABLE.bits();
            }
            if *e & F::PRESENT.bits() != 0 {
                let pt = (*e & ADDR_MASK) as *mut Table;
                (*pt).0[((addr >> 12) & 0x1ff) as usize] = 0;
            }
        }
        Ok(())
    }
}

/// Builds the identity map of `ram` without the pages in `unmapped`, and switches to it.
///
/// # Safety
/// Must run once, on the boot CPU, irqs off. Everything the kernel uses (image, stacks,
/// boot data it still reads) must lie in `ram` and outside `unmapped`.
pub unsafe fn init(ram: &[Region], unmapped: &[u64]) -> Result<(), OutOfTables> {
    let mut b = Builder { used: 0 };
    let pml4 = b.alloc()?;
    for r in ram {
        let mut addr = r.start & !(SIZE_2M - 1);
        while addr < r.end {
            b.map_2m(pml4, addr)?;
            addr += SIZE_2M;
        }
    }
    for &page in unmapped {
        b.unmap_4k(pml4, page & !(SIZE_4K - 1))?;
    }
    let frame = PhysFrame::containing_address(PhysAddr::new(pml4 as u64));
    // SAFETY: the new tables identity-map all RAM, which holds this code, its stack and
    // its data (caller's guarantee), so execution continues unchanged after the switch.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    Ok(())
}
