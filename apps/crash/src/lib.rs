//! `crash -- MODE`: crashes on purpose so the reports can be seen and tested.
//!
//! Modes: `task` (a panic a few calls deep), `pagefault` (reads an unmapped address),
//! `ud` (executes `ud2`), `overflow` (recurses until the stack's guard page: a #DF on
//! its own stack), `task-overflow` (the same in a spawned task, whose stack is heap
//! memory with a guard page), `nullptr` (reads address 0), `irq` (a panic inside the
//! timer interrupt handler, on the irq stack), `untraced-irq` (enables interrupts
//! without telling irq-state tracing; debug builds catch it at the next interrupt),
//! `smp-panic` (a task on every CPU panics at the same moment: the first report stops
//! the other CPUs, so exactly one is printed), `oom` (allocates 1 MiB blocks until the
//! heap is exhausted and does not handle the failure: the report names the failed
//! allocation's size).
//! Each must end the image non-zero with a report and a backtrace naming the functions
//! below.
#![no_std]

extern crate alloc;

use libos::println;
use libos::sched::{self, Priority};

/// An address that is canonical but never mapped (above all RAM).
const UNMAPPED: usize = 0x0000_7fff_dead_0000;

const MODES: &str = "task | pagefault | ud | overflow | task-overflow | nullptr | irq | untraced-irq | smp-panic | oom";

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let Some(mode) = args.get(0) else {
        println!("usage: crash MODE   (MODE: {MODES})");
        return 2;
    };
    println!("crash: {mode}");
    match mode {
        "task" => crash_outer(3),
        "pagefault" => read_unmapped(UNMAPPED),
        "nullptr" => read_unmapped(0),
        "ud" => invalid_opcode(),
        "overflow" => overflow_stack(0) as i32,
        "task-overflow" => {
            sched::spawn("overflow", Priority::Normal, || {
                overflow_stack(0);
            })
            .join();
            0
        }
        "irq" => panic_in_timer_interrupt(),
        "untraced-irq" => untraced_irq_enable(),
        "smp-panic" => panic_on_every_cpu(),
        "oom" => exhaust_heap(),
        other => {
            println!("crash: unknown mode `{other}` (MODE: {MODES})");
            2
        }
    }
}

/// Allocates 1 MiB blocks, keeping them, until an allocation fails. The failure is
/// not handled (an infallible `Vec` allocation): Rust's allocation-error handler
/// panics with "memory allocation of 1048576 bytes failed".
#[inline(never)]
fn exhaust_heap() -> i32 {
    const BLOCK: usize = 1 << 20;
    let total = libos::heap::total_bytes();
    println!(
        "crash: exhausting a heap of {} MiB in 1 MiB blocks",
        total >> 20
    );
    // Room for every block's handle up front, so the failing allocation is a block.
    let mut kept: alloc::vec::Vec<alloc::vec::Vec<u8>> =
        alloc::vec::Vec::with_capacity((total as usize / BLOCK) + 1);
    loop {
        kept.push(alloc::vec::Vec::with_capacity(BLOCK));
        core::hint::black_box(&mut kept);
    }
}

/// One task per CPU; they wait for each other (so they run at once, one per CPU), then
/// all panic.
fn panic_on_every_cpu() -> i32 {
    use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
    static ARRIVED: AtomicU32 = AtomicU32::new(0);
    let cpus = libos::percpu::online_cpus();
    println!("crash: panicking on {cpus} CPUs at once");
    let handles: alloc::vec::Vec<_> = (0..cpus)
        .map(|_| {
            sched::spawn("panicker", Priority::Normal, move || {
                ARRIVED.fetch_add(1, SeqCst);
                while ARRIVED.load(SeqCst) < cpus {
                    core::hint::spin_loop();
                }
                smp_panic(libos::percpu::cpu_id());
            })
        })
        .collect();
    handles.into_iter().for_each(sched::JoinHandle::join);
    0
}

#[inline(never)]
fn smp_panic(cpu: u32) -> ! {
    panic!("deliberate panic on CPU {cpu}");
}

#[inline(never)]
fn crash_outer(depth: u32) -> i32 {
    crash_middle(depth) + 1
}

#[inline(never)]
fn crash_middle(depth: u32) -> i32 {
    crash_inner(core::hint::black_box(depth)) + 1
}

#[inline(never)]
fn crash_inner(depth: u32) -> i32 {
    panic!("deliberate panic {depth} calls deep");
}

#[inline(never)]
fn read_unmapped(addr: usize) -> i32 {
    let p = core::hint::black_box(addr) as *const u32;
    // SAFETY: deliberately unsound: `p` is unmapped so the read faults, which is the
    // point of this mode; the fault handler ends the image and never returns here.
    #[allow(unsafe_code)]
    let v = unsafe { p.read_volatile() };
    v as i32
}

#[inline(never)]
fn invalid_opcode() -> i32 {
    libos::arch::invalid_opcode()
}

#[inline(never)]
#[allow(unconditional_recursion, reason = "running out of stack is the point")]
fn overflow_stack(n: u64) -> u64 {
    let pad = core::hint::black_box([n; 64]);
    overflow_stack(pad[3] + 1) + pad[7]
}

#[inline(never)]
fn panic_in_timer_interrupt() -> i32 {
    libos::time::test_panic_in_timer_interrupt();
    // Spin (irqs on) until the timer fires: its handler panics on the irq stack, and the
    // backtrace must cross back into this function.
    let sleeper = sched::spawn("sleeper", Priority::Normal, || sched::sleep_ns(1_000_000));
    spin_for_interrupts();
    sleeper.join();
    println!("crash: the timer handler did not panic");
    1
}

#[inline(never)]
fn untraced_irq_enable() -> i32 {
    let sleeper = sched::spawn("sleeper", Priority::Normal, || sched::sleep_ns(1_000_000));
    sched::yield_now();
    let _irqs_off = libos::irqflags::IrqGuard::new();
    libos::irqflags::test_enable_irqs_untraced();
    spin_for_interrupts();
    drop(sleeper);
    println!("crash: irq-state tracing did not catch the untraced enable (release build?)");
    1
}

#[inline(never)]
fn spin_for_interrupts() {
    let end = libos::time::now_ns() + 200 * libos::time::tick_ns();
    while libos::time::now_ns() < end {
        core::hint::spin_loop();
    }
}
