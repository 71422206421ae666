//! The grant table: set up with `GNTTABOP_setup_table`, its frames mapped into the
//! image, and grant/revoke of page access for other domains (netfront's rings and
//! buffers use it).

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use crate::abi;
use crate::grant_ref::{self, ENTRY_LEN, RefAllocator};
use crate::hypercall::{hypercall, update_va_mapping};
use crate::memory;

/// Frames of grant table we map (512 v1 entries each).
pub const FRAMES: usize = 4;

#[repr(C, align(4096))]
struct Frames([[u8; 4096]; FRAMES]);
// Remapped onto Xen's grant-table frames; only touched through entry pointers.
static mut TABLE: Frames = Frames([[0; 4096]; FRAMES]);
static ENTRIES: AtomicU32 = AtomicU32::new(0);
static REFS: spinning_top::Spinlock<RefAllocator> =
    spinning_top::Spinlock::new(RefAllocator::new(0));

/// Sets up and maps the grant table; returns the number of entries.
pub fn init() -> Result<u32, &'static str> {
    let mut frames = [0u64; FRAMES];
    let mut arg = abi::gnttab_setup_table {
        dom: abi::DOMID_SELF,
        nr_frames: FRAMES as u32,
        status: 0,
        frame_list: frames.as_mut_ptr() as u64,
    };
    // SAFETY: GNTTABOP_setup_table reads `arg` and writes `nr_frames` machine frame
    // numbers into `frames` and a status into `arg`.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_grant_table_op,
            u64::from(abi::GNTTABOP_setup_table),
            (&raw mut arg) as u64,
            1,
            0,
            0,
        )
    };
    if rc != 0 || arg.status != 0 {
        return Err("GNTTABOP_setup_table failed");
    }
    let base = (&raw mut TABLE) as u64;
    for (i, &mfn) in frames.iter().enumerate() {
        if update_va_mapping(base + i as u64 * 4096, (mfn << 12) | memory::PTE_KERNEL_RW) != 0 {
            return Err("cannot map a grant-table frame");
        }
    }
    let entries = (FRAMES * 4096 / ENTRY_LEN) as u32;
    ENTRIES.store(entries, Ordering::SeqCst);
    *REFS.lock() = RefAllocator::new(entries);
    Ok(entries)
}

fn entry(gref: u32) -> *mut u8 {
    assert!(
        gref < ENTRIES.load(Ordering::SeqCst),
        "grant ref {gref} out of range"
    );
    // SAFETY: within the mapped table (checked above).
    unsafe { (&raw mut TABLE).cast::<u8>().add(gref as usize * ENTRY_LEN) }
}

fn flags(gref: u32) -> &'static AtomicU16 {
    const _: () = assert!(core::mem::offset_of!(crate::abi::grant_entry_v1, flags) == 0);
    // SAFETY: the flags word (offset 0) of a mapped v1 entry, shared with Xen, accessed atomically.
    unsafe { AtomicU16::from_ptr(entry(gref).cast::<u16>()) }
}

/// Grants `domid` access to the page at pseudo-physical `addr`; returns the reference.
pub fn grant_access(domid: u16, addr: u64, readonly: bool) -> Option<u32> {
    let gref = REFS.lock().alloc()?;
    let e = entry(gref);
    let mfn = memory::mfn_of_addr(addr);
    // SAFETY: entry `gref` is ours (allocated) and not yet published (flags 0): write
    // domid and frame, then publish with a release store of the flags.
    unsafe {
        e.add(grant_ref::DOMID_OFFSET)
            .cast::<u16>()
            .write_volatile(domid);
        e.add(grant_ref::FRAME_OFFSET)
            .cast::<u32>()
            .write_volatile(mfn as u32);
    }
    flags(gref).store(grant_ref::grant_flags(readonly), Ordering::Release);
    Some(gref)
}

/// Revokes a grant; false (and the grant stays) if the peer is using it right now.
pub fn end_access(gref: u32) -> bool {
    let f = flags(gref);
    let current = f.load(Ordering::Acquire);
    if !grant_ref::revocable(current)
        || f.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return false;
    }
    REFS.lock().release(gref)
}

/// The number of entries (0 before `init`).
pub fn entries() -> u32 {
    ENTRIES.load(Ordering::SeqCst)
}
