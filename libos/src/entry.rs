//! The entry core: the path every interrupt, exception and (on Xen) event upcall takes.
//!
//! ```text
//! backend stub (asm)                 saves a `Regs` frame
//!   state = irqentry_enter(regs)     irq-state tracing; notes whether idle was interrupted
//!   run_on_irqstack_cond(f, regs)    handler on the per-CPU irq stack (unless already there)
//!   irqentry_exit(regs, state)       exit work: bottom halves, notify callbacks, preemption
//! backend stub                       restores registers and returns
//! ```
//!
//! `irqentry_enter` and `irqentry_exit` run before the entry state is consistent and
//! after it is torn down, so they live in `.noinstr.text` and must not log, trace or
//! allocate; the few lines that may are inside [`instrumentation`] calls, and
//! `cargo xtask check-noinstr` enforces the rule on the built image.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::irqflags::{self, IrqsOff};
use crate::percpu::this_cpu;
use crate::regs::Regs;
use crate::{preempt, softirq};

/// RFLAGS.IF in a saved frame: the interrupted context had interrupts enabled. (Xen PV
/// reflects the event mask into the same bit of the frame it builds.)
pub const RFLAGS_IF: u64 = 1 << 9;

/// Bytes of the per-CPU irq stack.
pub const IRQ_STACK_SIZE: usize = 32 * 1024;

/// What `irqentry_enter` found; must be passed to [`irqentry_exit`] exactly once.
#[must_use = "pass this to irqentry_exit exactly once"]
#[derive(Debug)]
pub struct IrqState {
    /// The entry interrupted the idle task inside `Platform::idle_wait` (Linux's
    /// `exit_rcu`): the exit must not reschedule, idle does that itself.
    interrupted_idle: bool,
    /// The interrupted context had interrupts enabled (so it was preemptible code).
    irqs_were_on: bool,
    _not_send: PhantomData<*const ()>,
}

impl IrqState {
    /// Whether the entry interrupted idle.
    pub fn interrupted_idle(&self) -> bool {
        self.interrupted_idle
    }
}

/// Runs `f` where logging and tracing are allowed inside a non-instrumentable function
/// (Linux's `instrumentation_begin()/end()` bracket).
///
/// Deliberately not generic: a generic function can be inlined into its caller even
/// with `#[inline(never)]` hints lost through closures and LTO, which would pull the
/// instrumented code into `.noinstr.text`; a plain function taking `&mut dyn FnMut`
/// always stays a call, which `cargo xtask check-noinstr` allow-lists.
#[inline(never)]
pub fn instrumentation(f: &mut dyn FnMut()) {
    f();
}

/// Allocates this CPU's irq stack (with a guard page where the platform supports it).
pub(crate) fn init() {
    let stack = crate::sched::Stack::new(IRQ_STACK_SIZE);
    let cpu = this_cpu();
    cpu.irq_stack_bottom.store(stack.bottom(), Relaxed);
    cpu.irq_stack_top.store(stack.top(), Relaxed);
    // The irq stack lives as long as the CPU.
    core::mem::forget(stack);
}

/// Counterpart to [`irqentry_exit`]; first thing a backend stub calls.
///
/// Context: irqs off (the CPU or Xen masked them), on the interrupted stack or an IST
/// stack; returns with irqs off.
#[inline(never)]
#[unsafe(link_section = ".noinstr.text")]
pub fn irqentry_enter(regs: &Regs) -> IrqState {
    let cpu = this_cpu();
    let irqs_were_on = regs.rflags & RFLAGS_IF != 0;
    let interrupted_idle = cpu.in_idle.load(Relaxed);
    if irqflags::TRACING {
        // The interrupted code ran with irqs on: the tracing must have been told, or some
        // path enabled them behind its back (the missing trace_hardirqs_on of the preemptible
        // hypercall bug in Thomas Gleixner, "Re: [RFC PATCH 1/5] entry: Pass pt_regs to
        // irqentry_exit_cond_resched()", LKML, 2022-08-09).
        instrumentation(&mut || {
            irqflags::check_consistent(irqs_were_on, "irqentry_enter", regs.rip)
        });
    }
    irqflags::trace_hardirqs_off();
    cpu.interrupts.fetch_add(1, Relaxed);
    if crate::sched::stack_check::enabled() {
        // (Only where the platform has no IST to report an overflow with: Xen PV.)
        instrumentation(&mut || crate::sched::stack_check::check(cpu.id() as usize, regs.rsp));
    }
    #[cfg(feature = "noinstr-violation-demo")]
    noinstr_violation_demo();
    IrqState {
        interrupted_idle,
        irqs_were_on,
        _not_send: PhantomData,
    }
}

