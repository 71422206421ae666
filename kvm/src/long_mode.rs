//! The assembly both 32-bit entries share (the PVH boot entry in `pvh` and the APs'
//! trampoline in `trampoline`): the switch into long mode, and the flat data segments
//! loaded right after it. Each macro expands to an AT&T-syntax string literal that the
//! entries splice into their `global_asm!` templates.

/// From 32-bit protected mode with paging off and CR3 holding a PML4: CR4.PAE,
/// EFER.LME, then CR0.PG | CR0.WP | CR0.PE, which activates long mode (compatibility
/// mode until a far jump to a 64-bit code segment). Clobbers eax, ecx, edx.
macro_rules! enter_long_mode_asm {
    () => {
        r#"
    mov %cr4, %eax
    or $0x20, %eax               /* CR4.PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx        /* EFER */
    rdmsr
    or $0x100, %eax              /* EFER.LME */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax         /* CR0.PG | CR0.WP | CR0.PE */
    mov %eax, %cr0
"#
    };
}

/// In 64-bit code: ds, es and ss = selector 0x10 (flat data in both GDTs); fs and gs
/// null (before any GS base is set, never after: loading gs clears the base).
/// Clobbers eax.
macro_rules! flat_data_segments_asm {
    () => {
        r#"
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
"#
    };
}
