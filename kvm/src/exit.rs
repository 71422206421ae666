//! Ending the image on QEMU: the exit status on the console, then `isa-debug-exit`
//! where present, else the way a managed VM ends (pvpanic for a crash, ACPI poweroff).
//!
//! Writing `v` to port 0xf4 makes QEMU exit with status `(v << 1) | 1`; the exit status
//! byte keeps `v & 0x7f`. So app codes 0..=127 are carried exactly (`cargo xtask run`
//! decodes them); anything else is reported as 127.
//!
//! Whether the device is there needs no probe: QEMU ends inside the `out` instruction
//! when it is, so coming back from the write is the proof that it is absent (the case
//! under libvirt, Nova and KubeVirt, which cannot add it). The exit status is printed
//! first, so it is on the console whichever way the image ends; under uhyve its exit
//! hypercall ends the image instead (`uhyve::exit`) and nothing here runs.
//!
//! Without the device: a crash (`libos`'s panic and CPU-exception statuses) is reported
//! through pvpanic, and the CPU then halts for the VMM to act (libvirt: "crashed",
//! `<on_crash>`); any other status, or a crash with no pvpanic device, powers off
//! through ACPI (libvirt: "shutdown"). If nothing works the CPU halts.

use core::fmt::Write;

use x86_64::instructions::port::Port;

use crate::{poweroff, pvpanic};

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The value written to the device for exit code `code`.
pub fn encode(code: i32) -> u32 {
    u32::try_from(code)
        .ok()
        .filter(|&c| c <= 127)
        .unwrap_or(127)
}

/// Whether `code` is libos's status for a panic or a fatal CPU exception.
fn is_crash(code: i32) -> bool {
    code == libos::panic::PANIC_EXIT_CODE || code == libos::trap::EXCEPTION_EXIT_CODE
}

/// Ends the image with `code`: never returns.
pub fn exit(code: i32) -> ! {
    let mut out = libos::console::emergency_writer();
    let _ = writeln!(out, "upcall: exit status {}", encode(code));
    // SAFETY: port 0xf4 is the isa-debug-exit device (or nothing); writing it has no
    // memory effects.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(encode(code)) };
    if is_crash(code) && pvpanic::report() {
        let _ = writeln!(out, "upcall: crash reported through pvpanic");
    } else {
        poweroff::power_off();
        let _ = writeln!(out, "upcall: halting");
    }
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
