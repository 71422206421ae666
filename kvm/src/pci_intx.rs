//! Which ISA interrupt a PCI function's INTx pin raises on QEMU's `-M pc` (i440FX with a
//! PIIX3 south bridge), pure and host-tested.
//!
//! The board wires pin `INTx` of the device in slot `s` to the PIIX3's PIRQ line
//! `(x + s - 1) mod 4` (QEMU's `pci_slot_get_pirq` for the i440FX, with `x` = 0 for
//! INTA), and the PIIX3 sends PIRQ line `n` to the ISA IRQ named by its PIRQ route
//! control register `0x60 + n` (function 00:01.0; bit 7 set = not routed). That IRQ
//! reaches the I/O APIC pin of the same number.
//!
//! The firmware also writes an IRQ into each function's Interrupt Line register, but
//! that is only its note, and qboot's note is wrong where its swizzle differs from the
//! board's: with the routes it sets (PIRQA-D = 10, 10, 11, 11), a function in slot 2 or
//! 4 (where libvirt puts a NIC when the domain has no video card) interrupts on one IRQ
//! while the line register names the other. So on a PIIX3 the route registers decide;
//! elsewhere (no PIIX3 at 00:01.0) the line register is all there is.
#![forbid(unsafe_code)]

use core::fmt;

/// The PIIX3 (and PIIX4) ISA bridge's ids, at device 1 function 0 on QEMU's `-M pc`.
const PIIX_IDS: [(u16, u16); 2] = [(0x8086, 0x7000), (0x8086, 0x7110)];
/// The bridge's slot on bus 0.
pub const PIIX_DEVICE: u8 = 1;
/// PIRQ route control registers, PIRQA..PIRQD.
const PIRQ_ROUTE: usize = 0x60;
/// In a route register: PIRQ not routed to any ISA IRQ.
const ROUTE_DISABLED: u8 = 0x80;
/// Configuration-space offsets of the function's Interrupt Line and Interrupt Pin.
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;

/// Why a function's INTx has no usable interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntxError {
    /// Interrupt Pin 0: the function has no INTx pin.
    NoPin,
    /// Interrupt Pin above 4 (INTD).
    BadPin(u8),
    /// The PIIX3 does not route the pin's PIRQ line (bit 7 of its route register).
    NotRouted {
        /// PIRQ line 0-3 (A-D).
        pirq: u8,
    },
    /// The PIIX3's route register names an IRQ it reserves (0-2, 8, 13).
    ReservedIrq(u8),
    /// No PIIX3, and the firmware left the Interrupt Line register unassigned.
    NoLine(u8),
}

impl IntxError {
    /// The reason, as a fixed text.
    pub fn why(self) -> &'static str {
        match self {
            IntxError::NoPin => "the function has no INTx pin",
            IntxError::BadPin(_) => "the function's Interrupt Pin register is beyond INTD",
            IntxError::NotRouted { .. } => "the PIIX3 does not route the pin's PIRQ line",
            IntxError::ReservedIrq(_) => "the PIIX3 routes the pin's PIRQ line to a reserved IRQ",
            IntxError::NoLine(_) => "firmware left the INTx line unassigned",
        }
    }
}

impl fmt::Display for IntxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why())
    }
}

/// Whether `(vendor, device)` is a PIIX ISA bridge whose PIRQ route registers decide.
pub fn is_piix(ids: (u16, u16)) -> bool {
    PIIX_IDS.contains(&ids)
}

/// The PIIX PIRQ line (0-3 = A-D) of pin `pin` (1-4 = INTA-INTD) in slot `slot`.
pub fn pirq(slot: u8, pin: u8) -> u8 {
    // (x + slot - 1) mod 4 with x = pin - 1, kept non-negative for slot 0.
    ((u32::from(pin) + u32::from(slot) + 2) % 4) as u8
}

