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
/// Tables available: 1 PML4 + 1 PDPT per 512 GiB + 1 PD per GiB + 1 PT per split
/// 2 MiB (page 0, the image's guard pages, each task stack's guard page). It is static,
/// so it is sized for typical guests (a few GiB, tens of tasks); past it, boot fails
/// clearly and stacks go without a guard page.
const POOL_TABLES: usize = 40;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Table([u64; ENTRIES]);

// Only `Builder` touches the pool, once, on the boot CPU before the tables are live. In
// .noinit (the linker script): boot does not zero it, `Builder::alloc` zeroes each table
// it hands out, so only the few tables used cost their zeroing.
#[unsafe(link_section = ".bss.noinit.page_tables")]
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
    /// The PML4 (identity-mapped address); 0 before `init`.
    pml4: u64,
}

/// The live tables, kept for run-time changes (stack guard pages).
static LIVE: spinning_top::Spinlock<Builder> =
    spinning_top::Spinlock::new(Builder { used: 0, pml4: 0 });

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
        // SAFETY: as above: `t` is a table of the pool no one else holds. The pool is not
        // zeroed at boot (.noinit), so every table starts empty here.
        unsafe { t.write(Table([0; ENTRIES])) };
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

    /// The PD covering `addr`.
    fn pd(&mut self, pml4: *mut Table, addr: u64) -> Result<*mut Table, OutOfTables> {
        let idx = |shift: u32| ((addr >> shift) & 0x1ff) as usize;
        // SAFETY: pml4 and every table `next` returns are ours; indices are < 512.
        unsafe {
            let pdpt = self.next(&raw mut (*pml4).0[idx(39)])?;
            self.next(&raw mut (*pdpt).0[idx(30)])
        }
    }

    /// The PD entry covering `addr`.
    fn pd_entry(&mut self, pml4: *mut Table, addr: u64) -> Result<*mut u64, OutOfTables> {
        let pd = self.pd(pml4, addr)?;
        // SAFETY: `pd` is ours; the index is < 512.
        Ok(unsafe { &raw mut (*pd).0[((addr >> 21) & 0x1ff) as usize] })
    }

    /// Maps `[start, end)` (rounded out to 2 MiB) with 2 MiB pages, leaving entries
    /// already present as they are. One table walk per GiB, not per page: boot maps all
    /// of RAM, and a walk per 2 MiB page cost 47 instructions each (24,000 for 1 GiB).
    fn map_2m_range(
        &mut self,
        pml4: *mut Table,
        start: u64,
        end: u64,
        extra: F,
    ) -> Result<(), OutOfTables> {
        const SIZE_1G: u64 = 1 << 30;
        let mut addr = start & !(SIZE_2M - 1);
        while addr < end {
            let pd = self.pd(pml4, addr)?;
            let stop = end.min((addr | (SIZE_1G - 1)).saturating_add(1));
            while addr < stop {
                // SAFETY: `pd` is ours and covers `addr`'s GiB; the index is < 512.
                let e = unsafe { &mut (*pd).0[((addr >> 21) & 0x1ff) as usize] };
                if *e & F::PRESENT.bits() == 0 {
                    *e = addr | (TABLE | F::HUGE_PAGE | extra).bits();
                }
                addr += SIZE_2M;
            }
        }
        Ok(())
    }

    fn map_2m(&mut self, pml4: *mut Table, addr: u64, extra: F) -> Result<(), OutOfTables> {
        let e = self.pd_entry(pml4, addr)?;
        // SAFETY: `e` is an entry of our PD.
        unsafe {
            if *e & F::PRESENT.bits() == 0 {
                *e = addr | (TABLE | F::HUGE_PAGE | extra).bits();
            }
        }
        Ok(())
    }

    /// Maps (`present`) or unmaps the 4 KiB page at `addr`, splitting its 2 MiB page if
    /// needed. The page must lie in mapped RAM.
    fn set_4k(&mut self, pml4: *mut Table, addr: u64, present: bool) -> Result<(), OutOfTables> {
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
                let pte = &mut (*pt).0[((addr >> 12) & 0x1ff) as usize];
                *pte = if present { addr | TABLE.bits() } else { 0 };
            }
        }
        Ok(())
    }
}

/// Builds the identity map of `ram` without the pages in `unmapped`, plus the 2 MiB
/// pages holding `mmio` addresses (uncached), and switches to it.
///
/// # Safety
/// Must run once, on the boot CPU, irqs off. Everything the kernel uses (image, stacks,
/// boot data it still reads) must lie in `ram` and outside `unmapped`.
pub unsafe fn init(ram: &[Region], unmapped: &[u64], mmio: &[u64]) -> Result<(), OutOfTables> {
    let mut b = LIVE.lock();
    let pml4 = b.alloc()?;
    b.pml4 = pml4 as u64;
    for r in ram {
        b.map_2m_range(pml4, r.start, r.end, F::empty())?;
    }
    for &addr in mmio {
        b.map_2m(pml4, addr & !(SIZE_2M - 1), F::NO_CACHE | F::WRITE_THROUGH)?;
    }
    for &page in unmapped {
        b.set_4k(pml4, page & !(SIZE_4K - 1), false)?;
    }
    let frame = PhysFrame::containing_address(PhysAddr::new(pml4 as u64));
    // SAFETY: the new tables identity-map all RAM, which holds this code, its stack and
    // its data (caller's guarantee), so execution continues unchanged after the switch.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    Ok(())
}

/// Maps or unmaps one 4 KiB page of RAM at run time (stack guard pages); false if the
/// table pool is exhausted (the page then stays as it was).
///
/// Context: any; takes the page-table lock (callers hold no other paging state).
pub fn set_present(addr: u64, present: bool) -> bool {
    // Irqs off while the lock is held: a task preempted while holding it would deadlock
    // the next task that frees a stack (the scheduler re-maps guard pages with irqs
    // off, right after a switch).
    let _irqs = libos::irqflags::IrqGuard::new();
    let mut b = LIVE.lock();
    let pml4 = b.pml4 as *mut Table;
    if pml4.is_null() || b.set_4k(pml4, addr & !(SIZE_4K - 1), present).is_err() {
        return false;
    }
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(addr));
    true
}

/// Maps the 2 MiB page holding device registers at `addr` uncached, at run time (PCI
/// BARs, the I/O APIC, virtio-mmio windows found after boot); a page already mapped is
/// left as it is. False if the table pool is exhausted.
///
/// Context: task context or boot; takes the page-table lock (with irqs off, as
/// [`set_present`] does).
pub fn map_mmio(addr: u64) -> bool {
    let _irqs = libos::irqflags::IrqGuard::new();
    let mut b = LIVE.lock();
    let pml4 = b.pml4 as *mut Table;
    if pml4.is_null() {
        return false;
    }
    let page = addr & !(SIZE_2M - 1);
    if b.map_2m(pml4, page, F::NO_CACHE | F::WRITE_THROUGH)
        .is_err()
    {
        return false;
    }
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(page));
    true
}
