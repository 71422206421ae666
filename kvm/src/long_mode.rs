//! The assembly both 32-bit entries share (the PVH boot entry in `pvh` and the APs'
//! trampoline in `trampoline`): the switch into long mode, and the flat data segments
//! loaded right after it. Each macro expands to an Intel-syntax string literal (Rust's
//! default, as in every asm of the kernel crates) that the entries splice into their
//! `global_asm!` templates.

/// From 32-bit protected mode with paging off and CR3 holding a PML4: CR4.PAE,
/// EFER.LME, then CR0.PG | CR0.WP | CR0.PE, which activates long mode (compatibility
/// mode until a far jump to a 64-bit code segment). Clobbers eax, ecx, edx.
macro_rules! enter_long_mode_asm {
    () => {
        r#"
    mov eax, cr4
    or eax, 0x20                 /* CR4.PAE */
    mov cr4, eax
    mov ecx, 0xC0000080          /* EFER */
    rdmsr
    or eax, 0x100                /* EFER.LME */
    wrmsr
    mov eax, cr0
    or eax, 0x80010001           /* CR0.PG | CR0.WP | CR0.PE */
    mov cr0, eax
"#
    };
}

/// In 64-bit code: ds, es and ss = selector 0x10 (flat data in both GDTs); fs and gs
/// null (before any GS base is set, never after: loading gs clears the base).
/// Clobbers eax.
macro_rules! flat_data_segments_asm {
    () => {
        r#"
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    xor eax, eax
    mov fs, eax
    mov gs, eax
"#
    };
}