/// Counterpart to [`irqentry_enter`]: does the exit work and, under the model in force,
/// preemption, then reports the irq state the return will restore.
///
/// The bottom halves this entry raised have run by now, on the irq stack, at the end of
/// the handler ([`run_irq_on_irqstack_cond`], Linux's `irq_exit`), so a task they woke
/// is known before anything here decides whether to reschedule.
///
/// Context: irqs off, on the interrupted stack (handlers are done), just before the
/// backend stub returns; may switch tasks (the stub resumes later, in this task).
#[inline(never)]
#[unsafe(link_section = ".noinstr.text")]
pub fn irqentry_exit(regs: &mut Regs, state: IrqState) {
    let _ = regs;
    if state.interrupted_idle {
        // Interrupted idle (the `exit_rcu` case): idle re-checks need_resched right after
        // its wait returns. Rescheduling here would switch away in the middle of the
        // idle wait, with the idle bookkeeping still claiming we are in it. Idle is never
        // in a preemptible section; if the flag says otherwise, say so once.
        if this_cpu().in_preemptible.load(Relaxed) {
            instrumentation(&mut warn_preemptible_in_idle);
        }
    } else if state.irqs_were_on && this_cpu().irq_nesting.load(Relaxed) == 0 {
        let in_section = this_cpu().in_preemptible.load(Relaxed);
        instrumentation(&mut || {
            // SAFETY: the CPU entered through an interrupt gate (or Xen masked events),
            // and nothing on the way re-enabled interrupts without disabling them again.
            let irqs_off = unsafe { IrqsOff::assume() };
            if in_section {
                // A long hypercall or in-kernel section: every wake-up this entry caused
                // (timer, device or event bottom half, notify callback) must get the CPU
                // whatever the model (Thomas Gleixner, "Re: [RFC PATCH 1/5] entry: Pass
                // pt_regs to irqentry_exit_cond_resched()", LKML, 2022-08-09), so the
                // exit work runs with the raw reschedule, the section's flag parked
                // meanwhile (see `preempt::section_exit_resched`).
                preempt::section_exit_resched(&irqs_off, &mut |how| exit_work(&irqs_off, how));
            } else {
                exit_work(&irqs_off, preempt::ExitResched::Model);
            }
        });
        if in_section && preempt::section_exit_forgets_trace() {
            // `hcall_resched=untraced` (test-only): the missing trace_hardirqs_on of the
            // thread cited above. The next entry's consistency check must catch it.
            return;
        }
    }
    if state.irqs_were_on {
        // The return (iretq / Xen's unmask) re-enables interrupts.
        irqflags::trace_hardirqs_on();
    }
}

static WARNED_IDLE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn warn_preemptible_in_idle() {
    if !WARNED_IDLE.swap(true, Relaxed) {
        crate::println!(
            "upcall: WARNING: interrupted idle with the in-preemptible flag set; not rescheduling"
        );
    }
}

/// Work pending before returning to a task.
const WORK_SOFTIRQ: u32 = 1;
const WORK_NOTIFY: u32 = 2;
const WORK_RESCHED: u32 = 4;

/// Snapshot of pending exit work; read with irqs off. `how` says which reschedule
/// counts as work (the model's, or the raw one inside a preemptible section).
fn pending_work(_: &IrqsOff<'_>, how: preempt::ExitResched) -> u32 {
    let mut w = 0;
    if softirq::pending() {
        w |= WORK_SOFTIRQ;
    }
    if crate::notify::pending() {
        w |= WORK_NOTIFY;
    }
    if preempt::exit_resched_pending(how) {
        w |= WORK_RESCHED;
    }
    w
}

