//! Notify callbacks: functions an interrupt asks to run before the interrupted task
//! continues (the analogue of Linux's `TIF_NOTIFY_RESUME` task work), with irqs on.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

/// Most callbacks that can be registered.
pub const MAX_CALLBACKS: usize = 32;

static CALLBACKS: [AtomicUsize; MAX_CALLBACKS] = [const { AtomicUsize::new(0) }; MAX_CALLBACKS];
static COUNT: AtomicUsize = AtomicUsize::new(0);
static PENDING: AtomicU32 = AtomicU32::new(0);

/// A registered callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyId(u32);

impl NotifyId {
    /// The callback's slot.
    pub(crate) fn index(self) -> u32 {
        self.0
    }

    /// The id of slot `i` (as returned by [`Self::index`]).
    pub(crate) fn from_index(i: u32) -> NotifyId {
        NotifyId(i)
    }
}

/// Registers `f`; `None` if the table is full.
pub fn register(f: fn()) -> Option<NotifyId> {
    let i = COUNT.fetch_add(1, Relaxed);
    if i >= MAX_CALLBACKS {
        COUNT.fetch_sub(1, Relaxed);
        return None;
    }
    CALLBACKS[i].store(f as usize, Relaxed);
    Some(NotifyId(i as u32))
}

/// Asks for `id`'s callback to run before the interrupted task continues (any context).
pub fn raise(id: NotifyId) {
    PENDING.fetch_or(1 << id.0, Relaxed);
}

/// Whether a callback is pending.
pub fn pending() -> bool {
    PENDING.load(Relaxed) != 0
}

/// Runs the pending callbacks.
///
/// Context: irqs on, task context (exit work).
pub(crate) fn run_pending() {
    let mut bits = PENDING.swap(0, Relaxed);
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let raw = CALLBACKS[i].load(Relaxed);
        if raw != 0 {
            // SAFETY: slot `i` only ever holds a `fn()` stored by `register`.
            let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(raw) };
            f();
        }
    }
}
