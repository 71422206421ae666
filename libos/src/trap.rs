//! CPU exceptions, as every backend reports them.
//!
//! A backend's exception stub saves a [`Regs`] frame and calls [`exception`]. The probe
//! trap ([`probe`]) is counted and resumed; every other exception prints the vector,
//! error code, fault address, a register dump and the interrupted code's backtrace,
//! then ends the image with [`EXCEPTION_EXIT_CODE`].

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::console;
use crate::regs::Regs;

/// The exit status of an image ended by a CPU exception.
pub const EXCEPTION_EXIT_CODE: i32 = 102;

/// x86 exception vectors libos treats specially.
pub mod vector {
    /// Invalid opcode (`ud2`; also the resumable probe trap).
    pub const INVALID_OPCODE: u64 = 6;
    /// Double fault (runs on its own IST stack).
    pub const DOUBLE_FAULT: u64 = 8;
    /// Page fault (the fault address is in CR2).
    pub const PAGE_FAULT: u64 = 14;
}

static PROBES: AtomicU64 = AtomicU64::new(0);
/// irq-stack nesting depth and on-irq-stack flag seen by the last probe handler.
static LAST_PROBE_NESTING: AtomicU64 = AtomicU64::new(0);
static LAST_PROBE_ON_IRQ_STACK: AtomicBool = AtomicBool::new(false);

/// How many probe traps ([`crate::arch::probe_trap`]) were taken and resumed.
pub fn probes() -> u64 {
    PROBES.load(Ordering::SeqCst)
}

/// (irq-stack nesting depth, ran on the irq stack) as seen by the last probe handler.
pub fn last_probe_context() -> (u64, bool) {
    (
        LAST_PROBE_NESTING.load(Ordering::SeqCst),
        LAST_PROBE_ON_IRQ_STACK.load(Ordering::SeqCst),
    )
}

/// Whether an invalid-opcode exception is the probe trap (and so resumable).
pub fn is_probe(regs: &Regs) -> bool {
    regs.vector == vector::INVALID_OPCODE && regs.rip == crate::arch::probe_trap_address()
}

/// The probe handler: counts and steps over the `ud2`. Backends run it through
/// `entry::run_on_irqstack_cond`, which makes it a probe of the irq-stack logic.
///
/// Context: irqs off, on the irq stack.
pub extern "C" fn probe(regs: &mut Regs) {
    let depth = crate::percpu::this_cpu().irq_nesting.load(Ordering::SeqCst);
    LAST_PROBE_NESTING.store(u64::from(depth), Ordering::SeqCst);
    // The stack pointer, not the frame pointer: a leaf like this one may have no frame.
    let sp = crate::arch::stack_pointer();
    LAST_PROBE_ON_IRQ_STACK.store(crate::entry::on_irq_stack(sp), Ordering::SeqCst);
    PROBES.fetch_add(1, Ordering::SeqCst);
    regs.rip += 2; // the length of `ud2`
}

/// An interrupt vector nobody handles: reported like a fatal exception.
pub fn unexpected_vector(regs: &mut Regs) -> ! {
    exception(regs, None, "interrupted")
}

/// Mnemonic and description of an exception vector.
pub fn describe(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection fault"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point error"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        32..=255 => ("IRQ", "unexpected interrupt vector"),
        _ => ("#??", "reserved vector"),
    }
}

/// Decodes a page-fault error code into words.
fn page_fault_reason(code: u64) -> [&'static str; 3] {
    [
        if code & 1 != 0 {
            "protection violation"
        } else {
            "not present"
        },
        if code & 2 != 0 {
            "write"
        } else if code & 16 != 0 {
            "instruction fetch"
        } else {
            "read"
        },
        if code & 4 != 0 {
            "user mode"
        } else {
            "kernel mode"
        },
    ]
}

/// Handles a CPU exception.
///
/// `fault_addr` is CR2 (or Xen's copy of it) for a page fault; `stack` names the stack
/// the handler runs on (e.g. `"IST1"`), shown in the report.
///
/// Context: irqs off, on the exception stack; never returns.
pub fn exception(regs: &mut Regs, fault_addr: Option<u64>, stack: &str) -> ! {
    let mut out = console::emergency_writer();
    if crate::panic::is_panicking() {
        let _ = writeln!(
            out,
            "\nexception {} while panicking; giving up",
            regs.vector
        );
        crate::panic::exit(EXCEPTION_EXIT_CODE);
    }
    // Stop the other CPUs: the report prints once and nothing runs on.
    crate::smp::halt_others();
    report(&mut out, regs, fault_addr, stack);
    crate::panic::exit(EXCEPTION_EXIT_CODE)
}

fn report(out: &mut dyn Write, regs: &Regs, fault_addr: Option<u64>, stack: &str) {
    let (mnemonic, what) = describe(regs.vector);
    let _ = writeln!(
        out,
        "\nCPU exception {} ({mnemonic} {what}), error code {:#x}, handled on the {stack} stack",
        regs.vector, regs.error_code
    );
    if regs.vector == vector::PAGE_FAULT {
        let [p, rw, mode] = page_fault_reason(regs.error_code);
        let addr = fault_addr.unwrap_or(0);
        let _ = writeln!(out, "  cr2={addr:#018x} ({p}, {rw}, {mode})");
    }
    let _ = write!(out, "{regs}");
    let _ = writeln!(out, "  rip {:#018x}", regs.rip);
    crate::backtrace::print_from(out, regs.rbp);
}
