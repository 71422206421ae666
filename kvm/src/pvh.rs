//! PVH entry: the ELF note QEMU looks for, and the 32-bit → long-mode trampoline.
//!
//! QEMU (`-kernel`, any machine type) enters `pvh_start32` in 32-bit protected mode,
//! paging off, with `ebx` = physical address of `hvm_start_info`. We record the TSC,
//! zero `.bss`, identity-map the first 4 GiB with 2 MiB pages (enough to read boot
//! data; `paging` replaces these tables), enable PAE + long mode, load a boot GDT and
//! jump to 64-bit code that calls `kvm_pvh_main(start_info_paddr)` on the boot stack.

core::arch::global_asm!(
    r#"
    .section .note.upcall.pvh, "a"
    .balign 4
    .long 4                      /* namesz: "Xen\0" */
    .long 4                      /* descsz */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cld
    mov esi, ebx                 /* esi = hvm_start_info (kept until the call) */
    rdtsc
    mov dword ptr [kvm_entry_tsc], eax
    mov dword ptr [kvm_entry_tsc + 4], edx

    /* Zero .bss (QEMU's loaders zero it too, but the firmware paths differ). Both
       ends are page-aligned, so whole 4-byte words: 4x fewer iterations than stosb
       (each iteration is an instruction under TCG). Stacks, boot_pd and the paging
       pool are in .noinit, which is written before it is read and not zeroed. */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd

    /* 2048 PD entries: 4 GiB of 2 MiB pages, present | writable | huge; every entry
       below 4 GiB, so each high half is 0. Eight entries per iteration: the loop is
       most of the trampoline's instructions. */
    mov edi, offset boot_pd
    mov eax, 0x83
    xor edx, edx
    mov ecx, 2048 / 8
2:
    .irp i, 0, 1, 2, 3, 4, 5, 6, 7
    mov dword ptr [edi + \i * 8], eax
    mov dword ptr [edi + \i * 8 + 4], edx
    add eax, 0x200000
    .endr
    add edi, 64
    dec ecx
    jnz 2b

    /* PDPT[0..4] -> the four PDs; PML4[0] -> PDPT. */
    mov edi, offset boot_pdpt
    mov eax, offset boot_pd + 3
    mov ecx, 4
3:  mov dword ptr [edi], eax
    add eax, 4096
    add edi, 8
    loop 3b
    mov dword ptr [boot_pml4], offset boot_pdpt + 3

    mov eax, offset boot_pml4
    mov cr3, eax
"#,
    enter_long_mode_asm!(),
    r#"
    lgdt [boot_gdtr]
    ljmp 0x08, offset pvh_start64

    .code64
    .type pvh_start64, @function
pvh_start64:
"#,
    flat_data_segments_asm!(),
    r#"
    lea rsp, [rip + __boot_stack_top]
    xor ebp, ebp                 /* ends every backtrace */
    mov edi, esi                 /* zero-extends: arg 0 = start info paddr */
    call kvm_pvh_main
    ud2

    .section .rodata.boot_gdt, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff     /* 0x10: data */
boot_gdtr:
    .word boot_gdtr - boot_gdt - 1
    .long boot_gdt

    .section .data.kvm_entry_tsc, "aw"
    .balign 8
    .global kvm_entry_tsc
kvm_entry_tsc:
    .quad 0

    /* The PML4 and PDPT must be zero but for the entries written above. */
    .section .bss.boot_tables, "aw", @nobits
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096

    /* Every entry is written above. */
    .section .bss.noinit.boot_pd, "aw", @nobits
    .balign 4096
boot_pd:   .skip 4 * 4096

    /* The boot stack, with an unmapped guard page below it (see `paging`). Not zeroed
       (.noinit): a stack is written before it is read. */
    .section .bss.noinit.boot_stack, "aw", @nobits
    .balign 4096
    .global __boot_stack_guard
__boot_stack_guard: .skip 4096
    .skip 64 * 1024
    .global __boot_stack_top
__boot_stack_top:
    .code64
    .previous
"#
);

use libos::memory::Region;

use crate::boot;
use crate::start_info::{self, HEADER_LEN, MEMMAP_ENTRY_LEN};

/// Most RAM ranges taken from the memory map.
const MAX_RAM_REGIONS: usize = 16;

unsafe extern "C" {
    /// The TSC at the image's first instruction (either entry), written by the trampoline.
    pub static kvm_entry_tsc: u64;
    /// The page below the boot stack; `paging` leaves it unmapped.
    pub static __boot_stack_guard: u8;
}

/// Entered from `pvh_start64` on the boot stack with the `hvm_start_info` address.
///
/// Context: boot CPU, irqs off, long mode with the trampoline's 4 GiB identity map.
#[unsafe(no_mangle)]
extern "C" fn kvm_pvh_main(start_info_paddr: u64) -> ! {
    crate::serial::init();
    boot::early_init(&boot::QEMU);
    let info = start_info::parse(boot::phys_slice(start_info_paddr, HEADER_LEN))
        .unwrap_or_else(|e| boot::fail(e));
    // The ACPI tables may lie in RAM the heap will reuse: read the CPU list now.
    crate::smp::discover(info.rsdp_paddr);
    crate::poweroff::discover(info.rsdp_paddr);
    let map_len = info.memmap_entries as usize * MEMMAP_ENTRY_LEN;
    let mut ram = [Region::default(); MAX_RAM_REGIONS];
    let n = start_info::ram_regions(boot::phys_slice(info.memmap_paddr, map_len), &mut ram)
        .unwrap_or_else(|e| boot::fail(e));
    let cmdline = match info.cmdline_paddr {
        0 => "",
        pa => {
            let avail = start_info::cmdline_window(pa, boot::cmdline_max())
                .unwrap_or_else(|e| boot::fail(e));
            boot::keep_cmdline(boot::phys_slice(pa, avail))
        }
    };
    // QEMU's microvm announces virtio-mmio devices as trailing command-line words.
    let cmdline = boot::take_mmio_devices(cmdline);
    boot::finish(&ram[..n], cmdline)
}
