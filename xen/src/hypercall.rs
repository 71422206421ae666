//! Hypercalls through the hypercall page, with the x86-64 PV register ABI.
//!
//! `call hypercall_page + 32 * op` with arguments in rdi, rsi, rdx, r10, r8 and the
//! result in rax; Xen clobbers rcx and r11 (and may clobber the argument registers).
//! xen-sys's own `hypercall_N` helpers get this wrong (argument 5 in r9, no rcx/r11
//! clobbers), so only its constants and types are used.

use crate::abi;

core::arch::global_asm!(
    r#"
    .section .text.hypercall_page, "ax"
    .balign 4096
    .global hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc      /* filled in by Xen (XEN_ELFNOTE_HYPERCALL_PAGE) */
"#
);

unsafe extern "C" {
    static hypercall_page: u8;
}

/// Issues hypercall `op` with up to five arguments; returns Xen's result (negative
/// errno on failure).
///
/// # Safety
/// The arguments must be valid for `op` as Xen's ABI defines it; pointers must point to
/// memory Xen may read or write as that hypercall does.
pub unsafe fn hypercall(op: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let entry = (&raw const hypercall_page) as u64 + u64::from(op * abi::HYPERCALL_STUB_SIZE);
    let ret: i64;
    // SAFETY: `entry` is Xen's stub for `op` in the hypercall page (32 bytes each); the
    // caller vouches for the arguments. Not `nomem`: Xen reads/writes through them.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// `HYPERVISOR_set_segment_base(SEGBASE_GS_KERNEL, base)`: the GS base in (PV) kernel
/// mode, where the guest lives; returns Xen's result (0 on success).
pub fn set_gs_kernel_base(base: u64) -> i64 {
    // SAFETY: plain values; Xen checks that `base` is a canonical address.
    unsafe {
        hypercall(
            abi::__HYPERVISOR_set_segment_base,
            u64::from(abi::SEGBASE_GS_KERNEL),
            base,
            0,
            0,
            0,
        )
    }
}

/// Asks Xen to shut the domain down with `reason`; returns only if Xen refused.
pub fn shutdown(reason: u32) -> i64 {
    let arg = abi::sched_shutdown { reason };
    // SAFETY: SCHEDOP_shutdown takes a pointer to `struct sched_shutdown`.
    unsafe {
        hypercall(
            abi::__HYPERVISOR_sched_op,
            u64::from(abi::SCHEDOP_shutdown),
            (&raw const arg) as u64,
            0,
            0,
            0,
        )
    }
}

/// Grants this (privileged) domain's kernel I/O-port access (`PHYSDEVOP_set_iopl`:
/// the kernel is ring 1 in Xen's eyes); false if Xen refused.
pub fn set_iopl(iopl: u32) -> bool {
    let arg = abi::physdev_set_iopl { iopl };
    // SAFETY: PHYSDEVOP_set_iopl takes a pointer to `struct physdev_set_iopl`.
    unsafe {
        hypercall(
            abi::__HYPERVISOR_physdev_op,
            u64::from(abi::PHYSDEVOP_set_iopl),
            (&raw const arg) as u64,
            0,
            0,
            0,
        ) == 0
    }
}

/// `update_va_mapping(va, pte, UVMF_INVLPG)`: sets the PTE mapping `va` and flushes it
/// from this vCPU's TLB.
pub fn update_va_mapping(va: u64, pte: u64) -> i64 {
    // SAFETY: plain values; Xen validates the PTE (frame ownership, type).
    unsafe {
        hypercall(
            abi::__HYPERVISOR_update_va_mapping,
            va,
            pte,
            abi::UVMF_INVLPG,
            0,
            0,
        )
    }
}

/// [`update_va_mapping`], flushing the entry from every vCPU's TLB.
pub fn update_va_mapping_all(va: u64, pte: u64) -> i64 {
    // SAFETY: plain values; Xen validates the PTE (frame ownership, type).
    unsafe {
        hypercall(
            abi::__HYPERVISOR_update_va_mapping,
            va,
            pte,
            abi::UVMF_INVLPG | abi::UVMF_ALL,
            0,
            0,
        )
    }
}
