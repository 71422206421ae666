//! How to power the machine off the ACPI way (pure; host-tested).
//!
//! The FADT (signature `FACP`, found through the RSDP/XSDT walk of [`crate::madt`])
//! names the register that enters a sleep state:
//! - the PM1a (and PM1b) control block on full-ACPI machines (QEMU `-M pc`/`q35`: the
//!   PIIX4/ICH9 power-management I/O ports): write `SLP_TYP << 10 | SLP_EN` (bit 13);
//! - the sleep control register on hardware-reduced machines (FADT flag
//!   `HW_REDUCED_ACPI`; QEMU `-M microvm,acpi=on`: the Generic Event Device's
//!   register): write `SLP_TYP << 2 | SLP_EN` (bit 5).
//!
//! `SLP_TYP` for S5 (soft off) is the first (PM1a) and second (PM1b) element of the
//! DSDT's `\_S5` package. Reading it needs no AML interpreter: QEMU and every firmware
//! in common use declare it as `Name (_S5, Package () { ... })` with constant elements,
//! which is a fixed byte pattern. Where the DSDT has no such pattern, the value QEMU's
//! chipsets use is taken ([`DEFAULT_S5_PM1`], [`DEFAULT_S5_REDUCED`]).
//!
//! Every length and offset is checked: the tables come from the VMM, and a malformed
//! one yields an [`Error`] (the image then halts after printing its exit status),
//! never a panic or a read outside what [`PhysMem`] hands out.
#![forbid(unsafe_code)]

use core::fmt;

use libos::bytes::{le_u32, le_u64};

use crate::madt::{self, PhysMem};

/// `SLP_TYP` for S5 on QEMU's PIIX4 and ICH9 when the DSDT does not say.
pub const DEFAULT_S5_PM1: u8 = 0;
/// `SLP_TYP` for S5 on QEMU's Generic Event Device when the DSDT does not say.
pub const DEFAULT_S5_REDUCED: u8 = 5;

const SDT_HEADER_LEN: usize = 36;
/// Largest DSDT searched for `\_S5` (a bound for hostile input; QEMU's are < 16 KiB).
const MAX_DSDT_LEN: usize = 1 << 20;

// FADT field offsets (ACPI 6.x, table 5.9).
const FADT_DSDT: usize = 40;
const FADT_PM1A_CNT_BLK: usize = 64;
const FADT_PM1B_CNT_BLK: usize = 68;
const FADT_PM1_CNT_LEN: usize = 89;
const FADT_FLAGS: usize = 112;
const FADT_X_DSDT: usize = 140;
const FADT_X_PM1A_CNT_BLK: usize = 172;
const FADT_X_PM1B_CNT_BLK: usize = 184;
const FADT_SLEEP_CONTROL_REG: usize = 244;
/// The FADT of ACPI 1.0 ends after the reset register's predecessors; anything shorter
/// than the PM1 control length field cannot describe PM1 control.
const FADT_MIN_LEN: usize = FADT_PM1_CNT_LEN + 1;
const GAS_LEN: usize = 12;
const HW_REDUCED_ACPI: u32 = 1 << 20;

const PM1_SLP_EN: u16 = 1 << 13;
const SLEEP_CTL_SLP_EN: u8 = 1 << 5;

/// An address space a register lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// An I/O port.
    Io(u16),
    /// Memory-mapped, at this physical address.
    Memory(u64),
}

/// How to enter S5, as read from the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// Write `pm1_value(slp_typ)` (16 bits) to PM1a's control register, then to
    /// PM1b's if there is one (with its own `SLP_TYP`).
    Pm1 {
        /// PM1a control.
        a: Register,
        /// PM1b control, if the FADT names one.
        b: Option<Register>,
        /// `SLP_TYP` for S5: (PM1a, PM1b).
        slp_typ: (u8, u8),
        /// Whether `slp_typ` came from the DSDT (else the default).
        from_dsdt: bool,
    },
    /// Write `sleep_control_value(slp_typ)` (8 bits) to the sleep control register.
    SleepControl {
        /// The hardware-reduced sleep control register.
        reg: Register,
        /// `SLP_TYP` for S5.
        slp_typ: u8,
        /// Whether `slp_typ` came from the DSDT (else the default).
        from_dsdt: bool,
    },
}

