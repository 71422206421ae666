//! The domain's memory: extend Xen's initial mapping to all of the domain's pages.
//!
//! With VIRT_BASE 0 the initial mapping is the identity of pseudo-physical addresses
//! [0, end of bootstrap area + ≥ 512 KiB, rounded to 4 MiB). Past it we map pfn `p` at
//! virtual `p * 4096` ourselves, 2 MiB at a time: a new L1 table (a free page, filled
//! in place from the p2m list, then made read-only, as Xen requires of page tables),
//! hooked into the L2 table with one `mmu_update`, which validates it. Each further
//! GiB first gets a new L2 table the same way, hooked into the L3 table (L4[0]'s, which
//! covers the first 512 GiB).
//!
//! Page-table pages are taken in order from the start of the initial mapping's free
//! area upward, and may run past it into memory mapped just before: each 2 MiB chunk
//! maps 512 pages and uses at most two (an L1 table, and an L2 table every GiB), so the
//! next table page is always already mapped (checked). `[tables_start, tables_end)` is
//! reserved from the heap.
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::abi;
use crate::hypercall::{hypercall, update_va_mapping};
use libos::balloon::Issue;

const PAGE: u64 = 4096;
const CHUNK: u64 = 2 << 20;
const ONE_GIB: u64 = 1 << 30;
/// What one L3 table (L4[0]'s) covers.
const L3_SPAN: u64 = 512 * ONE_GIB;
/// `machine_to_phys_mapping`: the M2P table Xen maps read-only into every PV guest.
const M2P: *const u64 = abi::MACH2PHYS_VIRT_START as *const u64;
const PTE_PRESENT: u64 = 1;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;
/// Present | user | accessed: a read-only kernel mapping (page-table pages).
const PTE_KERNEL_RO: u64 = 0x25;
/// Present | rw | user | accessed | dirty.
pub const PTE_KERNEL_RW: u64 = 0x67;

/// Virtual address of the p2m list (pfn → mfn); 0 until `init`.
static P2M: AtomicU64 = AtomicU64::new(0);
static NR_PAGES: AtomicU64 = AtomicU64::new(0);
/// Virtual address of the top-level page table (start_info's pt_base).
static PT_BASE: AtomicU64 = AtomicU64::new(0);

fn mfn_of_pfn(pfn: u64) -> u64 {
    let p2m = P2M.load(Relaxed) as *const u64;
    assert!(
        pfn < NR_PAGES.load(Relaxed),
        "pfn {pfn:#x} outside the domain"
    );
    // SAFETY: the p2m list has nr_pages entries and lies in the initial mapping.
    unsafe { p2m.add(pfn as usize).read_volatile() }
}

/// The pfn of machine frame `mfn` (from Xen's M2P table).
pub fn pfn_of_mfn(mfn: u64) -> u64 {
    // SAFETY: Xen maps the M2P table read-only at this address in every PV guest; it has
    // an entry for every machine frame.
    unsafe { M2P.add(mfn as usize).read_volatile() }
}

/// Reads entry `idx` of the page table at machine frame `mfn` (mapped at its pfn).
fn table_entry(mfn: u64, idx: u64) -> u64 {
    let va = pfn_of_mfn(mfn) * PAGE;
    // SAFETY: page tables of this domain are mapped (read-only) at their pfn: the
    // bootstrap ones by Xen's initial mapping, ours (`new_table`) lie in the identity
    // map below the end mapped so far.
    unsafe { ((va + idx * 8) as *const u64).read_volatile() }
}

