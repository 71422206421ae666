/* The minimal Xen PV kernel for `cargo xtask bench xen-boot` (see xen_stub_elf.rs):
   print one line on the PV console ring, wait until xenconsoled drained it, power off.
   Intel syntax; braced names are Xen ABI constants xtask fills in from xen/src/abi.rs
   (Rust `global_asm!` operands). */

/* XEN_NOTE comes from xen/src/xen_note.s, assembled before this file. */

/* What libxenguest's loader requires of a PV kernel, and where to enter it. */
    XEN_NOTE {guest_os}, .asciz "xen-boot-stub"
    XEN_NOTE {xen_version}, .asciz "xen-3.0"
    XEN_NOTE {loader}, .asciz "generic"
    XEN_NOTE {virt_base}, .quad 0
    XEN_NOTE {paddr_offset}, .quad 0
    XEN_NOTE {entry}, .quad xen_start
    XEN_NOTE {hypercall_page_note}, .quad hypercall_page
    XEN_NOTE {features}, .asciz "!writable_page_tables|pae_pgdir_above_4gb"

    .section .text.entry, "ax"
/* 64-bit, ring 3 (PV), rsi = start_info (virtual); VIRT_BASE 0, so virtual =
   pseudo-physical. Hypercalls clobber rcx, r11 and the argument registers; rbx, r12
   and r13 survive. */
    .global xen_start
xen_start:
    cld
    mov esp, offset stack_top
    mov rbx, rsi                                    /* rbx = start_info */
    mov rax, qword ptr [rbx + {si_console_mfn}]     /* the console ring's mfn */
    movabs rcx, {m2p}
    mov rax, qword ptr [rcx + 8 * rax]              /* its pfn, from Xen's M2P table */
    shl rax, 12
    mov r12, rax                                    /* r12 = the ring (va = pfn * 4096) */
    mov r13d, dword ptr [r12 + {out_prod}]          /* r13d = our producer index */
    mov esi, offset message
    mov ecx, offset message_len
/* At boot the ring is empty and the message is shorter than it (xen_stub_elf.rs
   checks), so every byte has room without waiting for the backend. */
copy:
    movzx eax, byte ptr [rsi]
    mov edx, r13d
    and edx, {out_size} - 1
    mov byte ptr [r12 + rdx + {out}], al
    inc r13d
    inc rsi
    dec ecx
    jnz copy
    sfence                                          /* the bytes before the index */
    mov dword ptr [r12 + {out_prod}], r13d
    mov eax, dword ptr [rbx + {si_console_evtchn}]
    mov edi, offset port
    mov dword ptr [rdi], eax                        /* evtchn_send.port */
    mov esi, edi
    mov edi, {evtchnop_send}
    mov eax, offset hypercall_page + {stub_size} * {event_channel_op}
    call rax
/* Wait until xenconsoled has consumed everything (else the line dies with us). */
wait:
    mov eax, dword ptr [r12 + {out_cons}]
    cmp eax, r13d
    je drained
    mov edi, {schedop_yield}
    xor esi, esi
    mov eax, offset hypercall_page + {stub_size} * {sched_op}
    call rax
    jmp wait
drained:
    mov edi, offset reason
    mov dword ptr [rdi], {shutdown_poweroff}        /* sched_shutdown.reason */
    mov esi, edi
    mov edi, {schedop_shutdown}
    mov eax, offset hypercall_page + {stub_size} * {sched_op}
    call rax
hang:
    jmp hang                                        /* shutdown does not return */

/* Xen writes a 32-byte stub per hypercall number here (XEN_ELFNOTE_HYPERCALL_PAGE). */
    .section .hypercall_page, "ax"
    .balign 4096
hypercall_page:
    .fill 4096, 1, 0xcc

    .section .data.stub, "aw"
    .balign 4096
message:
    .ascii "xen-boot-stub: hello from a minimal PV kernel\n"
    .set message_len, . - message
    .balign 0x100
port:
    .long 0
reason:
    .long 0

    .section .bss.stack, "aw", @nobits
    .balign 4096
    .skip 4096
stack_top:
