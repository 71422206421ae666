//! Console output: `print!`/`println!` for libos and apps.
//!
//! Formatting goes through a small line lock so concurrent lines do not interleave.
//! The panic and exception paths use [`emergency_writer`], which bypasses the lock: the
//! code that panicked may hold it.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

use spinning_top::Spinlock;

use crate::platform::Platform;

/// Write-once cell for the registered platform (a fat `&dyn` cannot be atomic).
struct PlatformCell {
    /// `EMPTY`, `WRITING` or `READY`; `value` is read only once `READY` is seen.
    state: AtomicU8,
    value: UnsafeCell<Option<&'static dyn Platform>>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

// SAFETY: `value` is written exactly once, by the thread that moved `state` from EMPTY to
// WRITING, and read only after `state` is READY (Release/Acquire), so no access races.
unsafe impl Sync for PlatformCell {}

static PLATFORM: PlatformCell = PlatformCell {
    state: AtomicU8::new(EMPTY),
    value: UnsafeCell::new(None),
};

/// Serializes whole `print!` calls.
static LINE_LOCK: Spinlock<()> = Spinlock::new(());

/// Registers the platform; called once by [`crate::start`] before anything prints.
///
/// # Panics
/// If a platform was registered already.
pub(crate) fn register(platform: &'static dyn Platform) {
    let won = PLATFORM
        .state
        .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed);
    assert!(won.is_ok(), "BUG: platform registered twice");
    // SAFETY: we moved the state EMPTY -> WRITING, so we are the only writer and no reader
    // looks at `value` before READY is published below.
    unsafe { *PLATFORM.value.get() = Some(platform) };
    PLATFORM.state.store(READY, Ordering::Release);
}

/// The registered platform, if boot got that far.
pub fn platform() -> Option<&'static dyn Platform> {
    if PLATFORM.state.load(Ordering::Acquire) != READY {
        return None;
    }
    // SAFETY: READY was published after the single write, and `value` never changes again.
    unsafe { *PLATFORM.value.get() }
}

/// A `fmt::Write` that goes straight to the platform console.
#[derive(Debug, Clone, Copy)]
pub struct RawWriter;

impl Write for RawWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(p) = platform() {
            p.console_write(s.as_bytes());
        }
        Ok(())
    }
}

/// A writer for panic and exception reports: no locks, no allocation.
pub fn emergency_writer() -> RawWriter {
    RawWriter
}

/// Collects formatted pieces and hands them to the platform in few writes: each write
/// may be a VM exit (uhyve's console hypercall, Xen's console ring notification).
struct Buffered {
    buf: [u8; 256],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        if self.len > 0 {
            if let Some(p) = platform() {
                p.console_write(&self.buf[..self.len]);
            }
            self.len = 0;
        }
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Irqs off while the line lock is held: a task preempted holding it would make every
    // other printer spin (forever, if that one has a higher priority).
    let _irqs = platform().map(|_| crate::irqflags::IrqGuard::new());
    let _line = LINE_LOCK.lock();
    let mut out = Buffered {
        buf: [0; 256],
        len: 0,
    };
    let _ = out.write_fmt(args);
    out.flush();
}

/// Prints to the platform console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the platform console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