/// The exit-work loop: do the work with irqs enabled where it allows, disable, re-read
/// the flags, and return only when a snapshot taken with irqs off is empty, so work
/// raised by an interrupt during the loop is never lost (Qian Cai on Thomas Gleixner's
/// "[patch V5 05/15] entry: Provide infrastructure for work before transitioning to
/// guest mode", LKML, 2020-07-29, shows why the last check must have irqs off). Bottom
/// halves and notify callbacks come before the reschedule, so a task they wake is
/// ready by the time it decides.
#[inline(never)]
fn exit_work(irqs_off: &IrqsOff<'_>, how: preempt::ExitResched) {
    irqflags::assert_irqs_disabled();
    loop {
        let work = pending_work(irqs_off, how);
        if work == 0 {
            break;
        }
        if work & WORK_SOFTIRQ != 0 {
            // Raised by an interrupt that arrived during the loop (or from task code).
            do_softirq();
        }
        if work & WORK_NOTIFY != 0 {
            irqflags::local_irq_enable();
            crate::notify::run_pending();
            irqflags::local_irq_disable();
        }
        if work & WORK_RESCHED != 0 {
            preempt::exit_cond_resched(irqs_off, how);
        }
    }
    irqflags::assert_irqs_disabled();
}

/// Runs bottom halves raised outside an interrupt handler (from task context, or
/// left to the exit work or the idle loop), on the irq stack as an interrupt's would.
///
/// Context: irqs off, not on the irq stack; returns with irqs off.
pub(crate) fn do_softirq() {
    let mut scratch = Regs::default();
    run_irq_on_irqstack_cond(no_handler, &mut scratch);
}

/// Nothing to do but the bottom halves [`run_irq_on_irqstack_cond`] runs after it.
extern "C" fn no_handler(_: &mut Regs) {}

/// Deepest irq-stack nesting seen, and the entries that found the stack already in use.
static MAX_NESTING: AtomicU32 = AtomicU32::new(0);
static NESTED_ENTRIES: AtomicU64 = AtomicU64::new(0);

/// (deepest nesting seen, entries that ran nested without switching stacks).
pub fn nesting_stats() -> (u32, u64) {
    (MAX_NESTING.load(Relaxed), NESTED_ENTRIES.load(Relaxed))
}

/// Whether `sp` lies on this CPU's irq stack.
pub fn on_irq_stack(sp: u64) -> bool {
    let cpu = this_cpu();
    (cpu.irq_stack_bottom.load(Relaxed)..cpu.irq_stack_top.load(Relaxed)).contains(&sp)
}

/// The stack pointer `run_on_irqstack_cond` saved in the top word of the irq stack (the
/// interrupted stack; meaningful while or after a handler ran there).
pub fn interrupted_sp() -> u64 {
    let top = this_cpu().irq_stack_top.load(Relaxed);
    if top == 0 {
        return 0;
    }
    // SAFETY: the irq stack's top word is mapped, written by `call_on_stack`, and only
    // read here (a torn value would only mislabel a report line).
    unsafe { ((top - 8) as *const u64).read_volatile() }
}

/// Runs `f(regs)` on this CPU's irq stack, switching only if the nesting count says we
/// are not on it already. For exception handlers; interrupts use
/// [`run_irq_on_irqstack_cond`], which also runs the bottom halves.
///
/// The interrupted stack pointer is stored in the top word of the irq stack so the
/// unwinder can walk from irq-stack frames back into the task's (Alexandre Chartre on
/// Thomas Gleixner's "[patch V4 part 5 02/31] x86/entry: Provide helpers for execute on
/// irqstack", LKML, 2020-05-11).
///
/// Context: irqs off; returns with irqs off.
pub fn run_on_irqstack_cond(f: extern "C" fn(&mut Regs), regs: &mut Regs) {
    on_irqstack(f, regs, false);
}