/// The PM1 control value that enters sleep type `slp_typ`, keeping the bits of `old`
/// other than `SLP_TYP` and `SLP_EN` (notably `SCI_EN`).
pub fn pm1_value(old: u16, slp_typ: u8) -> u16 {
    (old & !(0x7 << 10 | PM1_SLP_EN)) | u16::from(slp_typ & 7) << 10 | PM1_SLP_EN
}

/// The sleep control register value that enters sleep type `slp_typ`.
pub fn sleep_control_value(slp_typ: u8) -> u8 {
    (slp_typ & 7) << 2 | SLEEP_CTL_SLP_EN
}

/// Why there is no ACPI poweroff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Finding or reading the tables failed.
    Tables(madt::Error),
    /// The root table lists no FADT (`FACP`).
    NoFadt,
    /// The FADT is too short for the register it needs.
    FadtTooShort(usize),
    /// The FADT names no PM1a control block (or, hardware-reduced, no sleep control
    /// register).
    NoControlRegister,
    /// A register lies in an address space other than I/O or memory (GAS space ID).
    UnsupportedSpace(u8),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Tables(e) => e.fmt(f),
            Error::NoFadt => write!(f, "no ACPI FADT (FACP) table"),
            Error::FadtTooShort(len) => write!(f, "the ACPI FADT is too short ({len} bytes)"),
            Error::NoControlRegister => write!(f, "the ACPI FADT names no sleep control register"),
            Error::UnsupportedSpace(s) => {
                write!(f, "an ACPI sleep register is in address space {s}")
            }
        }
    }
}

impl From<madt::Error> for Error {
    fn from(e: madt::Error) -> Self {
        Error::Tables(e)
    }
}

/// Reads the tables and says how to power off.
///
/// `rsdp_hint` is PVH's `rsdp_paddr` (0 = scan the BIOS area).
pub fn poweroff(mem: &dyn PhysMem, rsdp_hint: u64) -> Result<PowerOff, Error> {
    let fadt = madt::find_table(mem, rsdp_hint, b"FACP", "FADT")?.ok_or(Error::NoFadt)?;
    let dsdt = dsdt_paddr(fadt).and_then(|pa| dsdt_at(mem, pa));
    let s5 = dsdt.and_then(s5_slp_typ);
    parse_fadt(fadt, s5)
}

/// Decides from a whole FADT (checksum checked by the caller) and the DSDT's `\_S5`
/// values, if found.
pub fn parse_fadt(fadt: &[u8], s5: Option<(u8, u8)>) -> Result<PowerOff, Error> {
    if fadt.len() < FADT_MIN_LEN {
        return Err(Error::FadtTooShort(fadt.len()));
    }
    let reduced = fadt.len() >= FADT_FLAGS + 4 && le_u32(fadt, FADT_FLAGS) & HW_REDUCED_ACPI != 0;
    if reduced {
        if fadt.len() < FADT_SLEEP_CONTROL_REG + GAS_LEN {
            return Err(Error::FadtTooShort(fadt.len()));
        }
        let reg = gas(&fadt[FADT_SLEEP_CONTROL_REG..])?.ok_or(Error::NoControlRegister)?;
        return Ok(PowerOff::SleepControl {
            reg,
            slp_typ: s5.map_or(DEFAULT_S5_REDUCED, |s| s.0),
            from_dsdt: s5.is_some(),
        });
    }
    let x_blk = |off: usize| -> Result<Option<Register>, Error> {
        if fadt.len() >= off + GAS_LEN {
            gas(&fadt[off..])
        } else {
            Ok(None)
        }
    };
    let io_blk = |off: usize| -> Option<Register> {
        u16::try_from(le_u32(fadt, off))
            .ok()
            .filter(|&p| p != 0)
            .map(Register::Io)
    };
    // The extended (64-bit GAS) field wins where set, as the spec says.
    let a = x_blk(FADT_X_PM1A_CNT_BLK)?
        .or_else(|| io_blk(FADT_PM1A_CNT_BLK))
        .ok_or(Error::NoControlRegister)?;
    let b = x_blk(FADT_X_PM1B_CNT_BLK)?.or_else(|| io_blk(FADT_PM1B_CNT_BLK));
    Ok(PowerOff::Pm1 {
        a,
        b,
        slp_typ: s5.unwrap_or((DEFAULT_S5_PM1, DEFAULT_S5_PM1)),
        from_dsdt: s5.is_some(),
    })
}