fn mmu_update(reqs: &[abi::mmu_update]) -> Result<(), i64> {
    let mut done = 0u32;
    // SAFETY: mmu_update reads `reqs` and writes the success count; Xen validates every
    // update against the domain's page ownership and types.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_mmu_update,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            (&raw mut done) as u64,
            u64::from(abi::DOMID_SELF),
            0,
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// `MMUEXT_TLB_FLUSH_ALL`: flushes the TLB of every vCPU of this domain. (`mmu_update`
/// flushes nothing: after clearing PTEs, another vCPU — or this one — may still hold
/// the old translations.)
fn flush_tlb_all_vcpus() -> Result<(), i64> {
    let op = abi::mmuext_op {
        cmd: abi::MMUEXT_TLB_FLUSH_ALL,
        arg1: abi::mmuext_op__bindgen_ty_1 { mfn: 0 },
        arg2: abi::mmuext_op__bindgen_ty_2 { nr_ents: 0 },
    };
    let mut done = 0u32;
    // SAFETY: mmuext_op reads the one operation and writes the success count; a TLB
    // flush changes no mapping.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_mmuext_op,
            (&raw const op) as u64,
            1,
            (&raw mut done) as u64,
            u64::from(abi::DOMID_SELF),
            0,
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// What `init` mapped.
#[derive(Debug, Clone, Copy)]
pub struct Mapped {
    /// End of the mapped (identity) range: all of the domain's pages.
    pub end: u64,
    /// Pages at [tables_start, tables_end) hold page tables: not heap.
    pub tables_start: u64,
    /// See `tables_start`.
    pub tables_end: u64,
}

/// Hands out page-table pages in address order from the free area up.
struct TablePages {
    next: u64,
}

impl TablePages {
    /// The next page, which must lie below `mapped_end` (mapped and unused).
    fn take(&mut self, mapped_end: u64) -> Result<u64, &'static str> {
        if self.next + PAGE > mapped_end {
            return Err("no mapped page left for the page tables of the rest of memory");
        }
        let page = self.next;
        self.next += PAGE;
        Ok(page)
    }
}

/// Maps every page of the domain.
///
/// # Safety
/// Once, at boot, before the heap exists; `[free_start, initial_end)` must be free
/// memory of the initial mapping; `pt_base` is start_info's top-level table.
pub unsafe fn init(
    p2m_va: u64,
    nr_pages: u64,
    pt_base: u64,
    free_start: u64,
    initial_end: u64,
) -> Result<Mapped, &'static str> {
    P2M.store(p2m_va, Relaxed);
    NR_PAGES.store(nr_pages, Relaxed);
    PT_BASE.store(pt_base, Relaxed);
    let want_end = nr_pages * PAGE;
    if want_end > L3_SPAN {
        return Err("domains larger than 512 GiB are not supported");
    }
    // SAFETY: pt_base is the mapped top-level table (start_info).
    let l4e = unsafe { (pt_base as *const u64).read_volatile() };
    if l4e & PTE_PRESENT == 0 {
        return Err("the initial page tables do not cover the first GiB");
    }
    let l3_mfn = (l4e & PTE_ADDR) >> 12;
    let mut tables = TablePages { next: free_start };
    // Invariant: [0, va) is mapped; `va` is 2 MiB-aligned (the initial mapping ends on
    // a 4 MiB boundary).
    let mut va = initial_end;
    while va < want_end {
        let l2_mfn = l2_table(l3_mfn, va, &mut tables, va)?;
        let l1_va = tables.take(va)?;
        map_chunk(l2_mfn, va, l1_va, want_end)?;
        va += CHUNK;
    }
    Ok(Mapped {
        end: want_end.max(initial_end),
        tables_start: free_start,
        tables_end: tables.next,
    })
}

/// The machine frame of the L2 table covering `va`'s GiB: the existing one, or a new
/// one (from `tables`, below `mapped_end`) hooked into the L3 table at `l3_mfn`.
fn l2_table(
    l3_mfn: u64,
    va: u64,
    tables: &mut TablePages,
    mapped_end: u64,
) -> Result<u64, &'static str> {
    let l3_idx = (va >> 30) & 511;
    let l3e = table_entry(l3_mfn, l3_idx);
    if l3e & PTE_PRESENT != 0 {
        return Ok((l3e & PTE_ADDR) >> 12);
    }
    let table_va = tables.take(mapped_end)?;
    let table_mfn = new_table(table_va, |_| 0)?;
    hook(l3_mfn, l3_idx, table_mfn).map_err(|_| "Xen refused a new L2 table")?;
    Ok(table_mfn)
}

/// Fills the page at `table_va` with `entry(i)` for its 512 entries and makes it
/// read-only, as Xen wants a page before it becomes a page table (Xen checks the
/// entries when the table is hooked in); returns its machine frame.
fn new_table(table_va: u64, entry: impl Fn(u64) -> u64) -> Result<u64, &'static str> {
    let table = table_va as *mut u64;
    for i in 0..PAGE / 8 {
        // SAFETY: `table_va` is a free, mapped, writable page (from `TablePages`), not
        // yet a page table; `i` < 512 stays inside it.
        unsafe { table.add(i as usize).write_volatile(entry(i)) };
    }
    let table_mfn = mfn_of_pfn(table_va / PAGE);
    if update_va_mapping(table_va, (table_mfn << 12) | PTE_KERNEL_RO) != 0 {
        return Err("cannot make a new page table read-only");
    }
    Ok(table_mfn)
}

