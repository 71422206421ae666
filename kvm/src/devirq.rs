//! Device interrupts: a small table of vectors handed out to drivers, dispatched
//! through the entry core like the timer.

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

/// Runs the handler of the interrupting vector, acknowledges the local APIC (after the
/// handler quieted its level-triggered line), then the bottom halves.
///
/// Context: irqs off, on the irq stack (through `entry::run_on_irqstack_cond`).
pub extern "C" fn dispatch(regs: &mut Regs) {
    let slot = (regs.vector - u64::from(FIRST_VECTOR)) as usize;
    let handler = HANDLERS.lock()[slot];
    if let Some(h) = handler {
        h();
    }
    apic::eoi();
    libos::entry::do_softirq_on_irq_stack();
}
