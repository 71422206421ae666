//! Telling the VMM the guest crashed: QEMU's ISA `pvpanic` device (libvirt
//! `<panic model='isa'/>`), I/O port 0x505.
//!
//! Reading the port returns the events the device supports (bit 0: "guest panicked");
//! an absent device reads as all ones, so the read is the presence check. Writing bit 0
//! makes QEMU raise its `GUEST_PANICKED` event: libvirt then reports the domain as
//! crashed (reason "panicked") and applies `<on_crash>`; plain QEMU without
//! `-no-shutdown` shuts down.

use x86_64::instructions::port::Port;

/// The ISA pvpanic device's port (QEMU's default `ioport`).
const PORT: u16 = 0x505;
/// "The guest panicked" (`PVPANIC_PANICKED`).
const PANICKED: u8 = 1;

/// Whether the bits read from the port mean a device that can report a panic.
pub fn present(bits: u8) -> bool {
    bits != 0xff && bits & PANICKED != 0
}

/// Reports a crash if the device is there; false if it is not.
///
/// Context: any (exit path); irqs off.
pub fn report() -> bool {
    let mut port = Port::<u8>::new(PORT);
    // SAFETY: reading port 0x505 has no side effects: the pvpanic device returns its
    // capability bits, and an unassigned port reads as 0xff.
    let bits = unsafe { port.read() };
    if !present(bits) {
        return false;
    }
    // SAFETY: the port is the pvpanic device (checked above); writing PANICKED only
    // tells the VMM, with no memory effects.
    unsafe { port.write(PANICKED) };
    true
}