/// Points entry `idx` of the page table at `table_mfn` to the table `child_mfn`.
fn hook(table_mfn: u64, idx: u64, child_mfn: u64) -> Result<(), i64> {
    mmu_update(&[abi::mmu_update {
        ptr: (table_mfn << 12) + idx * 8,
        val: (child_mfn << 12) | PTE_KERNEL_RW,
    }])
}

/// Maps [va, va + 2 MiB) ∩ [.., end) with a new L1 table at `table_va`, written in
/// place and handed to Xen in one `mmu_update` (which validates all its entries).
fn map_chunk(l2_mfn: u64, va: u64, table_va: u64, end: u64) -> Result<(), &'static str> {
    let l2_idx = (va >> 21) & 511;
    if table_entry(l2_mfn, l2_idx) & PTE_PRESENT != 0 {
        return Err("an L2 slot past the initial mapping is already in use");
    }
    let pages = ((end - va) / PAGE).min(CHUNK / PAGE);
    let table_mfn = new_table(table_va, |i| {
        if i < pages {
            (mfn_of_pfn(va / PAGE + i) << 12) | PTE_KERNEL_RW
        } else {
            0
        }
    })?;
    hook(l2_mfn, l2_idx, table_mfn).map_err(|_| "Xen refused a new L1 table")
}

/// The machine frame behind pseudo-physical address `addr`.
pub fn mfn_of_addr(addr: u64) -> u64 {
    mfn_of_pfn(addr / PAGE)
}

/// The machine frame of the top-level page table (a secondary vCPU's cr3).
pub fn top_table_mfn() -> u64 {
    mfn_of_addr(PT_BASE.load(Relaxed))
}

/// Unmaps (`protect`) or maps back one page of the domain (stack guard pages), and
/// flushes the page from every vCPU's TLB (`UVMF_ALL`: a vCPU that ran on the stack
/// before must not keep using a stale entry for the guard page).
pub fn set_guard(addr: u64, protect: bool) -> bool {
    if P2M.load(Relaxed) == 0 {
        return false;
    }
    let pte = if protect {
        0
    } else {
        (mfn_of_pfn(addr / PAGE) << 12) | PTE_KERNEL_RW
    };
    crate::hypercall::update_va_mapping_all(addr & !(PAGE - 1), pte) == 0
}

/// Machine address of the L1 entry that maps `va` (a page of our identity map).
fn l1_entry_maddr(va: u64) -> u64 {
    let pt_base = PT_BASE.load(Relaxed);
    // SAFETY: pt_base is the mapped top-level table (start_info), stored by `init`.
    let l4e = unsafe { ((pt_base + ((va >> 39) & 511) * 8) as *const u64).read_volatile() };
    let l3e = table_entry((l4e & PTE_ADDR) >> 12, (va >> 30) & 511);
    let l2e = table_entry((l3e & PTE_ADDR) >> 12, (va >> 21) & 511);
    (l2e & PTE_ADDR) + ((va >> 12) & 511) * 8
}

const INVALID_MFN: u64 = abi::INVALID_P2M_ENTRY;

fn set_p2m(pfn: u64, mfn: u64) {
    let p2m = P2M.load(Relaxed) as *mut u64;
    // SAFETY: pfn < nr_pages (callers pass pages of the domain); the p2m list is ours
    // and writable in the initial mapping.
    unsafe { p2m.add(pfn as usize).write_volatile(mfn) };
}

/// Pages between two reschedule points in the balloon's own loops.
const RESCHED_EVERY: usize = 1024;

/// The reschedule point of the balloon's per-page loops, at page `i` (see
/// [`set_ptes`] for why they need one).
fn page_loop_resched(i: usize) {
    if i.is_multiple_of(RESCHED_EVERY) {
        libos::preempt::cond_resched();
    }
}

/// Sets the PTEs of `vas` to `pte(i)` in batches, with a reschedule point after each
/// batch: a balloon of many pages spends long in these (non-preemptible) hypercalls and
/// loops besides the long preemptible one, and under `none` `cond_resched` is the only
/// way a woken task gets in (Linux's balloon driver calls it the same way).
fn set_ptes(vas: impl Iterator<Item = u64>, pte: impl Fn(usize) -> u64) -> Result<(), i64> {
    let mut batch = [abi::mmu_update { ptr: 0, val: 0 }; 64];
    let mut n = 0;
    for (i, va) in vas.enumerate() {
        batch[n] = abi::mmu_update {
            ptr: l1_entry_maddr(va),
            val: pte(i),
        };
        n += 1;
        if n == batch.len() {
            mmu_update(&batch)?;
            n = 0;
            libos::preempt::cond_resched();
        }
    }
    if n > 0 {
        mmu_update(&batch[..n])?;
    }
    Ok(())
}

