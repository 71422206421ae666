//! From the backend's hand-off to the application's `main`.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cmdline::{self, LogLevel};
use crate::memory::{self, Region};
use crate::platform::Platform;
use crate::{Args, backtrace, console, heap, println};

/// What a backend knows when it hands over to libos.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo<'a> {
    /// The kernel command line (`-append`, xl `extra=`, ...), already copied out of
    /// boot memory the heap may reuse.
    pub cmdline: &'a str,
    /// All RAM, identity-mapped and writable.
    pub ram: &'a [Region],
    /// Ranges inside `ram` that are in use (the image with its stacks and page tables,
    /// boot structures, low memory); the heap gets the rest.
    pub reserved: &'a [Region],
    /// The TSC read at the image's first instruction (0 if the backend did not).
    pub entry_tsc: u64,
}

static ENTRY_TO_MAIN_CYCLES: AtomicU64 = AtomicU64::new(0);
static LOGLEVEL: spinning_top::Spinlock<LogLevel> = spinning_top::Spinlock::new(LogLevel::Info);

/// How chatty libos and the backend should be (`loglevel=`).
pub fn loglevel() -> LogLevel {
    *LOGLEVEL.lock()
}

/// TSC cycles from the image's first instruction to the application's `main`
/// (deterministic under QEMU `-icount`, where the TSC counts instructions).
pub fn entry_to_main_cycles() -> u64 {
    ENTRY_TO_MAIN_CYCLES.load(Ordering::Relaxed)
}

unsafe extern "Rust" {
    /// Defined by [`crate::image!`] in the image crate.
    safe fn __upcall_app_main(args: &Args) -> i32;
    /// The application's default command line (libos options), defined by
    /// [`crate::image!`].
    safe fn __upcall_default_cmdline() -> &'static str;
}

/// Makes the console, panics and exception reports work; the backend's first call.
///
/// Context: boot CPU, once, before anything prints.
pub fn register_platform(platform: &'static dyn Platform) {
    // Per-CPU data first: the console lock's irq guard already traces into it.
    crate::percpu::init_cpu(0, platform);
    console::register(platform);
}

/// Starts the library OS and runs the application; never returns.
///
/// Context: called once, after [`register_platform`], by the backend's boot code on the boot stack, irqs off, with
/// `info.ram` identity-mapped.
///
/// # Safety
/// `info` must be truthful: everything in `info.ram` outside `info.reserved` becomes
/// heap, so it must be mapped, writable and otherwise unused.
pub unsafe fn start(info: &BootInfo<'_>) -> ! {
    let Some(platform) = console::platform() else {
        panic!("libos::start called before register_platform");
    };
    backtrace::set_walkable(info.ram);
    let free = memory::free_regions(info.ram, info.reserved);
    // SAFETY: the caller guarantees free RAM is mapped and unused; this runs once, first.
    unsafe { heap::init(free.as_slice()) };

    let cmd = match cmdline::parse_with_defaults(__upcall_default_cmdline(), info.cmdline) {
        Ok(cmd) => cmd,
        Err(e) => {
            println!("upcall: bad command line: {e}");
            crate::panic::exit(2);
        }
    };
    *LOGLEVEL.lock() = cmd.loglevel;
    crate::preempt::configure(cmd.preempt);
    crate::preempt::configure_section_resched(cmd.hcall_resched);
    crate::time::set_hz(cmd.hz);
    crate::net::configure(cmd.net);
    crate::entry::init();
    crate::sched::init();
    crate::percpu::mark_online(crate::percpu::this_cpu());
    if cmd.loglevel != LogLevel::Quiet {
        let ram: u64 = info.ram.iter().map(Region::len).sum();
        println!(
            "upcall: {} | RAM {} MiB | heap {} MiB | preempt={} hz={}",
            platform.name(),
            ram >> 20,
            heap::total_bytes() >> 20,
            cmd.preempt,
            cmd.hz
        );
    }
    // Measured before the debug-only lines below, so a `loglevel=debug` run (the
    // benchmark's) counts what a default boot does.
    let cycles = crate::arch::rdtsc().wrapping_sub(info.entry_tsc);
    ENTRY_TO_MAIN_CYCLES.store(cycles, Ordering::Relaxed);
    if cmd.loglevel == LogLevel::Debug {
        for r in free.as_slice() {
            println!("upcall: heap region {:#x}..{:#x}", r.start, r.end);
        }
        if free.dropped > 0 {
            println!(
                "upcall: {} free regions left unused (table full)",
                free.dropped
            );
        }
        println!("upcall: entry-to-main tsc cycles {cycles}");
    }
    let others = crate::smp::start();
    if others > 0 && cmd.loglevel != LogLevel::Quiet {
        println!("upcall: {} CPUs online", others + 1);
    }
    // The application runs as the `main` task with interrupts on, like every task.
    crate::irqflags::local_irq_enable();
    platform.start_services();
    let code = __upcall_app_main(&Args::new(cmd.app_args));
    crate::panic::exit(code)
}
