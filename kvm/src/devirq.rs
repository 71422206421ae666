//! Device interrupts: a small table of vectors handed out to drivers, dispatched
//! through the entry core like the timer.

use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use libos::irqflags::IrqGuard;
use libos::regs::Regs;

use crate::apic;

/// The first vector for device interrupts (after the timer's 0x20).
pub const FIRST_VECTOR: u8 = 0x30;
/// Vectors available to devices.
const COUNT: usize = 16;

/// A device's interrupt handler.
pub type Handler = &'static (dyn Fn() + Sync);

static HANDLERS: spinning_top::Spinlock<[Option<Handler>; COUNT]> =
    spinning_top::Spinlock::new([None; COUNT]);

/// Whether `vector` is a device vector.
pub fn owns(vector: u64) -> bool {
    (u64::from(FIRST_VECTOR)..u64::from(FIRST_VECTOR) + COUNT as u64).contains(&vector)
}

/// Reserves a vector whose interrupts run `handler` (on the irq stack, irqs off; it
/// must quiet the device's interrupt line before returning). `None` if all are taken.
///
/// Context: task context.
pub fn register(handler: Handler) -> Option<u8> {
    let _irqs = IrqGuard::new();
    let mut table = HANDLERS.lock();
    let slot = table.iter().position(Option::is_none)?;
    table[slot] = Some(handler);
    Some(FIRST_VECTOR + slot as u8)
}

/// Runs the handler of the interrupting vector and acknowledges the local APIC (after
/// the handler quieted its level-triggered line); the bottom halves it raised run next.
///
/// Context: irqs off, on the irq stack (through `entry::run_irq_on_irqstack_cond`).
pub extern "C" fn dispatch(regs: &mut Regs) {
    let slot = (regs.vector - u64::from(FIRST_VECTOR)) as usize;
    let handler = HANDLERS.lock()[slot];
    if let Some(h) = handler {
        h();
    }
    apic::eoi();
}

/// The vector of the test event (`libos::test_event`), reserved on first use (0: not
/// yet).
static TEST_VECTOR: AtomicU8 = AtomicU8::new(0);

/// Sends this CPU its test event: a self-IPI on a device vector, so it takes the same
/// path as a device's interrupt (`Platform::send_test_event`). False if no vector is
/// left.
pub fn send_test_event() -> bool {
    let _irqs = IrqGuard::new();
    let vector = match TEST_VECTOR.load(Relaxed) {
        0 => match register(&|| libos::test_event::interrupt()) {
            Some(v) => {
                TEST_VECTOR.store(v, Relaxed);
                v
            }
            None => return false,
        },
        v => v,
    };
    apic::send_ipi(apic::id(), apic::Delivery::Fixed(vector));
    true
}
