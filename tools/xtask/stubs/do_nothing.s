/* The do-nothing reference image for `cargo xtask bench boot` (see stub_elf.rs): both
   KVM VMMs boot it, and its first instruction ends the VM. Intel syntax; braced names are
   constants xtask fills in (Rust `global_asm!` operands). */

    .section .text.pvh, "ax"
    .code32
/* QEMU enters here through the PVH note: 32-bit protected mode, paging off. */
pvh_start32:
    mov al, 0
    out {debug_exit_port}, al          /* isa-debug-exit: QEMU exits with (0 << 1) | 1 */
1:  hlt
    jmp 1b

    .code64
    .balign 8
    .global uhyve_start64
/* uhyve enters the ELF entry in long mode. */
uhyve_start64:
    mov eax, offset exit_params
    mov dx, {uhyve_exit_port}
    out dx, eax                        /* uhyve's exit hypercall, status exit_params.arg */
2:  hlt
    jmp 2b

    .balign 4
exit_params:
    .long 0                            /* ExitParams.arg = 0 */

/* hermit-entry's version note: uhyve reads the first PT_NOTE. */
    .section .note.hermit, "a"
    .balign 4
    .long 7                            /* namesz "HERMIT\0" */
    .long 1                            /* descsz */
    .long {nt_hermit_entry_version}
    .asciz "HERMIT"
    .balign 4
    .byte {hermit_entry_version}
    .balign 4

/* The PVH entry point for QEMU's -kernel. */
    .section .note.Xen, "a"
    .balign 4
    .long 4                            /* namesz "Xen\0" */
    .long 4                            /* descsz */
    .long {xen_elfnote_phys32_entry}
    .asciz "Xen"
    .long pvh_start32
