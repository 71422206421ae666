//! Ending the image: QEMU's `isa-debug-exit` device.
//!
//! Writing `v` to port 0xf4 makes QEMU exit with status `(v << 1) | 1`; the exit status
//! byte keeps `v & 0x7f`. So app codes 0..=127 are carried exactly (`cargo xtask run`
//! decodes them); anything else is reported as 127.

use core::fmt::Write;

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The value written to the device for exit code `code`.
pub fn encode(code: i32) -> u32 {
    u32::try_from(code)
        .ok()
        .filter(|&c| c <= 127)
        .unwrap_or(127)
}

/// Exits QEMU; if the device is absent, says so and halts.
pub fn exit(code: i32) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device (or nothing); writing it has no
    // memory effects.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(encode(code)) };
    let _ = writeln!(
        libos::console::emergency_writer(),
        "upcall: exit status {} (no isa-debug-exit device at {DEBUG_EXIT_PORT:#x}: halting)",
        encode(code)
    );
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
