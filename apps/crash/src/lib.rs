//! `crash -- MODE`: crashes on purpose so the reports can be seen and tested.
//!
//! Modes: `task` (a panic a few calls deep), `pagefault` (reads an unmapped address),
//! `ud` (executes `ud2`), `overflow` (recurses until the stack's guard page: a #DF on
//! its own stack), `task-overflow` (the same in a spawned task, whose stack is heap
//! memory with a guard page, yielding at each level; on Xen, which has no IST, libos's
//! stack check reports it), `nullptr` (reads address 0), `irq` (a panic inside the
//! timer interrupt handler, on the irq stack), `untraced-irq` (enables interrupts
//! without telling irq-state tracing; debug builds catch it at the next interrupt),
//! `smp-panic` (a task on every CPU panics at the same moment: the first report stops
//! the other CPUs, so exactly one is printed), `oom` (allocates 1 MiB blocks until the
//! heap is exhausted and does not handle the failure: the report names the failed
//! allocation's size), `sched-in-irq` (the timer interrupt handler calls the scheduler,
//! which must refuse, naming the context), `guard-migrate` (2+ CPUs: the task making a
//! stack is moved to another CPU between the local TLB flush of the new guard page and
//! the shootdown, as preemption could; the stack's task then writes to its guard page
//! on that CPU, which must fault).
//! Each must end the image non-zero with a report and a backtrace naming the functions
//! below.
#![no_std]

extern crate alloc;

use libos::println;
use libos::sched::{self, Priority};

/// An address that is canonical but never mapped (above all RAM).
const UNMAPPED: usize = 0x0000_7fff_dead_0000;

const MODES: &str = "task | pagefault | ud | overflow | task-overflow | nullptr | irq | untraced-irq | smp-panic | oom | sched-in-irq | guard-migrate";

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
                overflow_task_stack(0);
            })
            .join();
            0
        }
        "irq" => panic_in_timer_interrupt(),
        "untraced-irq" => untraced_irq_enable(),
        "smp-panic" => panic_on_every_cpu(),
        "oom" => exhaust_heap(),
        "sched-in-irq" => schedule_in_timer_interrupt(),
        "guard-migrate" => guard_page_after_migration(),
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

/// [`overflow_stack`] for `task-overflow`: each level also gives libos control (a
/// yield), the way a real task's deep call chain enters the scheduler, allocator or
/// interrupts. On KVM the recursion still ends in the guard page (#DF on the IST
/// stack); on Xen, which has no IST, libos's stack check at the switch reports it.
#[inline(never)]
#[allow(unconditional_recursion, reason = "running out of stack is the point")]
fn overflow_task_stack(n: u64) -> u64 {
    // 2 KiB a level: the backtrace from the fault (inside the scheduler) down to
    // `libos_task_start` stays within the report's 64 frames.
    let pad = core::hint::black_box([n; 256]);
    sched::yield_now();
    overflow_task_stack(pad[3] + 1) + pad[7]
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

#[inline(never)]
fn schedule_in_timer_interrupt() -> i32 {
    libos::time::test_schedule_in_timer_interrupt();
    let sleeper = sched::spawn("sleeper", Priority::Normal, || sched::sleep_ns(1_000_000));
    spin_for_interrupts();
    sleeper.join();
    println!("crash: the scheduler ran from the timer interrupt handler without refusing");
    1
}

/// See the module docs. Exits 1 if the guard page write did not fault (the CPU kept a
/// stale translation), 3 if the test could not set up its window.
#[inline(never)]
fn guard_page_after_migration() -> i32 {
    use core::alloc::Layout;
    let cpus = libos::percpu::online_cpus();
    if cpus < 2 {
        println!("crash: guard-migrate needs 2 or more CPUs");
        return 2;
    }
    let here = libos::percpu::cpu_id();
    let other = (here + 1) % cpus;
    // 1. `other` touches the memory the next task stack will take (the same layout,
    //    freed again, is what the allocator hands out next), so its TLB holds a present
    //    translation of what becomes the guard page.
    let layout = Layout::from_size_align(sched::TASK_STACK_SIZE + 4096, 4096).expect("layout");
    sched::migrate_to(other);
    // SAFETY: a non-zero-sized layout; the block is written within its bounds and freed
    // with the same layout.
    #[allow(unsafe_code)]
    let block = unsafe {
        let p = alloc::alloc::alloc(layout);
        if p.is_null() {
            println!("crash: out of memory");
            return 3;
        }
        for page in (0..layout.size()).step_by(4096) {
            p.add(page).write_volatile(1);
        }
        alloc::alloc::dealloc(p, layout);
        p as u64
    };
    sched::migrate_to(here);
    // 2. The next stack made here: the hook moves this task to `other` right after the
    //    local flush, unless it is pinned (as it must be).
    libos::testing::hooks::migrate_after_guard_flush(other);
    // Set once this task has reported what the hook did: the new task, running at once
    // on an idle `other`, would otherwise fault (ending the image) before the report.
    static REPORTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    let task = sched::spawn("guard", Priority::Normal, move || {
        while !REPORTED.load(core::sync::atomic::Ordering::Acquire) {
            sched::yield_now();
        }
        // On `other`, and staying there (irqs off) until the write: work stealing may
        // hand a migrated task back to an idle CPU before `other` picks it.
        let _irqs = loop {
            let irqs = libos::irqflags::IrqGuard::new();
            if libos::percpu::cpu_id() == other {
                break irqs;
            }
            drop(irqs);
            sched::migrate_to(other);
        };
        let Some(guard) = sched::current_stack_guard() else {
            println!("crash: this task's stack has no guard page");
            return;
        };
        if guard != block {
            println!("crash: the stack did not reuse the touched block ({guard:#x} vs {block:#x})");
            return;
        }
        println!(
            "crash: writing to the guard page {guard:#x} on CPU {}",
            libos::percpu::cpu_id()
        );
        // SAFETY: deliberately unsound: the guard page is unmapped, so the write faults
        // and the fault handler ends the image; if a stale translation lets it through,
        // the byte lands in memory nobody uses now (the block freed above).
        #[allow(unsafe_code)]
        unsafe {
            (guard as *mut u8).write_volatile(0)
        };
        println!(
            "crash: FAIL: the guard page write did not fault on CPU {}",
            libos::percpu::cpu_id()
        );
    });
    println!(
        "crash: the stack was made on CPU {here}; the hook {}",
        if libos::testing::hooks::guard_flush_hook_armed() {
            "could not move the task (pinned)"
        } else {
            "moved the task"
        }
    );
    REPORTED.store(true, core::sync::atomic::Ordering::Release);
    task.join();
    println!("crash: no fault");
    1
}
