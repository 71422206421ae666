//! Ending the image the way a managed VM ends: ACPI soft-off (S5).
//!
//! The FADT and the DSDT's `\_S5` are read at boot ([`discover`]: the tables may lie in
//! memory the heap reuses) into a [`PowerOff`]; [`power_off`] performs it. QEMU then
//! shuts down on its own (exit status 0) and libvirt reports the domain as shut off,
//! reason "shutdown" — what OpenStack Nova, oVirt and KubeVirt expect of a guest that
//! ended cleanly.

use core::fmt::Write;

use x86_64::instructions::port::Port;

use crate::acpi_sleep::{self, Error, PowerOff, Register};
use crate::boot::BootMem;
use crate::paging;

/// What [`discover`] found (`None` before it ran, and under uhyve).
static FOUND: spinning_top::Spinlock<Option<Result<PowerOff, Error>>> =
    spinning_top::Spinlock::new(None);

/// Reads how to power off while boot memory is intact.
///
/// Context: boot CPU, irqs off, boot identity map active, once.
pub fn discover(rsdp_paddr: u64) {
    let found = acpi_sleep::poweroff(&BootMem, rsdp_paddr);
    *FOUND.lock() = Some(found);
}

/// Powers off through ACPI; returns only if that is impossible or did not work, after
/// saying why.
///
/// Context: any (exit path).
pub fn power_off() {
    let mut out = libos::console::emergency_writer();
    // A CPU that panicked inside `discover` never got here; nobody else takes the lock.
    let found = FOUND.try_lock().and_then(|f| *f);
    let p = match found {
        None => {
            let _ = writeln!(out, "upcall: no ACPI tables were read: cannot power off");
            return;
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "upcall: no ACPI poweroff: {e}");
            return;
        }
        Some(Ok(p)) => p,
    };
    match p {
        PowerOff::Pm1 {
            a,
            b,
            slp_typ,
            from_dsdt,
        } => {
            let _ = writeln!(
                out,
                "upcall: powering off (ACPI PM1a control {}, SLP_TYP {}{})",
                Shown(a),
                slp_typ.0,
                if from_dsdt { " from \\_S5" } else { "" }
            );
            write16(a, |old| acpi_sleep::pm1_value(old, slp_typ.0));
            if let Some(b) = b {
                write16(b, |old| acpi_sleep::pm1_value(old, slp_typ.1));
            }
        }
        PowerOff::SleepControl {
            reg,
            slp_typ,
            from_dsdt,
        } => {
            let _ = writeln!(
                out,
                "upcall: powering off (ACPI sleep control {}, SLP_TYP {}{})",
                Shown(reg),
                slp_typ,
                if from_dsdt { " from \\_S5" } else { "" }
            );
            write8(reg, acpi_sleep::sleep_control_value(slp_typ));
        }
    }
    // QEMU acts on the request from its main loop, a little after the write: give it
    // time before concluding that nothing happened (~10^8 pause iterations is well
    // over a second even under TCG on a busy host).
    for _ in 0..100_000_000u64 {
        core::hint::spin_loop();
    }
    let _ = writeln!(out, "upcall: the ACPI poweroff did not end the machine");
}

/// A register for messages.
struct Shown(Register);

impl core::fmt::Display for Shown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Register::Io(p) => write!(f, "port {p:#x}"),
            Register::Memory(a) => write!(f, "at {a:#x}"),
        }
    }
}

fn write16(reg: Register, value: impl Fn(u16) -> u16) {
    match reg {
        Register::Io(port) => {
            let mut port = Port::<u16>::new(port);
            // SAFETY: the FADT names this port as the PM1 control register; reading it
            // and writing the sleep bits has no memory effects.
            unsafe {
                let old = port.read();
                port.write(value(old));
            }
        }
        Register::Memory(addr) => {
            if let Some(p) = mmio::<u16>(addr) {
                // SAFETY: `mmio` mapped the register's page uncached; the FADT names it
                // as the PM1 control register, aligned for its width.
                unsafe { p.write_volatile(value(p.read_volatile())) };
            }
        }
    }
}

fn write8(reg: Register, value: u8) {
    match reg {
        Register::Io(port) => {
            // SAFETY: the FADT names this port as the sleep control register; writing
            // it has no memory effects.
            unsafe { Port::<u8>::new(port).write(value) };
        }
        Register::Memory(addr) => {
            if let Some(p) = mmio::<u8>(addr) {
                // SAFETY: `mmio` mapped the register's page uncached; the FADT names it
                // as the sleep control register.
                unsafe { p.write_volatile(value) };
            }
        }
    }
}

/// A pointer to a device register at `addr`, its page mapped uncached; `None` (said on
/// the console) if it is misaligned, above 4 GiB or cannot be mapped.
fn mmio<T>(addr: u64) -> Option<*mut T> {
    let ok = addr.is_multiple_of(core::mem::size_of::<T>() as u64)
        && addr < 1 << 32
        && paging::map_mmio(addr);
    if !ok {
        let _ = writeln!(
            libos::console::emergency_writer(),
            "upcall: cannot map the ACPI register at {addr:#x}"
        );
    }
    ok.then_some(addr as *mut T)
}
