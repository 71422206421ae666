//! Exception and interrupt entry stubs.
//!
//! 256 stubs (libos's `entry_stubs_asm!`) push a zero error code where the CPU pushes
//! none and the vector, then `trap_common` (libos's `entry_frame_asm!`) saves the
//! registers as a `libos::regs::Regs` frame and calls `kvm_trap`, which runs the entry
//! core; `iretq` returns. The stubs and `kvm_trap` are non-instrumentable
//! (`.noinstr.text`, checked by `cargo xtask check-noinstr`): only the handler dispatch
//! between `irqentry_enter` and `irqentry_exit` runs instrumented.

use libos::regs::Regs;
use libos::{entry, trap};

use crate::{apic, devirq};

core::arch::global_asm!(
    ".section .noinstr.text, \"ax\"",
    libos::entry_stubs_asm!("trap_stubs", "trap_common", ""),
    ".type trap_common, @function",
    "trap_common:",
    libos::entry_frame_asm!("kvm_trap"),
    "iretq",
);

unsafe extern "C" {
    static trap_stubs: u8;
}

/// The entry address of vector `vector`'s stub.
pub fn stub_address(vector: u8) -> u64 {
    (&raw const trap_stubs) as u64 + u64::from(vector) * libos::arch::ENTRY_STUB_STRIDE
}

/// Called by `trap_common` for every vector: the entry core around each handler.
///
/// Context: irqs off (interrupt gates), on the interrupted stack or an IST stack.
#[unsafe(no_mangle)]
#[inline(never)]
#[unsafe(link_section = ".noinstr.text")]
extern "C" fn kvm_trap(regs: &mut Regs) {
    if regs.vector == NMI && libos::smp::halt_requested() {
        // The halt-all IPI (another CPU panicked or failed): stop here, before the
        // entry core, whatever this CPU was doing (it may hold locks). The report is
        // another CPU's; this one only halts.
        entry::instrumentation(&mut || libos::smp::halt_this_cpu());
    }
    if regs.vector == NMI && crate::shootdown::on_nmi() {
        // A TLB shootdown requested with irqs off: flushed, nothing else to do.
        return;
    }
    let state = entry::irqentry_enter(regs);
    // The instrumentable part (`check-noinstr` allows exactly this call).
    dispatch(regs);
    entry::irqentry_exit(regs, state);
}

/// The handler of `regs.vector`, between the entry core's enter and exit. Never
/// inlined: it is the instrumentable region the trap function calls into.
///
/// Context: irqs off, entry state consistent (instrumentable).
#[inline(never)]
fn dispatch(regs: &mut Regs) {
    match regs.vector {
        trap::vector::INVALID_OPCODE if trap::is_probe(regs) => {
            entry::run_on_irqstack_cond(trap::probe, regs)
        }
        v if v < 32 => exception(regs),
        v if v == u64::from(apic::TIMER_VECTOR) => {
            apic::eoi();
            entry::run_irq_on_irqstack_cond(libos::time::timer_interrupt, regs);
        }
        v if devirq::owns(v) => entry::run_irq_on_irqstack_cond(devirq::dispatch, regs),
        v if v == u64::from(apic::RESCHEDULE_VECTOR) => {
            apic::eoi();
            entry::run_irq_on_irqstack_cond(libos::smp::reschedule_interrupt, regs);
        }
        v if v == u64::from(apic::CALL_FUNCTION_VECTOR) => {
            apic::eoi();
            entry::run_irq_on_irqstack_cond(libos::smp::call_function_interrupt, regs);
        }
        v if v == u64::from(apic::SPURIOUS_VECTOR) => {}
        _ => trap::unexpected_vector(regs),
    }
}

/// The NMI vector (the halt-all IPI arrives as one).
const NMI: u64 = 2;

/// A CPU exception: reported (fatal) on the stack it arrived on.
fn exception(regs: &mut Regs) {
    let stack = match regs.vector {
        trap::vector::DOUBLE_FAULT => "IST1 (double-fault)",
        2 => "IST2 (NMI)",
        18 => "IST3 (machine-check)",
        _ => "interrupted",
    };
    let fault_addr =
        (regs.vector == trap::vector::PAGE_FAULT).then(x86_64::registers::control::Cr2::read_raw);
    trap::exception(regs, fault_addr, stack);
}
