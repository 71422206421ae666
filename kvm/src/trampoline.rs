//! The application processors' real-mode entry: 16 → 32 → 64-bit, onto our tables.
//!
//! A SIPI starts an AP in real mode at `vector << 12`, so this code is assembled into
//! `.rodata` and copied to [`PADDR`] (below 1 MiB, page-aligned, in low memory the heap
//! never gets) before each start. It loads its own small GDT (32-bit code, data, 64-bit
//! code), enables PAE and long mode with the BSP's page tables (`cr3` from [`Params`];
//! they identity-map the trampoline page), and calls `entry(cpu)` on `stack` with
//! `rbp = 0` so backtraces end there. The AP then loads its own GDT/TSS and the IDT.
//!
//! The code runs at a different address than it was linked at: every absolute address
//! in it is written as `PADDR + (label - ap_trampoline_start)`.

use core::sync::atomic::{Ordering, fence};

/// Where the trampoline runs (SIPI vector 0x08).
pub const PADDR: u64 = 0x8000;

/// What the BSP hands the AP it starts, at the end of the trampoline copy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Physical address of the PML4 (below 4 GiB: it is in the image).
    pub cr3: u64,
    /// Initial stack pointer.
    pub stack_top: u64,
    /// The CPU's libos index.
    pub cpu: u64,
    /// `extern "C" fn(cpu: u64) -> !` to call in long mode.
    pub entry: u64,
}

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax                  /* CR0.PE */
    mov %eax, %cr0
    ljmpl $0x08, ${base} + (ap_prot32 - ap_trampoline_start)

    .code32
ap_prot32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov ${base} + (ap_params - ap_trampoline_start), %ebx
    mov (%ebx), %eax             /* params.cr3 */
    mov %eax, %cr3
"#,
    enter_long_mode_asm!(),
    r#"
    ljmp $0x18, ${base} + (ap_long - ap_trampoline_start)

    .code64
ap_long:
"#,
    flat_data_segments_asm!(),
    r#"
    mov ${base} + (ap_params - ap_trampoline_start), %ebx
    mov 8(%rbx), %rsp            /* params.stack_top */
    mov 16(%rbx), %rdi           /* params.cpu */
    mov 24(%rbx), %rax           /* params.entry */
    xor %ebp, %ebp
    call *%rax
    ud2

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff     /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff     /* 0x10: data */
    .quad 0x00af9a000000ffff     /* 0x18: 64-bit code */
ap_gdtr:
    .word ap_gdtr - ap_gdt - 1
    .long {base} + (ap_gdt - ap_trampoline_start)
    .balign 8
    .global ap_params
ap_params:
    .skip 32
    .global ap_trampoline_end
ap_trampoline_end:
    .code64
    .previous
"#,
    base = const PADDR,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_params: u8;
    static ap_trampoline_end: u8;
}

/// Copies the trampoline to [`PADDR`] with `params` in it.
///
/// # Safety
/// The page at [`PADDR`] must be identity-mapped low memory that nothing else uses, and
/// no AP may be executing from it (the BSP starts APs one at a time and waits for each
/// to leave the trampoline).
pub unsafe fn install(params: Params) {
    let start = &raw const ap_trampoline_start;
    let len = (&raw const ap_trampoline_end) as usize - start as usize;
    let params_off = (&raw const ap_params) as usize - start as usize;
    // SAFETY: (caller) the destination page is ours; the source is the image's
    // .rodata; `len` < 4 KiB (the code above), so the copy stays within the page.
    unsafe {
        core::ptr::copy_nonoverlapping(start, PADDR as *mut u8, len);
        core::ptr::write_volatile((PADDR as usize + params_off) as *mut Params, params);
    }
    // The AP reads the copy after the SIPI (an uncached-order IPI write): make the
    // stores globally visible first.
    fence(Ordering::SeqCst);
}
