//! Test events: a real asynchronous event, sent through the platform's own event path
//! (a Xen event channel, a KVM device vector), whose handler wakes a task through a
//! bottom half or a notify callback. Tests use it to prove that a task woken by
//! something other than the timer gets the CPU as fast as a timer-woken one, under
//! every preemption model and inside preemptible sections; it is not meant for apps.
//!
//! [`wait_at`] arms the event for a deadline: the timer interrupt handler that fires
//! then *sends* the event (irqs off, so it arrives as an interrupt of its own once the
//! timer's entry is done, or, on Xen, in the same upcall's re-scan), and the waiter
//! blocks until the event's bottom half (or notify callback) wakes it.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use crate::irqflags::IrqGuard;
use crate::sched::WaitQueue;
use crate::time::NEVER;

/// How the event's handler wakes the waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Wake {
    /// Only count the delivery (see [`delivered`]).
    Count = 0,
    /// Through a bottom half (a softirq, as a network driver's).
    BottomHalf = 1,
    /// Through a notify callback (task work run at interrupt exit).
    Notify = 2,
}

/// The platform has no test event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

impl core::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("this platform has no test event")
    }
}

/// When the timer handler sends the event (`NEVER`: not armed).
static AT: AtomicU64 = AtomicU64::new(NEVER);
static MODE: AtomicU8 = AtomicU8::new(Wake::Count as u8);
static DELIVERED: AtomicU64 = AtomicU64::new(0);
/// The armed wait has been woken.
static DONE: AtomicBool = AtomicBool::new(false);
/// 1 + the notify id of [`on_notify`] (0: not registered yet).
static NOTIFY_ID: AtomicU32 = AtomicU32::new(0);
static WAITERS: WaitQueue = WaitQueue::new();

fn platform() -> &'static dyn crate::Platform {
    crate::console::platform().expect("test events used before the platform registered")
}

/// Events delivered to [`interrupt`] so far.
pub fn delivered() -> u64 {
    DELIVERED.load(SeqCst)
}

/// Sets how later deliveries wake the waiter.
pub fn set_wake(how: Wake) {
    if how == Wake::Notify && NOTIFY_ID.load(SeqCst) == 0 {
        let id = crate::notify::register(on_notify).expect("notify table full");
        NOTIFY_ID.store(id.index() + 1, SeqCst);
    }
    MODE.store(how as u8, SeqCst);
}

/// Sends the event now (from task context: it interrupts this task).
pub fn send() -> Result<(), Unsupported> {
    if platform().send_test_event() {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

/// Masks or unmasks the event's source.
pub fn mask(masked: bool) -> Result<(), Unsupported> {
    if platform().mask_test_event(masked) {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

/// Blocks until the event, sent by the timer interrupt at `deadline_ns` (monotonic),
/// has woken this task the way `how` says. One waiter at a time.
pub fn wait_at(deadline_ns: u64, how: Wake) -> Result<(), Unsupported> {
    set_wake(how);
    crate::time::ensure_init();
    {
        let irqs = IrqGuard::new();
        DONE.store(false, SeqCst);
        AT.store(deadline_ns, SeqCst);
        crate::time::program_next_event(&irqs.token());
    }
    loop {
        let irqs = IrqGuard::new();
        if DONE.load(SeqCst) {
            break;
        }
        crate::sched::block_on_unless(&irqs.token(), &WAITERS, || DONE.load(SeqCst));
    }
    if UNSUPPORTED.load(SeqCst) {
        Err(Unsupported)
    } else {
        Ok(())
    }
}

/// Set once the timer's send failed for want of a platform event.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// The armed deadline, for the timer.
pub(crate) fn deadline() -> Option<u64> {
    let at = AT.load(SeqCst);
    (at != NEVER).then_some(at)
}

/// Called by the timer interrupt handler: sends the event once its deadline passed.
///
/// Context: irqs off, in the timer's handler.
pub(crate) fn on_timer_interrupt(now: u64) {
    let at = AT.load(SeqCst);
    if at != NEVER && now >= at && AT.swap(NEVER, SeqCst) == at && !platform().send_test_event() {
        // Nothing will come: wake the waiter with the news.
        UNSUPPORTED.store(true, SeqCst);
        crate::softirq::raise(crate::softirq::TEST_EVENT);
    }
}

/// The test event's handler, called by the backend when the event arrives.
///
/// Context: irqs off, on the irq stack (an interrupt handler).
pub fn interrupt() {
    DELIVERED.fetch_add(1, SeqCst);
    match MODE.load(SeqCst) {
        m if m == Wake::BottomHalf as u8 => crate::softirq::raise(crate::softirq::TEST_EVENT),
        m if m == Wake::Notify as u8 => {
            if let Some(id) = NOTIFY_ID.load(SeqCst).checked_sub(1) {
                crate::notify::raise(crate::notify::NotifyId::from_index(id));
            }
        }
        _ => {}
    }
}

/// The test event's bottom half.
///
/// Context: softirq (irqs on, on the irq stack).
pub(crate) fn bottom_half() {
    wake();
}

fn on_notify() {
    wake();
}

fn wake() {
    DONE.store(true, SeqCst);
    WAITERS.wake_one();
}
