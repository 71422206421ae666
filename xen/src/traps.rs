//! The trap table: CPU exceptions enter the entry core.
//!
//! Xen bounces an exception to the handler in the trap table with `rcx` and `r11`
//! pushed on top of a hardware-like frame (error code where the CPU has one, rip, cs,
//! rflags, rsp, ss). The stubs pop those two, after which the frame is the one the KVM
//! backend sees, so libos's shared stub assembly builds the same `Regs`. Entries mask
//! events (the trap table's "interrupt gate" flag), and the saved rflags.IF says
//! whether they were unmasked in the interrupted code.

use libos::regs::Regs;
use libos::{entry, trap};

use crate::abi::{self, trap_info};

use crate::hypercall::hypercall;
use crate::{events, vcpu};

core::arch::global_asm!(
    ".section .noinstr.text, \"ax\"",
    libos::entry_stubs_asm!("xen_trap_stubs", "xen_trap_common", "pop rcx\n pop r11"),
    ".global xen_trap_common",
    ".type xen_trap_common, @function",
    "xen_trap_common:",
    libos::entry_frame_asm!("xen_trap"),
    // Return through HYPERVISOR_iret (the stack now holds the iret frame; the hypercall
    // page's iret stub pushes rcx, r11 and rax above the `flags` word pushed here). Xen
    // restores the event mask from the frame's RFLAGS.IF as part of the return, so an
    // event pending by then is delivered as a fresh upcall at the interrupted
    // instruction. Unmasking first and then `iretq` (as Mini-OS does without its
    // critical-region fix-up) would let each event landing between the two nest a
    // whole entry on this frame. The frame's CS has RPL 0, which Xen takes as a return
    // to guest kernel mode (RPL 3 would mean guest user mode, which we have none of:
    // clear it, whatever Xen's bounce frame held). flags = 0: not a return from a
    // syscall.
    "and byte ptr [rsp + 8], 0xfc",
    "push 0",
    "jmp hypercall_page + {iret} * {stub_size}",
    iret = const abi::__HYPERVISOR_iret,
    stub_size = const abi::HYPERCALL_STUB_SIZE,
);

unsafe extern "C" {
    static xen_trap_stubs: u8;
}

/// Exceptions 0..=19 go through the table; 20+ are not raised in a PV guest.
pub const EXCEPTIONS: usize = 20;

/// The trap table (`struct trap_info` per exception, then an all-zero terminator):
/// installed by [`init`] on the boot vCPU, part of a secondary vCPU's initial context.
pub fn table() -> [trap_info; EXCEPTIONS + 1] {
    let base = (&raw const xen_trap_stubs) as u64;
    let mut table = [trap_info {
        vector: 0,
        flags: 0,
        cs: 0,
        address: 0,
    }; EXCEPTIONS + 1];
    for (v, t) in table.iter_mut().take(EXCEPTIONS).enumerate() {
        *t = trap_info {
            vector: v as u8,
            flags: abi::TI_MASK_EVENTS,
            cs: abi::FLAT_KERNEL_CS as u16,
            address: base + v as u64 * libos::arch::ENTRY_STUB_STRIDE,
        };
    }
    table
}

/// Installs the trap table on this vCPU.
///
/// Context: boot, events masked.
pub fn init() -> Result<(), i64> {
    let table = table();
    // SAFETY: set_trap_table reads the table (copied by Xen) until the zero entry.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_set_trap_table,
            table.as_ptr() as u64,
            0,
            0,
            0,
            0,
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// Called by `xen_trap_common` for every exception: the entry core around each handler.
///
/// Context: events masked (trap table flag), on the interrupted stack.
/// Non-instrumentable (`.noinstr.text`): only the handler dispatch between
/// `irqentry_enter` and `irqentry_exit` runs instrumented.
#[unsafe(no_mangle)]
#[inline(never)]
#[unsafe(link_section = ".noinstr.text")]
extern "C" fn xen_trap(regs: &mut Regs) {
    let state = entry::irqentry_enter(regs);
    // The instrumentable part (`check-noinstr` allows exactly this call).
    dispatch(regs);
    // The return (HYPERVISOR_iret in `xen_trap_common`) restores the event mask.
    entry::irqentry_exit(regs, state);
}

/// The handler of `regs.vector`, between the entry core's enter and exit. Never
/// inlined: it is the instrumentable region the trap function calls into.
///
/// Context: events masked, entry state consistent (instrumentable).
#[inline(never)]
fn dispatch(regs: &mut Regs) {
    match regs.vector {
        events::UPCALL_VECTOR => entry::run_irq_on_irqstack_cond(events::upcall, regs),
        events::FAILSAFE_VECTOR => trap::unexpected_vector(regs),
        trap::vector::INVALID_OPCODE if trap::is_probe(regs) => {
            entry::run_on_irqstack_cond(trap::probe, regs)
        }
        v => {
            let fault_addr = (v == trap::vector::PAGE_FAULT).then(vcpu::fault_address);
            trap::exception(regs, fault_addr, "interrupted");
        }
    }
}
