//! The shared-info page: Xen's per-domain page (event-channel pending and mask bits, the
//! first vCPUs' `vcpu_info`, wall clock), mapped over a page-aligned placeholder in the
//! image at boot.

use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use crate::abi::shared_info;
use crate::hypercall;

/// A page of our image remapped onto Xen's shared-info frame.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);
/// The mapped shared info; null until boot maps it.
static SHARED_INFO: AtomicPtr<shared_info> = AtomicPtr::new(core::ptr::null_mut());

/// The mapped shared-info page.
pub fn get() -> *mut shared_info {
    let si = SHARED_INFO.load(Relaxed);
    assert!(!si.is_null(), "shared info used before boot mapped it");
    si
}

/// Maps the shared-info frame at machine address `maddr` over our placeholder; on
/// failure, returns `update_va_mapping`'s result.
///
/// Context: boot, once.
pub fn map(maddr: u64) -> Result<(), i64> {
    let va = (&raw mut SHARED_INFO_PAGE) as u64;
    let rc = hypercall::update_va_mapping(va, (maddr & !0xfff) | crate::memory::PTE_KERNEL_RW);
    if rc != 0 {
        return Err(rc);
    }
    SHARED_INFO.store(va as *mut shared_info, Relaxed);
    Ok(())
}