/// Runs `f` as `issue` says: inside a preemptible section, or plainly.
pub fn issued<R>(issue: Issue, f: impl FnOnce() -> R) -> R {
    match issue {
        Issue::Preemptible => libos::preempt::preemptible(f),
        Issue::Plain => f(),
    }
}

fn memory_op(cmd: u64, list: &mut [u64], issue: Issue) -> i64 {
    let mut r = abi::xen_memory_reservation {
        extent_start: list.as_mut_ptr() as u64,
        nr_extents: list.len() as u64,
        extent_order: 0,
        mem_flags: 0,
        domid: abi::DOMID_SELF,
    };
    // A long hypercall that Xen preempts and continues: preemptible whatever the model
    // (the reason this project exists: Thomas Gleixner, "Re: [RFC PATCH 1/5] entry:
    // Pass pt_regs to irqentry_exit_cond_resched()", LKML, 2022-08-09).
    issued(issue, || {
        // SAFETY: memory_op reads `r` and the extent list (and, for populate_physmap,
        // writes the new machine frames into it).
        unsafe {
            hypercall(
                abi::__HYPERVISOR_memory_op,
                cmd,
                (&raw mut r) as u64,
                0,
                0,
                0,
            )
        }
    })
}

/// Gives the `pages` pages at `addr` back to Xen (balloon out).
pub fn balloon_out(addr: u64, pages: usize, issue: Issue) -> Result<(), libos::balloon::Error> {
    use libos::balloon::Error;
    let pfns = (0..pages as u64).map(|i| addr / PAGE + i);
    let mut mfns = alloc::vec::Vec::with_capacity(pages);
    for (i, p) in pfns.clone().enumerate() {
        mfns.push(mfn_of_pfn(p));
        page_loop_resched(i);
    }
    set_ptes(pfns.clone().map(|p| p * PAGE), |_| 0).map_err(Error::Hypervisor)?;
    // No vCPU may keep a translation to a frame we give away: a stale one would, after
    // balloon-in maps new frames at these addresses, still reach the old frame.
    flush_tlb_all_vcpus().map_err(Error::Hypervisor)?;
    for (i, p) in pfns.clone().enumerate() {
        set_p2m(p, INVALID_MFN);
        page_loop_resched(i);
    }
    let rc = memory_op(
        u64::from(abi::XENMEM_decrease_reservation),
        &mut mfns,
        issue,
    );
    if rc == pages as i64 {
        return Ok(());
    }
    // Undo: take back what was released, remap the rest.
    let done = rc.max(0) as usize;
    let _ = balloon_in(addr, done, issue);
    let kept: alloc::vec::Vec<u64> = mfns[done..].to_vec();
    for (k, p) in pfns.skip(done).enumerate() {
        set_p2m(p, kept[k]);
    }
    let _ = set_ptes((done as u64..pages as u64).map(|i| addr + i * PAGE), |k| {
        (kept[k] << 12) | PTE_KERNEL_RW
    });
    Err(if rc < 0 {
        Error::Hypervisor(rc)
    } else {
        Error::Partial { done, asked: pages }
    })
}

/// The hypervisor's reservation calls on this domain, issued as `issue` says.
struct Xen {
    issue: Issue,
}

impl crate::balloon_ops::Reservation for Xen {
    fn populate(&mut self, list: &mut [u64]) -> i64 {
        memory_op(u64::from(abi::XENMEM_populate_physmap), list, self.issue)
    }

    fn decrease(&mut self, list: &mut [u64]) -> i64 {
        memory_op(
            u64::from(abi::XENMEM_decrease_reservation),
            list,
            self.issue,
        )
    }

    fn map(&mut self, first: u64, mfns: &[u64]) -> Result<(), i64> {
        for (i, &mfn) in mfns.iter().enumerate() {
            set_p2m(first + i as u64, mfn);
            page_loop_resched(i);
        }
        set_ptes((0..mfns.len() as u64).map(|i| (first + i) * PAGE), |i| {
            (mfns[i] << 12) | PTE_KERNEL_RW
        })
    }
}

/// Takes `pages` pages at `addr` back from Xen (balloon in) and maps them again; on a
/// partial result the frames Xen did give are released again (see `balloon_ops`).
pub fn balloon_in(addr: u64, pages: usize, issue: Issue) -> Result<(), libos::balloon::Error> {
    crate::balloon_ops::balloon_in(&mut Xen { issue }, addr / PAGE, pages)
}
