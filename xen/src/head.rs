//! The image's head (Linux's `xen-head.S`): the Xen ELF notes that make it a 64-bit PV
//! kernel, and `xen_start`, where Xen's domain builder enters it.

use crate::abi;

core::arch::global_asm!(
    include_str!("xen_note.s"),
    r#"
    XEN_NOTE {guest_os}, .asciz "Upcall"
    XEN_NOTE {xen_version}, .asciz "xen-3.0"
    XEN_NOTE {loader}, .asciz "generic"
    XEN_NOTE {virt_base}, .quad 0
    XEN_NOTE {paddr_offset}, .quad 0
    XEN_NOTE {entry}, .quad xen_start
    XEN_NOTE {hypercall_page}, .quad hypercall_page
    XEN_NOTE {features}, .asciz "!writable_page_tables|pae_pgdir_above_4gb"
    XEN_NOTE {supported_features}, .long 1 << {dom0}

    .section .text.boot, "ax"
    .global xen_start
    .type xen_start, @function
/* 64-bit, ring 3, rsi = &start_info; Xen's builder zeroed .bss. */
xen_start:
    cld
    mov r12, rsi
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rip + xen_entry_tsc], rax
    lea rsp, [rip + xen_boot_stack_top]
    xor ebp, ebp
    mov rdi, r12
    call xen_pv_main
    ud2

    .section .data.xen_entry_tsc, "aw"
    .balign 8
xen_entry_tsc: .quad 0

    .section .bss.xen_boot_stack, "aw", @nobits
    .balign 4096
    .skip 64 * 1024
xen_boot_stack_top:
"#,
    guest_os = const abi::XEN_ELFNOTE_GUEST_OS,
    xen_version = const abi::XEN_ELFNOTE_XEN_VERSION,
    loader = const abi::XEN_ELFNOTE_LOADER,
    virt_base = const abi::XEN_ELFNOTE_VIRT_BASE,
    paddr_offset = const abi::XEN_ELFNOTE_PADDR_OFFSET,
    entry = const abi::XEN_ELFNOTE_ENTRY,
    hypercall_page = const abi::XEN_ELFNOTE_HYPERCALL_PAGE,
    features = const abi::XEN_ELFNOTE_FEATURES,
    supported_features = const abi::XEN_ELFNOTE_SUPPORTED_FEATURES,
    dom0 = const abi::XENFEAT_dom0,
);

unsafe extern "C" {
    static xen_entry_tsc: u64;
}

/// The TSC when Xen entered the image (read by `xen_start` before any Rust code).
pub fn entry_tsc() -> u64 {
    // SAFETY: written once by xen_start before any Rust code ran, never again.
    unsafe { xen_entry_tsc }
}