/// A Generic Address Structure's register; `None` if its address is 0 (not present).
fn gas(g: &[u8]) -> Result<Option<Register>, Error> {
    let (space, addr) = (g[0], le_u64(g, 4));
    if addr == 0 {
        return Ok(None);
    }
    match space {
        0 => Ok(Some(Register::Memory(addr))),
        1 => u16::try_from(addr)
            .map(|p| Some(Register::Io(p)))
            .map_err(|_| Error::UnsupportedSpace(space)),
        s => Err(Error::UnsupportedSpace(s)),
    }
}

/// The DSDT's address: `X_DSDT` where present and non-zero, else `DSDT`.
fn dsdt_paddr(fadt: &[u8]) -> Option<u64> {
    let x = (fadt.len() >= FADT_X_DSDT + 8)
        .then(|| le_u64(fadt, FADT_X_DSDT))
        .filter(|&a| a != 0);
    let legacy = (fadt.len() >= FADT_DSDT + 4)
        .then(|| u64::from(le_u32(fadt, FADT_DSDT)))
        .filter(|&a| a != 0);
    x.or(legacy)
}

/// The whole DSDT at `paddr`, if its header is sane and its checksum adds up.
fn dsdt_at(mem: &dyn PhysMem, paddr: u64) -> Option<&[u8]> {
    let header = mem.read(paddr, SDT_HEADER_LEN)?;
    let len = le_u32(header, 4) as usize;
    if &header[..4] != b"DSDT" || !(SDT_HEADER_LEN..=MAX_DSDT_LEN).contains(&len) {
        return None;
    }
    let t = mem.read(paddr, len)?;
    (t.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0).then_some(t)
}

/// `SLP_TYP` (PM1a, PM1b) from the first `Name (_S5, Package () {a, b, ...})` in a
/// DSDT's AML whose two first elements are integer constants in 0..=7.
pub fn s5_slp_typ(dsdt: &[u8]) -> Option<(u8, u8)> {
    const NAME_OP: u8 = 0x08;
    const ROOT_PREFIX: u8 = b'\\';
    const PACKAGE_OP: u8 = 0x12;
    let aml = dsdt.get(SDT_HEADER_LEN..)?;
    aml.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"_S5_")
        .filter(|&(i, _)| {
            let before = |n: usize| i.checked_sub(n).and_then(|j| aml.get(j)).copied();
            before(1) == Some(NAME_OP)
                || (before(1) == Some(ROOT_PREFIX) && before(2) == Some(NAME_OP))
        })
        .find_map(|(i, _)| {
            let rest = aml.get(i + 4..)?;
            if *rest.first()? != PACKAGE_OP {
                return None;
            }
            // PkgLength: bits 7:6 of the lead byte count the bytes that follow it.
            let pkg_len_bytes = 1 + usize::from(rest.get(1)? >> 6);
            let num_elements = 1;
            let mut elems = rest.get(1 + pkg_len_bytes + num_elements..)?;
            let a = integer(&mut elems)?;
            let b = integer(&mut elems)?;
            Some((a, b))
        })
}

