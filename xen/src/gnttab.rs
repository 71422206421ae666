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

/// A page of the image to grant in [`self_check`].
#[repr(C, align(4096))]
struct CheckPage([u8; 4096]);
static CHECK_PAGE: CheckPage = CheckPage([0; 4096]);

/// The `selftest` app's grant-table check: the table is set up, and a page of the image
/// granted read-only to dom0 gets a reference past the reserved ones whose entry reads
/// back as that grant, and is revoked (flags cleared, reference free again).
///
/// Context: task context, after `init`.
pub fn self_check(check: &mut dyn FnMut(&str, bool, core::fmt::Arguments<'_>)) {
    let n = entries();
    check(
        "xen: grant table: 4 frames, 2048 entries",
        FRAMES == 4 && n == 2048,
        format_args!("{FRAMES} frames, {n} entries"),
    );
    let page = (&raw const CHECK_PAGE) as u64;
    let Some(gref) = grant_access(0, page, true) else {
        check(
            "xen: grant a page to dom0",
            false,
            format_args!("no free reference"),
        );
        return;
    };
    let e = entry(gref);
    // SAFETY: entry `gref` is ours (granted above, not yet revoked); plain reads of
    // the words we wrote.
    let (domid, frame) = unsafe {
        (
            e.add(grant_ref::DOMID_OFFSET).cast::<u16>().read_volatile(),
            e.add(grant_ref::FRAME_OFFSET).cast::<u32>().read_volatile(),
        )
    };
    let granted = flags(gref).load(Ordering::Acquire);
    let mfn = memory::mfn_of_addr(page);
    check(
        "xen: grant a page to dom0",
        gref >= grant_ref::RESERVED
            && granted == grant_ref::grant_flags(true)
            && domid == 0
            && u64::from(frame) == mfn,
        format_args!(
            "ref {gref}, flags {granted:#x}, domid {domid}, frame {frame:#x} (mfn {mfn:#x})"
        ),
    );
    let revoked = end_access(gref);
    let cleared = flags(gref).load(Ordering::Acquire);
    check(
        "xen: revoke the grant",
        revoked && cleared == 0,
        format_args!("end_access {revoked}, flags {cleared:#x}"),
    );
}
