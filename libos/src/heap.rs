//! The kernel heap: talc over the free RAM the backend reports.
//!
//! [`GlobalHeap`] is installed as `#[global_allocator]` by [`crate::image!`], so
//! `alloc` (`Vec`, `String`, `format!`) works in libos and apps once `init` ran.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

use spinning_top::RawSpinlock;
use talc::{TalcLock, source::Manual};

use crate::memory::Region;

/// The heap. Regions are added once at boot by [`init`].
static HEAP: TalcLock<RawSpinlock, Manual> = TalcLock::new(Manual);

/// Bytes handed to talc by [`init`].
static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes of live allocations (as requested; talc's per-chunk overhead not counted).
static USED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Gives every region to the allocator.
///
/// # Safety
/// Each region must be identity-mapped, writable RAM that nothing else uses, now or
/// later, and `init` must run once, before the first allocation.
pub(crate) unsafe fn init(regions: &[Region]) {
    let mut talc = HEAP.lock();
    for r in regions {
        let Ok(len) = usize::try_from(r.len()) else {
            continue;
        };
        let base = r.start as usize as *mut u8;
        // SAFETY: the caller guarantees the region is mapped RAM owned by nobody else.
        if unsafe { talc.claim(base, len) }.is_some() {
            HEAP_BYTES.fetch_add(r.len(), Ordering::Relaxed);
        }
    }
}

/// Total bytes the heap manages (allocated or free).
pub fn total_bytes() -> u64 {
    HEAP_BYTES.load(Ordering::Relaxed)
}

/// Bytes of live allocations (as requested by their layouts).
pub fn used_bytes() -> u64 {
    USED_BYTES.load(Ordering::Relaxed)
}

/// The global allocator: forwards to the libos heap.
#[derive(Debug, Clone, Copy)]
pub struct GlobalHeap;

// SAFETY: every method forwards to talc's `GlobalAlloc` implementation on the one
// static heap, which upholds the trait's contract.
//
// The heap's spin lock is held with irqs off: a task preempted while holding it would
// make any other task that allocates spin — forever, if that task has a higher priority
// (time slices only go to equal or higher priorities) — and interrupt handlers may
// allocate too. (Before the platform registers, irqs are off anyway.)
unsafe impl GlobalAlloc for GlobalHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _irqs = irqs_off();
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { HEAP.alloc(layout) };
        if !p.is_null() {
            USED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _irqs = irqs_off();
        // SAFETY: `ptr` came from `alloc` on the same heap with this layout (caller).
        unsafe { HEAP.dealloc(ptr, layout) };
        USED_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _irqs = irqs_off();
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { HEAP.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The old block is gone and a `new_size` one is live (on failure the old
            // one stays, unchanged).
            USED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
            USED_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }
}

/// An irqs-off guard once the platform exists (boot code before that runs with irqs off).
fn irqs_off() -> Option<crate::irqflags::IrqGuard> {
    crate::console::platform().map(|_| crate::irqflags::IrqGuard::new())
}
