//! The panic handler: message, location, backtrace, non-zero exit.

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::console;

/// The exit status of an image that panicked.
pub const PANIC_EXIT_CODE: i32 = 101;

static PANICKING: AtomicBool = AtomicBool::new(false);
/// The CPU reporting the panic (valid once PANICKING is set).
static PANIC_CPU: AtomicU32 = AtomicU32::new(u32::MAX);

/// Reports a panic and ends the image. Installed by [`crate::image!`].
pub fn on_panic(info: &PanicInfo<'_>) -> ! {
    let mut out = console::emergency_writer();
    let me = crate::percpu::cpu_id();
    if PANICKING.swap(true, Ordering::SeqCst) {
        if PANIC_CPU.load(Ordering::SeqCst) != me {
            // Another CPU is reporting its panic (and halts us anyway): one report.
            crate::smp::halt_this_cpu();
        }
        let _ = writeln!(out, "\npanic while panicking: {}", info.message());
        exit(PANIC_EXIT_CODE);
    }
    PANIC_CPU.store(me, Ordering::SeqCst);
    // Stop the other CPUs first: the report prints once, and nothing runs on.
    crate::smp::halt_others();
    let _ = write!(out, "\npanicked");
    if let Some(loc) = info.location() {
        let _ = write!(out, " at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    let _ = writeln!(out, ":\n{}", info.message());
    crate::backtrace::print_here(&mut out);
    exit(PANIC_EXIT_CODE)
}

/// Whether a panic is being reported (exception handlers use it to avoid recursion).
pub fn is_panicking() -> bool {
    PANICKING.load(Ordering::Relaxed)
}

/// Ends the image through the platform, or spins if boot never registered one.
pub(crate) fn exit(code: i32) -> ! {
    match console::platform() {
        Some(p) => p.exit(code),
        None => loop {
            core::hint::spin_loop();
        },
    }
}