/// The ISA IRQ (3-15) that the INTx pin of the function in slot `slot` with
/// configuration space `config` raises. `piix`: the configuration space of the PIIX
/// ISA bridge at 00:01.0 if there is one (see [`is_piix`]).
pub fn isa_irq(slot: u8, config: &[u8; 256], piix: Option<&[u8; 256]>) -> Result<u8, IntxError> {
    let pin = config[INTERRUPT_PIN];
    match pin {
        0 => return Err(IntxError::NoPin),
        5.. => return Err(IntxError::BadPin(pin)),
        _ => {}
    }
    let Some(piix) = piix else {
        let line = config[INTERRUPT_LINE];
        return if (1..16).contains(&line) {
            Ok(line)
        } else {
            Err(IntxError::NoLine(line))
        };
    };
    let pirq = pirq(slot, pin);
    let route = piix[PIRQ_ROUTE + usize::from(pirq)];
    if route & ROUTE_DISABLED != 0 {
        return Err(IntxError::NotRouted { pirq });
    }
    match route & 0x0f {
        irq @ (0..=2 | 8 | 13) => Err(IntxError::ReservedIrq(irq)),
        irq => Ok(irq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A PIIX3 with qboot's (and SeaBIOS's) routes: PIRQA-D = 10, 10, 11, 11.
    fn piix() -> [u8; 256] {
        let mut c = [0u8; 256];
        c[..4].copy_from_slice(&[0x86, 0x80, 0x00, 0x70]);
        c[PIRQ_ROUTE..PIRQ_ROUTE + 4].copy_from_slice(&[10, 10, 11, 11]);
        c
    }

    /// A function with INTA and the firmware's line note.
    fn function(line: u8) -> [u8; 256] {
        let mut c = [0u8; 256];
        c[INTERRUPT_PIN] = 1;
        c[INTERRUPT_LINE] = line;
        c
    }

    #[test]
    fn the_board_swizzle_is_qemus() {
        // Slot 1 INTA is PIRQA; each slot further moves one line on.
        assert_eq!(pirq(1, 1), 0);
        assert_eq!(pirq(2, 1), 1);
        assert_eq!(pirq(3, 1), 2);
        assert_eq!(pirq(4, 1), 3);
        assert_eq!(pirq(5, 1), 0);
        assert_eq!(pirq(2, 4), 0);
        assert_eq!(pirq(0, 1), 3);
        assert_eq!(pirq(31, 4), 1);
    }

    #[test]
    fn the_route_registers_win_over_qboots_line_note() {
        // What qboot wrote for a NIC in slot 2 (its swizzle is one slot off): 11. The
        // board raises PIRQB, which the PIIX3 sends to IRQ 10.
        assert_eq!(isa_irq(2, &function(11), Some(&piix())), Ok(10));
        // Slot 3, where qboot's note happens to be right.
        assert_eq!(isa_irq(3, &function(11), Some(&piix())), Ok(11));
        assert_eq!(isa_irq(4, &function(10), Some(&piix())), Ok(11));
        assert!(is_piix((0x8086, 0x7000)) && !is_piix((0x8086, 0x2918)));
    }

    #[test]
    fn without_a_piix_the_line_note_is_used() {
        assert_eq!(isa_irq(2, &function(11), None), Ok(11));
        assert_eq!(isa_irq(2, &function(0), None), Err(IntxError::NoLine(0)));
        assert_eq!(
            isa_irq(2, &function(0xff), None),
            Err(IntxError::NoLine(0xff))
        );
    }

    #[test]
    fn unrouted_reserved_and_missing_pins_are_errors() {
        let mut p = piix();
        p[PIRQ_ROUTE + 1] = 0x80 | 10;
        assert_eq!(
            isa_irq(2, &function(10), Some(&p)),
            Err(IntxError::NotRouted { pirq: 1 })
        );
        p[PIRQ_ROUTE + 1] = 2;
        assert_eq!(
            isa_irq(2, &function(10), Some(&p)),
            Err(IntxError::ReservedIrq(2))
        );
        let mut f = function(10);
        f[INTERRUPT_PIN] = 0;
        assert_eq!(isa_irq(2, &f, Some(&piix())), Err(IntxError::NoPin));
        f[INTERRUPT_PIN] = 9;
        assert_eq!(isa_irq(2, &f, Some(&piix())), Err(IntxError::BadPin(9)));
    }

    proptest! {
        /// Whatever both configuration spaces hold: no panic, and an IRQ that comes out
        /// is one the I/O APIC's ISA pins can take and the PIIX3 does not reserve.
        #[test]
        fn hostile_config_spaces_yield_usable_irqs_or_errors(
            slot in 0u8..32,
            config in proptest::collection::vec(any::<u8>(), 256),
            bridge in proptest::collection::vec(any::<u8>(), 256),
            has_piix: bool,
        ) {
            let config: [u8; 256] = config.try_into().unwrap();
            let bridge: [u8; 256] = bridge.try_into().unwrap();
            let r = isa_irq(slot, &config, has_piix.then_some(&bridge));
            if let Ok(irq) = r {
                prop_assert!((1..16).contains(&irq));
                if has_piix {
                    prop_assert!(![0, 1, 2, 8, 13].contains(&irq));
                    let pirq = pirq(slot, config[INTERRUPT_PIN]);
                    prop_assert_eq!(bridge[PIRQ_ROUTE + usize::from(pirq)] & 0x8f, irq);
                }
            }
        }
    }
}