/// One AML integer constant at the front of `aml` (consumed), if it is in 0..=7.
fn integer(aml: &mut &[u8]) -> Option<u8> {
    const ZERO_OP: u8 = 0x00;
    const ONE_OP: u8 = 0x01;
    const BYTE_PREFIX: u8 = 0x0a;
    const WORD_PREFIX: u8 = 0x0b;
    const DWORD_PREFIX: u8 = 0x0c;
    const QWORD_PREFIX: u8 = 0x0e;
    let (&op, rest) = aml.split_first()?;
    let width = match op {
        ZERO_OP | ONE_OP => 0,
        BYTE_PREFIX => 1,
        WORD_PREFIX => 2,
        DWORD_PREFIX => 4,
        QWORD_PREFIX => 8,
        _ => return None,
    };
    let bytes = rest.get(..width)?;
    let value = match op {
        ZERO_OP => 0,
        ONE_OP => 1,
        _ => bytes.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b)),
    };
    *aml = &rest[width..];
    u8::try_from(value).ok().filter(|&v| v <= 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::madt::test_tables::{Mem, fix_checksum, rsdp, sdt};
    use proptest::prelude::*;

    fn put_gas(f: &mut [u8], off: usize, space: u8, width: u8, addr: u64) {
        f[off] = space;
        f[off + 1] = width;
        f[off + 4..off + 12].copy_from_slice(&addr.to_le_bytes());
    }

    /// A FADT as QEMU 7.2 builds it for `-M pc` (PIIX4 PM at 0x600): revision 3,
    /// 244 bytes, PM1a control at 0x604 in both the legacy and the extended field.
    fn fadt_pc(dsdt: u64) -> Vec<u8> {
        let mut f = vec![0u8; 244];
        f[..4].copy_from_slice(b"FACP");
        f[FADT_DSDT..FADT_DSDT + 4].copy_from_slice(&(dsdt as u32).to_le_bytes());
        f[FADT_PM1A_CNT_BLK..FADT_PM1A_CNT_BLK + 4].copy_from_slice(&0x604u32.to_le_bytes());
        f[FADT_PM1_CNT_LEN] = 2;
        put_gas(&mut f, FADT_X_PM1A_CNT_BLK, 1, 16, 0x604);
        let len = f.len() as u32;
        f[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut f, 9);
        f
    }

    /// A hardware-reduced FADT (QEMU `-M microvm,acpi=on`): sleep control register in
    /// memory.
    fn fadt_reduced(dsdt: u64, ctl: u64) -> Vec<u8> {
        let mut f = vec![0u8; 276];
        f[..4].copy_from_slice(b"FACP");
        f[FADT_FLAGS..FADT_FLAGS + 4].copy_from_slice(&HW_REDUCED_ACPI.to_le_bytes());
        f[FADT_X_DSDT..FADT_X_DSDT + 8].copy_from_slice(&dsdt.to_le_bytes());
        put_gas(&mut f, FADT_SLEEP_CONTROL_REG, 0, 8, ctl);
        let len = f.len() as u32;
        f[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut f, 9);
        f
    }

    /// `Scope (\) { Name (_S5, Package (0x04) { 0x05, Zero, Zero, Zero }) }`, as
    /// QEMU's microvm DSDT has it, behind some unrelated AML mentioning `_S5_`.
    fn dsdt_s5(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut aml = vec![0x10, 0x05, b'\\', b'_', b'S', b'5', b'_']; // a decoy Scope
        aml.extend_from_slice(&[0x08, b'_', b'S', b'5', b'_', 0x12]);
        let mut pkg = vec![0x04];
        pkg.extend_from_slice(a);
        pkg.extend_from_slice(b);
        pkg.extend_from_slice(&[0x00, 0x00]);
        aml.push(pkg.len() as u8 + 1);
        aml.extend_from_slice(&pkg);
        sdt(b"DSDT", &aml)
    }

    /// RSDP v2 at 0xe0040 → XSDT → [FADT, MADT-ish] in one buffer; DSDT at +0x800.
    fn machine(fadt: impl Fn(u64) -> Vec<u8>, dsdt: Vec<u8>) -> Mem {
        let base = 0xe0000u64;
        let (root_at, fadt_at, other_at, dsdt_at) =
            (base + 0x80, base + 0x100, base + 0x400, base + 0x800);
        let root = sdt(
            b"XSDT",
            &[other_at.to_le_bytes(), fadt_at.to_le_bytes()].concat(),
        );
        let mut mem = Mem {
            base,
            bytes: vec![0u8; 0x1000],
        };
        mem.put(base + 0x40, &rsdp(root_at, true));
        mem.put(root_at, &root);
        mem.put(fadt_at, &fadt(dsdt_at));
        mem.put(other_at, &sdt(b"APIC", &[0; 8]));
        mem.put(dsdt_at, &dsdt);
        mem
    }

    #[test]
    fn pc_uses_pm1a_and_the_dsdt_value() {
        let m = machine(fadt_pc, dsdt_s5(&[0x0a, 0x03], &[0x01]));
        assert_eq!(
            poweroff(&m, 0),
            Ok(PowerOff::Pm1 {
                a: Register::Io(0x604),
                b: None,
                slp_typ: (3, 1),
                from_dsdt: true,
            })
        );
    }

    #[test]
    fn microvm_uses_the_sleep_control_register() {
        let m = machine(
            |d| fadt_reduced(d, 0xfea0_0204),
            dsdt_s5(&[0x0a, 0x05], &[0x00]),
        );
        assert_eq!(
            poweroff(&m, 0xe0040),
            Ok(PowerOff::SleepControl {
                reg: Register::Memory(0xfea0_0204),
                slp_typ: 5,
                from_dsdt: true,
            })
        );
    }

    #[test]
    fn defaults_without_s5() {
        let m = machine(fadt_pc, sdt(b"DSDT", &[0x08, b'_', b'S', b'4', b'_']));
        assert!(matches!(
            poweroff(&m, 0),
            Ok(PowerOff::Pm1 {
                slp_typ: (0, 0),
                from_dsdt: false,
                ..
            })
        ));
        let m = machine(|d| fadt_reduced(d, 0x1234), sdt(b"DSDT", &[]));
        assert!(matches!(
            poweroff(&m, 0),
            Ok(PowerOff::SleepControl {
                slp_typ: DEFAULT_S5_REDUCED,
                from_dsdt: false,
                ..
            })
        ));
        // A DSDT with a broken checksum is not trusted.
        let mut d = dsdt_s5(&[0x0a, 0x03], &[0x01]);
        d[40] ^= 0x55;
        let m = machine(fadt_pc, d);
        assert!(matches!(
            poweroff(&m, 0),
            Ok(PowerOff::Pm1 {
                from_dsdt: false,
                ..
            })
        ));
    }

    #[test]
    fn values() {
        assert_eq!(pm1_value(0x0001, 0), 0x2001);
        assert_eq!(pm1_value(0xffff, 5), 0xf7ff);
        assert_eq!(sleep_control_value(5), 0x34);
    }

    #[test]
    fn s5_integers() {
        let d = |a: &[u8], b: &[u8]| s5_slp_typ(&dsdt_s5(a, b));
        assert_eq!(d(&[0x00], &[0x01]), Some((0, 1)));
        assert_eq!(d(&[0x0b, 0x07, 0x00], &[0x0c, 2, 0, 0, 0]), Some((7, 2)));
        assert_eq!(d(&[0x0e, 4, 0, 0, 0, 0, 0, 0, 0], &[0x00]), Some((4, 0)));
        // Out of range, or not a constant.
        assert_eq!(d(&[0x0a, 0x08], &[0x00]), None);
        assert_eq!(d(&[0xff], &[0x00]), None);
        assert_eq!(d(&[0x0b, 0x00, 0x01], &[0x00]), None);
        // Truncated right after the name.
        assert_eq!(
            s5_slp_typ(&sdt(b"DSDT", &[0x08, b'_', b'S', b'5', b'_'])),
            None
        );
    }

    #[test]
    fn rejects_bad_fadts() {
        assert_eq!(parse_fadt(&[0; 40], None), Err(Error::FadtTooShort(40)));
        let mut f = fadt_pc(0);
        f[FADT_PM1A_CNT_BLK..FADT_PM1A_CNT_BLK + 4].fill(0);
        put_gas(&mut f, FADT_X_PM1A_CNT_BLK, 1, 16, 0);
        assert_eq!(parse_fadt(&f, None), Err(Error::NoControlRegister));
        put_gas(&mut f, FADT_X_PM1A_CNT_BLK, 2, 16, 0x604);
        assert_eq!(parse_fadt(&f, None), Err(Error::UnsupportedSpace(2)));
        put_gas(&mut f, FADT_X_PM1A_CNT_BLK, 1, 16, 0x1_0000);
        assert_eq!(parse_fadt(&f, None), Err(Error::UnsupportedSpace(1)));
        let mut r = fadt_reduced(0, 0);
        assert_eq!(parse_fadt(&r, None), Err(Error::NoControlRegister));
        r.truncate(200);
        assert_eq!(parse_fadt(&r, None), Err(Error::FadtTooShort(200)));
        // An ACPI 1.0 FADT (116 bytes): the legacy PM1a field.
        let mut f = fadt_pc(0);
        f.truncate(116);
        assert!(matches!(
            parse_fadt(&f, None),
            Ok(PowerOff::Pm1 {
                a: Register::Io(0x604),
                ..
            })
        ));
        let empty = Mem {
            base: 0,
            bytes: Vec::new(),
        };
        assert_eq!(poweroff(&empty, 0), Err(Error::Tables(madt::Error::NoRsdp)));
        let m = machine(|_| sdt(b"XXXX", &[0; 8]), sdt(b"DSDT", &[]));
        assert_eq!(poweroff(&m, 0), Err(Error::NoFadt));
    }

    proptest! {
        #[test]
        fn fadt_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), s5 in proptest::option::of((0u8..8, 0u8..8))) {
            let _ = parse_fadt(&bytes, s5);
        }

        #[test]
        fn s5_never_panics_and_stays_in_range(aml in proptest::collection::vec(prop_oneof![Just(0x08u8), Just(b'_'), Just(b'S'), Just(b'5'), Just(0x12), Just(0x0a), Just(0x0e), any::<u8>()], 0..200)) {
            let mut d = vec![0u8; SDT_HEADER_LEN];
            d.extend_from_slice(&aml);
            if let Some((a, b)) = s5_slp_typ(&d) {
                prop_assert!(a <= 7 && b <= 7);
            }
        }

        #[test]
        fn corrupted_machine_never_panics(flips in proptest::collection::vec((0usize..0x1000, any::<u8>()), 1..8), reduced in any::<bool>()) {
            let mut m = if reduced {
                machine(|d| fadt_reduced(d, 0xfea0_0204), dsdt_s5(&[0x0a, 0x05], &[0x00]))
            } else {
                machine(fadt_pc, dsdt_s5(&[0x00], &[0x00]))
            };
            for (i, v) in flips {
                m.bytes[i] = v;
            }
            if let Ok(p) = poweroff(&m, 0) {
                match p {
                    PowerOff::Pm1 { slp_typ: (a, b), .. } => prop_assert!(a <= 7 && b <= 7),
                    PowerOff::SleepControl { slp_typ, .. } => prop_assert!(slp_typ <= 7),
                }
            }
        }

        #[test]
        fn finds_any_valid_s5(a in 0u8..8, b in 0u8..8) {
            let m = machine(fadt_pc, dsdt_s5(&[0x0a, a], &[0x0a, b]));
            let p = poweroff(&m, 0);
            prop_assert!(matches!(p, Ok(PowerOff::Pm1 { slp_typ, from_dsdt: true, .. }) if slp_typ == (a, b)), "{:?}", p);
        }
    }
}
