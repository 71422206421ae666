//! Frame-pointer backtraces.
//!
//! Images build with `-C force-frame-pointers=yes`, so every frame starts with
//! `[saved rbp][return address]` and rbp links them. Boot code zeroes rbp, which ends
//! the chain. Entry stubs push a fake frame built from the interrupted `rip`/`rbp`, so
//! a walk from a handler continues into the interrupted code.
//!
//! Output format (read by `cargo xtask`, which appends symbol names):
//! ```text
//! backtrace:
//!   #0 0x0000000000101234
//!   #1 0x0000000000105678
//!   --- irq stack ends; interrupted stack pointer 0x… ---   (where a walk leaves the irq stack)
//! end of backtrace
//! ```

use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::memory::Region;

/// Deepest walk printed; deeper stacks are cut with a note.
pub const MAX_FRAMES: usize = 64;

/// Ranges a frame pointer may point into (RAM, as boot reported it).
static WALKABLE: spinning_top::Spinlock<[Region; 8]> =
    spinning_top::Spinlock::new([Region { start: 0, end: 0 }; 8]);
static WALKABLE_LEN: AtomicUsize = AtomicUsize::new(0);

/// Records the RAM ranges frame pointers may point into (called at boot).
pub(crate) fn set_walkable(ram: &[Region]) {
    let mut w = WALKABLE.lock();
    let n = ram.len().min(w.len());
    w[..n].copy_from_slice(&ram[..n]);
    WALKABLE_LEN.store(n, Ordering::Release);
}

fn frame_readable(rbp: u64) -> bool {
    if rbp == 0 || !rbp.is_multiple_of(8) {
        return false;
    }
    let n = WALKABLE_LEN.load(Ordering::Acquire);
    // A panic while holding this lock cannot happen (it is only held to copy), but
    // stay safe on the report path: an unreadable table means "stop walking".
    let Some(w) = WALKABLE.try_lock() else {
        return false;
    };
    w[..n]
        .iter()
        .any(|r| r.contains(rbp) && rbp.checked_add(16).is_some_and(|e| e <= r.end))
}

/// Calls `f` with each return address in the frame chain that starts at `rbp`.
///
/// Stops at a null, misaligned or non-RAM frame pointer, or after [`MAX_FRAMES`].
/// Returns whether the walk was cut at the limit.
pub fn walk(rbp: u64, mut f: impl FnMut(usize, u64)) -> bool {
    walk_frames(rbp, |i, _, ret| f(i, ret))
}

/// Like [`walk`], also passing each frame's address (its rbp).
pub fn walk_frames(mut rbp: u64, mut f: impl FnMut(usize, u64, u64)) -> bool {
    for depth in 0..MAX_FRAMES {
        if !frame_readable(rbp) {
            return false;
        }
        let frame = rbp as usize as *const u64;
        // SAFETY: `frame_readable` checked that [rbp, rbp + 16) is 8-aligned RAM, which
        // the backends identity-map; a frame record is two words: saved rbp, return address.
        let (next, ret) = unsafe { (frame.read_volatile(), frame.add(1).read_volatile()) };
        if ret == 0 {
            return false;
        }
        f(depth, rbp, ret);
        rbp = next;
    }
    true
}

/// Prints the backtrace starting at `rbp` in the format above.
pub fn print_from(out: &mut dyn Write, rbp: u64) {
    let _ = writeln!(out, "backtrace:");
    // Runs of one return address (deep recursion) print once, with a count.
    let (mut last, mut repeats) = (0u64, 0usize);
    let flush = |out: &mut dyn Write, repeats: usize| {
        if repeats > 0 {
            let _ = writeln!(out, "  ... previous frame repeated {repeats} more times");
        }
    };
    let mut on_irq_stack = false;
    let cut = walk_frames(rbp, |i, frame, ret| {
        let on_irq = crate::entry::on_irq_stack(frame);
        if on_irq_stack && !on_irq {
            flush(out, repeats);
            repeats = 0;
            let _ = writeln!(
                out,
                "  --- irq stack ends; interrupted stack pointer {:#x} ---",
                crate::entry::interrupted_sp()
            );
        }
        on_irq_stack = on_irq;
        if ret == last {
            repeats += 1;
            return;
        }
        flush(out, repeats);
        repeats = 0;
        last = ret;
        let _ = writeln!(out, "  #{i} {ret:#018x}");
    });
    flush(out, repeats);
    if cut {
        let _ = writeln!(out, "  ... (more than {MAX_FRAMES} frames)");
    }
    let _ = writeln!(out, "end of backtrace");
}

/// Prints the backtrace of the caller.
#[inline(never)]
pub fn print_here(out: &mut dyn Write) {
    print_from(out, crate::arch::frame_pointer());
}
