//! Exception and interrupt entry stubs.
//!
//! 256 stubs, 16 bytes apart starting at `trap_stubs`: each pushes a zero error code
//! (where the CPU does not push one) and its vector, then jumps to `trap_common`, which
//! saves the registers as a `libos::regs::Regs` frame, pushes a fake frame record
//! (interrupted rbp, rip) so backtraces continue into the interrupted code, and calls
//! `kvm_trap`.

use libos::regs::Regs;
use libos::{entry, trap};

use crate::apic;

/// Bytes between consecutive stubs.
const STUB_STRIDE: u64 = 16;

core::arch::global_asm!(
    r#"
    .section .text.trap_stubs, "ax"
    .balign 16
    .global trap_stubs
    .type trap_stubs, @function
trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    /* Vectors with a CPU-pushed error code: 8, 10-14, 17, 21, 29, 30. */
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

    .type trap_common, @function
trap_common:
    /* Alignment: the CPU aligns rsp to 16 before its 5-word frame; with error code and
       vector that is 7 words, the 15 registers make 22 and the fake frame 24, so rsp is
       16-byte aligned at the call as the ABI wants. */
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi               /* &mut Regs */
    pushq 136(%rdi)              /* fake frame: interrupted rip ... */
    pushq 64(%rdi)               /* ... and rbp */
    mov %rsp, %rbp
    cld
    call kvm_trap
    add $16, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp                /* vector, error code */
    iretq
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: u8;
}

/// The entry address of vector `vector`'s stub.
pub fn stub_address(vector: u8) -> u64 {
    (&raw const trap_stubs) as u64 + u64::from(vector) * STUB_STRIDE
}

/// Called by `trap_common` for every vector: the entry core around each handler.
///
/// Context: irqs off (interrupt gates), on the interrupted stack or an IST stack.
#[unsafe(no_mangle)]
extern "C" fn kvm_trap(regs: &mut Regs) {
    let state = entry::irqentry_enter(regs);
    match regs.vector {
        trap::vector::INVALID_OPCODE if trap::is_probe(regs) => {
            entry::run_on_irqstack_cond(trap::probe, regs)
        }
        v if v < 32 => exception(regs),
        v if v == u64::from(apic::TIMER_VECTOR) => {
            apic::eoi();
            entry::run_on_irqstack_cond(libos::time::timer_interrupt, regs);
        }
        v if v == u64::from(apic::SPURIOUS_VECTOR) => {}
        _ => trap::unexpected_vector(regs),
    }
    entry::irqentry_exit(regs, state);
}

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
