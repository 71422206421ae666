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
//! in it is written as `PADDR + (label - ap_trampoline_start)`, named once by a `.set`
//! at the end (Intel syntax takes no difference of labels in an operand).

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
    mov ax, cs
    mov ds, ax
    lgdtd [.Lap_gdtr_off]        /* the 32-bit form: the GDT base is a full 32 bits */
    mov eax, cr0
    or eax, 1                    /* CR0.PE */
    mov cr0, eax
    /* A far jump with a 16-bit offset (Intel syntax has no 32-bit-offset form in 16-bit
       code; AT&T's ljmpl was the same jump with a 0x66 prefix): the target, PADDR plus
       a few bytes, is below 64 KiB, which the Rust side asserts. */
    ljmp 0x08, offset .Lap_prot32_at

    .code32
ap_prot32:
    mov ax, 0x10
    mov ds, eax                  /* (the selector is ax; no 0x66 prefix) */
    mov es, eax
    mov ss, eax
    mov ebx, offset .Lap_params_at
    mov eax, dword ptr [ebx]     /* params.cr3 */
    mov cr3, eax
"#,
    enter_long_mode_asm!(),
    r#"
    ljmp 0x18, offset .Lap_long_at

    .code64
ap_long:
"#,
    flat_data_segments_asm!(),
    r#"
    mov ebx, offset .Lap_params_at
    mov rsp, qword ptr [rbx + 8]  /* params.stack_top */
    mov rdi, qword ptr [rbx + 16] /* params.cpu */
    mov rax, qword ptr [rbx + 24] /* params.entry */
    xor ebp, ebp
    call rax
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

    /* Offsets and run-time addresses of the trampoline's labels. */
    .set .Lap_gdtr_off, ap_gdtr - ap_trampoline_start
    .set .Lap_prot32_at, {base} + (ap_prot32 - ap_trampoline_start)
    .set .Lap_long_at, {base} + (ap_long - ap_trampoline_start)
    .set .Lap_params_at, {base} + (ap_params - ap_trampoline_start)
"#,
    base = const PADDR,
);

// The 16-bit far jump into `ap_prot32` reaches offsets below 64 KiB only.
const _: () = assert!(PADDR + 4096 <= 0x1_0000);

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
