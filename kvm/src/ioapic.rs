//! I/O APIC: routes a device's interrupt line (a GSI) to a vector on the boot CPU.
//!
//! `-M pc` has one I/O APIC (GSIs 0–23) at 0xfec00000; `-M microvm` may add a second
//! one (GSIs 24–47) at 0xfec10000 (`ioapic2`). Both are mapped uncached on first use.

use crate::paging;

/// The first I/O APIC's registers.
const IOAPIC_BASE: u64 = 0xfec0_0000;
/// microvm's second I/O APIC.
const IOAPIC2_BASE: u64 = 0xfec1_0000;
/// Pins per I/O APIC (QEMU's have 24).
const PINS: u32 = 24;

/// Register select and data window, by MMIO offset.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// First redirection-table register (two 32-bit halves per pin).
const REDTBL: u32 = 0x10;
/// Redirection entry: level-triggered (bit 15); masked (bit 16).
const LEVEL: u32 = 1 << 15;
const MASKED: u32 = 1 << 16;

/// Why a line cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchLine(pub u32);

impl core::fmt::Display for NoSuchLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "interrupt line {} is beyond the I/O APICs (0-{})",
            self.0,
            2 * PINS - 1
        )
    }
}

fn read(base: u64, reg: u32) -> u32 {
    // SAFETY: as in `write`.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

/// Whether microvm's second I/O APIC (GSIs 24–47) exists (`-M microvm,ioapic2=on`,
/// QEMU's default): its version register reads as all ones when nothing is there.
pub fn second_present() -> bool {
    const VERSION: u32 = 1;
    if !paging::map_mmio(IOAPIC2_BASE) {
        return false;
    }
    let _irqs = libos::irqflags::IrqGuard::new();
    read(IOAPIC2_BASE, VERSION) != u32::MAX
}

fn write(base: u64, reg: u32, value: u32) {
    // SAFETY: `base` is an I/O APIC's register window, mapped uncached by `route`;
    // IOREGSEL/IOWIN are its 32-bit select and data registers. Callers run with irqs
    // off or once at driver start-up, so the select-then-write pair is not interleaved
    // on this single CPU.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
    }
}

/// Delivers interrupt line `gsi` (level-triggered, active high, as QEMU's virtio
/// devices drive it) to `vector` on the CPU with local APIC id `apic_id`.
///
/// Context: task context during driver start-up, before the device may interrupt.
pub fn route(gsi: u32, vector: u8, apic_id: u8) -> Result<(), NoSuchLine> {
    let (base, pin) = match gsi {
        g if g < PINS => (IOAPIC_BASE, g),
        g if g < 2 * PINS => (IOAPIC2_BASE, g - PINS),
        g => return Err(NoSuchLine(g)),
    };
    if !paging::map_mmio(base) {
        return Err(NoSuchLine(gsi));
    }
    let _irqs = libos::irqflags::IrqGuard::new();
    write(base, REDTBL + 2 * pin, MASKED);
    write(base, REDTBL + 2 * pin + 1, u32::from(apic_id) << 24);
    write(base, REDTBL + 2 * pin, LEVEL | u32::from(vector));
    Ok(())
}
