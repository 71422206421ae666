//! The uhyve boot path (hermit-entry protocol, uhyve-interface v1) and uhyve's I/O.
//!
//! uhyve loads the ELF at its link address (0x100000, RAM starting at 0) and enters the
//! ELF entry `uhyve_start64` in long mode with its own identity map, GDT and a stack
//! below the image, `rdi` = `&RawBootInfo`. We switch to our boot stack, zero `.bss` and
//! continue in Rust with the same GDT/IDT/page-table code as the QEMU path. The console
//! and the exit are uhyve's port-I/O hypercalls (never COM1: uhyve does not emulate it);
//! the command line comes from `/chosen/bootargs` of uhyve's device tree.
//!
//! With `-c N` uhyve starts all N vCPUs at the same entry, `rsi` = the CPU's index: the
//! others wait in `uhyve_ap_wait` until [`smp::start_uhyve`] hands each its page
//! tables, stack and entry (no INIT/SIPI: they are already in long mode).

use hermit_entry::boot_info::RawBootInfo;
use libos::memory::Region;

use crate::{boot, bootargs, smp, uhyve_boot_info};

hermit_entry::define_entry_version!();

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .code64
    .global uhyve_start64
    .type uhyve_start64, @function
uhyve_start64:
    cld
    test esi, esi                     /* uhyve's cpu_id: 0 is the boot CPU */
    jnz uhyve_ap_wait
    mov r12, rdi                      /* &RawBootInfo */
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rip + kvm_entry_tsc], rax
    /* No .bss zeroing here: uhyve loads the image into freshly mmap'd (zeroed) guest
       memory, and every instruction before our page tables exist is expensive on a
       software KVM. (The PVH path zeroes: firmware may have used that memory.) */
    lea rsp, [rip + __boot_stack_top]
    xor ebp, ebp                      /* ends every backtrace */
    mov rdi, r12
    call kvm_uhyve_main
    ud2

    /* An application processor. uhyve starts every vCPU here at once, all with the
       same stack pointer, on its own page tables and GDT (in low memory, which the heap
       never gets). Touch no stack and no memory but the hand-off words until the boot
       CPU releases this CPU (smp::start_uhyve): then switch to our page tables and
       this CPU's own stack and call the entry with the CPU index, as the QEMU
       trampoline's 64-bit end does. */
uhyve_ap_wait:
    mov ebx, esi
1:  pause
    mov rax, [rip + KVM_UHYVE_AP_RELEASE]
    cmp rax, rbx
    jne 1b
    lea rcx, [rip + KVM_UHYVE_AP_PARAMS]
    mov rax, [rcx]                    /* cr3 */
    mov cr3, rax
    xor eax, eax
    mov fs, eax
    mov gs, eax                       /* before the GS base is set, never after */
    mov rsp, [rcx + 8]                /* stack_top */
    mov rdi, [rcx + 16]               /* cpu */
    mov rax, [rcx + 24]               /* entry */
    xor ebp, ebp
    call rax
    ud2
"#
);

/// uhyve-interface v1 port for writing a buffer to the console.
const SERIAL_BUFFER_WRITE: u16 = 0x880;
/// uhyve-interface v1 port for ending the VM.
const EXIT: u16 = 0x540;
/// Largest device tree read (uhyve's is 16 KiB).
const FDT_MAX: usize = 64 * 1024;

/// `SerialWriteBufferParams` of uhyve-interface v1.
#[repr(C, packed)]
struct SerialWriteBuffer {
    buf: u64,
    len: u64,
}

/// `ExitParams` of uhyve-interface v1.
#[repr(C, packed)]
struct ExitParams {
    arg: i32,
}

/// Issues a v1 hypercall: the guest-physical address of `params` goes out on `port`.
fn hypercall<T>(port: u16, params: &T) {
    // Identity-mapped kernel memory below 4 GiB: virtual == physical, fits in 32 bits.
    let addr = core::ptr::from_ref(params) as u64;
    debug_assert!(addr < 1 << 32, "hypercall parameters above 4 GiB");
    // SAFETY: uhyve reads `params` (a live, fully initialized value in RAM), and what it
    // points to, while the vCPU is stopped in the `out`; no memory of ours is written.
    // Not `nomem` (unlike `Port::write`): the compiler must have stored `params` and the
    // data behind it before the `out`, since uhyve reads them.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") addr as u32, options(nostack, preserves_flags));
    }
}

/// Writes console output through uhyve.
pub fn console_write(bytes: &[u8]) {
    let params = SerialWriteBuffer {
        buf: bytes.as_ptr() as u64,
        len: bytes.len() as u64,
    };
    hypercall(SERIAL_BUFFER_WRITE, &params);
}

/// Ends the VM; uhyve exits with `code & 0xff`.
pub fn exit(code: i32) -> ! {
    hypercall(EXIT, &ExitParams { arg: code });
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Entered from `uhyve_start64` on our boot stack.
///
/// Context: boot CPU, irqs off, long mode with uhyve's identity map.
#[unsafe(no_mangle)]
extern "C" fn kvm_uhyve_main(raw: *const u8) -> ! {
    boot::early_init(&boot::UHYVE);
    const { assert!(size_of::<RawBootInfo>() == uhyve_boot_info::LEN) };
    // SAFETY: `raw` is the `&RawBootInfo` uhyve passes in `rdi`: `LEN` bytes (checked
    // above) that uhyve wrote into guest memory before starting us, identity-mapped,
    // never written again; we only read them.
    let bytes = unsafe { core::slice::from_raw_parts(raw, uhyve_boot_info::LEN) };
    let info = uhyve_boot_info::parse(bytes).unwrap_or_else(|e| boot::fail(e));
    smp::uhyve_cpus_waiting(info.num_cpus);
    let ram = [Region {
        start: info.ram_start,
        end: info.ram_end,
    }];
    let cmdline = match info.device_tree {
        None => "",
        Some(addr) => {
            let header = boot::phys_slice(addr, 8);
            let size = bootargs::total_size(header)
                .unwrap_or_else(|| boot::fail(bootargs::Error::Malformed));
            let blob = boot::phys_slice(addr, size.min(FDT_MAX));
            let args = bootargs::bootargs(blob)
                .unwrap_or_else(|e| boot::fail(e))
                .unwrap_or("");
            boot::keep_cmdline(args.as_bytes())
        }
    };
    boot::finish(&ram, cmdline)
}