/// Runs interrupt handler `f(regs)` on this CPU's irq stack as [`run_on_irqstack_cond`]
/// does, then, if this is the outermost entry, the pending bottom halves, still on the
/// irq stack (Linux's `irq_exit`). Every bottom half an interrupt raised — timer,
/// device, event channel — has then run, and woken its tasks, before `irqentry_exit`
/// decides whether to reschedule. A nested entry leaves them to the outer one, whose
/// bottom-half loop re-reads the pending set before it ends.
///
/// Context: irqs off, for an interrupt (the interrupted context had irqs on); returns
/// with irqs off (they are on while the bottom halves run).
pub fn run_irq_on_irqstack_cond(f: extern "C" fn(&mut Regs), regs: &mut Regs) {
    on_irqstack(f, regs, true);
}

fn on_irqstack(f: extern "C" fn(&mut Regs), regs: &mut Regs, bottom_halves: bool) {
    irqflags::assert_irqs_disabled();
    let cpu = this_cpu();
    let top = cpu.irq_stack_top.load(Relaxed);
    let depth = cpu.irq_nesting.fetch_add(1, Relaxed) + 1;
    MAX_NESTING.fetch_max(depth, Relaxed);
    if depth == 1 && top != 0 {
        // SAFETY: `top` is this CPU's irq stack, nesting was 0 so no frame lives on it,
        // and irqs are off so no other entry can start using it before we switch back.
        unsafe { call_on_stack(top, f, regs, bottom_halves) };
    } else {
        NESTED_ENTRIES.fetch_add(1, Relaxed);
        f(regs);
        if bottom_halves && depth == 1 {
            // No irq stack yet (early boot): the outermost entry runs them where it is.
            softirq::run_pending();
        }
    }
    let left = cpu.irq_nesting.fetch_sub(1, Relaxed) - 1;
    debug_assert_eq!(left, depth - 1, "BUG: irq-stack nesting count unbalanced");
}

/// What runs on the irq stack after the switch (only the outermost entry switches, so
/// nesting is 1): the handler, then, for an interrupt, the bottom halves.
extern "C" fn irq_stack_body(regs: &mut Regs, f: extern "C" fn(&mut Regs), bottom_halves: bool) {
    f(regs);
    if bottom_halves {
        softirq::run_pending();
    }
}

/// Calls [`irq_stack_body`]`(regs, f, bottom_halves)` (with `bottom_halves`) or
/// `f(regs)` (without) with the stack pointer at `top`.
///
/// # Safety
/// `top` must be the top of a stack nobody uses, 16-byte aligned, with irqs off.
unsafe fn call_on_stack(
    top: u64,
    f: extern "C" fn(&mut Regs),
    regs: &mut Regs,
    bottom_halves: bool,
) {
    // An exception's handler is called directly; an interrupt's through the body that
    // runs the bottom halves after it (it takes `f` and the flag in rsi/rdx, which `f`
    // itself ignores).
    let body: extern "C" fn(&mut Regs, extern "C" fn(&mut Regs), bool) = irq_stack_body;
    let target = if bottom_halves {
        body as usize
    } else {
        f as usize
    };
    // SAFETY: (caller) the stack is free. We save rsp in the stack's top word, call the
    // body with rsp 16-byte aligned, and restore rsp from that word; rbp is untouched, so
    // its frame links to ours on the interrupted stack and backtraces cross over.
    unsafe {
        core::arch::asm!(
            "mov [r12 - 8], rsp",
            "lea rsp, [r12 - 16]",
            "call rax",
            "mov rsp, [r12 - 8]",
            in("r12") top,
            in("rax") target,
            in("rdi") core::ptr::from_mut(regs),
            in("rsi") f,
            in("rdx") u64::from(bottom_halves),
            clobber_abi("C"),
        );
    }
}

/// Test hook: runs `f` on the irq stack (irqs off) as an interrupt handler would, so
/// tests can probe nesting (an exception inside must not switch stacks again).
#[doc(hidden)]
pub fn test_run_on_irq_stack(f: extern "C" fn(&mut Regs)) {
    let _irqs = irqflags::IrqGuard::new();
    let mut scratch = Regs::default();
    run_on_irqstack_cond(f, &mut scratch);
}

/// Only in the `noinstr-violation-demo` build: an ordinary function called from
/// `irqentry_enter`, which `cargo xtask check-noinstr` must reject.
#[cfg(feature = "noinstr-violation-demo")]
#[inline(never)]
fn noinstr_violation_demo() {
    core::hint::black_box(0);
}
