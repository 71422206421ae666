//! Console output. dom0 writes through `console_io` (it goes to Xen's serial console);
//! a domU's `console_io` is refused on release builds of Xen, and the PV console ring
//! is the next step of the Xen backend.

use crate::hypercall::{CONSOLE_IO, hypercall};

/// Writes through `console_io(CONSOLEIO_write)`.
pub fn write(bytes: &[u8]) {
    // SAFETY: CONSOLEIO_write reads `len` bytes at `ptr`, which `bytes` provides.
    unsafe {
        hypercall(
            CONSOLE_IO,
            u64::from(xen_sys::CONSOLEIO_write),
            bytes.len() as u64,
            bytes.as_ptr() as u64,
            0,
            0,
        );
    }
}
