//! The CPUs the firmware lists in ACPI's MADT (pure; host-tested).
//!
//! RSDP (from PVH `start_info.rsdp_paddr`, or found by scanning the BIOS area
//! 0xE0000..0x100000 as the ACPI spec allows) → XSDT (or RSDT for ACPI 1.0) → the table
//! with signature `APIC` → its Processor Local APIC (type 0) and Processor Local x2APIC
//! (type 9) entries. Every length and checksum is checked: the tables come from the VMM
//! and a malformed one yields an [`Error`] (boot then goes on with one CPU), never a
//! panic or a read outside what the caller's [`PhysMem`] hands out.
#![forbid(unsafe_code)]

use core::fmt;

use libos::bytes::{le_u32, le_u64};

/// Reads physical memory (the boot identity map on the guest; a buffer in tests).
pub trait PhysMem {
    /// `len` bytes at `paddr`, or `None` if that range cannot be read.
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]>;
}

/// Where the ACPI spec says to scan for the RSDP when nobody told us.
pub const BIOS_AREA: core::ops::Range<u64> = 0xe_0000..0x10_0000;
const RSDP_SIG: &[u8; 8] = b"RSD PTR ";
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;
const SDT_HEADER_LEN: usize = 36;
/// MADT: header, then u32 local APIC address and u32 flags, then entries.
const MADT_ENTRIES: usize = SDT_HEADER_LEN + 8;
/// Tables listed in an XSDT/RSDT that we look at, at most (a bound for hostile input).
const MAX_TABLES: usize = 256;
/// Largest table we accept (a bound for hostile input; real MADTs are < 4 KiB).
const MAX_TABLE_LEN: usize = 64 * 1024;

const LAPIC_ENABLED: u32 = 1;
const LAPIC_ONLINE_CAPABLE: u32 = 2;

/// What the MADT says about the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus {
    /// APIC IDs written to the caller's buffer, in table order (the boot CPU is
    /// normally first).
    pub count: usize,
    /// Usable CPUs that did not fit the buffer.
    pub dropped: usize,
    /// The local APIC's physical address as the MADT gives it.
    pub lapic_paddr: u32,
}

/// Why the CPU list could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No RSDP at the given address, nor in the BIOS area.
    NoRsdp,
    /// A table's memory could not be read.
    Unreadable(u64),
    /// A checksum does not add up (the named table).
    Checksum(&'static str),
    /// A length field is impossible (the named table).
    BadLength(&'static str),
    /// No table with signature `APIC`.
    NoMadt,
    /// A MADT entry is shorter than its type needs, or runs past the table.
    BadEntry {
        /// Byte offset of the entry in the MADT.
        offset: usize,
    },
    /// The MADT lists no usable CPU.
    NoCpus,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoRsdp => write!(f, "no ACPI RSDP found"),
            Error::Unreadable(pa) => write!(f, "ACPI table at {pa:#x} is not readable"),
            Error::Checksum(t) => write!(f, "ACPI {t} checksum mismatch"),
            Error::BadLength(t) => write!(f, "ACPI {t} has an impossible length"),
            Error::NoMadt => write!(f, "no ACPI MADT (APIC) table"),
            Error::BadEntry { offset } => write!(f, "malformed MADT entry at offset {offset}"),
            Error::NoCpus => write!(f, "the MADT lists no usable CPU"),
        }
    }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

/// The root table: (address, entry size 8 = XSDT or 4 = RSDT).
fn rsdp_at(mem: &dyn PhysMem, paddr: u64) -> Option<Result<(u64, usize), Error>> {
    let v1 = mem.read(paddr, RSDP_V1_LEN)?;
    if &v1[..8] != RSDP_SIG {
        return None;
    }
    if !checksum_ok(v1) {
        return Some(Err(Error::Checksum("RSDP")));
    }
    let revision = v1[15];
    if revision >= 2 {
        let Some(v2) = mem.read(paddr, RSDP_V2_LEN) else {
            return Some(Err(Error::Unreadable(paddr)));
        };
        let len = le_u32(v2, 20) as usize;
        if !(RSDP_V2_LEN..=1024).contains(&len) {
            return Some(Err(Error::BadLength("RSDP")));
        }
        let Some(full) = mem.read(paddr, len) else {
            return Some(Err(Error::Unreadable(paddr)));
        };
        if !checksum_ok(full) {
            return Some(Err(Error::Checksum("RSDP (extended)")));
        }
        let xsdt = le_u64(v2, 24);
        if xsdt != 0 {
            return Some(Ok((xsdt, 8)));
        }
    }
    Some(Ok((u64::from(le_u32(v1, 16)), 4)))
}

/// Finds the RSDP at `hint` (if non-zero) or by scanning the BIOS area.
fn find_root(mem: &dyn PhysMem, hint: u64) -> Result<(u64, usize), Error> {
    if hint != 0 {
        return rsdp_at(mem, hint).unwrap_or(Err(Error::NoRsdp));
    }
    BIOS_AREA
        .step_by(16)
        .find_map(|pa| rsdp_at(mem, pa))
        .unwrap_or(Err(Error::NoRsdp))
}

/// A whole table at `paddr` after checking its header length and checksum.
fn table<'m>(mem: &'m dyn PhysMem, paddr: u64, name: &'static str) -> Result<&'m [u8], Error> {
    let header = mem
        .read(paddr, SDT_HEADER_LEN)
        .ok_or(Error::Unreadable(paddr))?;
    let len = le_u32(header, 4) as usize;
    if !(SDT_HEADER_LEN..=MAX_TABLE_LEN).contains(&len) {
        return Err(Error::BadLength(name));
    }
    let t = mem.read(paddr, len).ok_or(Error::Unreadable(paddr))?;
    if !checksum_ok(t) {
        return Err(Error::Checksum(name));
    }
    Ok(t)
}

/// The first table with signature `sig` the XSDT (or RSDT) lists, length and checksum
/// checked (`name` names it in errors); `Ok(None)` if none is listed.
///
/// `rsdp_hint` is PVH's `rsdp_paddr` (0 = scan the BIOS area).
pub fn find_table<'m>(
    mem: &'m dyn PhysMem,
    rsdp_hint: u64,
    sig: &[u8; 4],
    name: &'static str,
) -> Result<Option<&'m [u8]>, Error> {
    let (root, entry) = find_root(mem, rsdp_hint)?;
    let root = table(mem, root, if entry == 8 { "XSDT" } else { "RSDT" })?;
    let found = root[SDT_HEADER_LEN..]
        .chunks_exact(entry)
        .take(MAX_TABLES)
        .map(|e| {
            if entry == 8 {
                le_u64(e, 0)
            } else {
                u64::from(le_u32(e, 0))
            }
        })
        .find(|&pa| mem.read(pa, 4).is_some_and(|s| s == sig));
    found.map(|pa| table(mem, pa, name)).transpose()
}

/// Writes the APIC IDs of the usable CPUs into `out`.
///
/// `rsdp_hint` is PVH's `rsdp_paddr` (0 = scan the BIOS area).
pub fn cpus(mem: &dyn PhysMem, rsdp_hint: u64, out: &mut [u32]) -> Result<Cpus, Error> {
    let madt = find_table(mem, rsdp_hint, b"APIC", "MADT")?.ok_or(Error::NoMadt)?;
    parse_madt(madt, out)
}

/// Parses a whole MADT (header included; checksum already checked by the caller).
pub fn parse_madt(madt: &[u8], out: &mut [u32]) -> Result<Cpus, Error> {
    if madt.len() < MADT_ENTRIES {
        return Err(Error::BadLength("MADT"));
    }
    let mut cpus = Cpus {
        count: 0,
        dropped: 0,
        lapic_paddr: le_u32(madt, SDT_HEADER_LEN),
    };
    let mut off = MADT_ENTRIES;
    while off < madt.len() {
        let bad = Error::BadEntry { offset: off };
        let rest = &madt[off..];
        if rest.len() < 2 {
            return Err(bad);
        }
        let (kind, len) = (rest[0], rest[1] as usize);
        if len < 2 || len > rest.len() {
            return Err(bad);
        }
        let e = &rest[..len];
        let usable = |flags: u32| flags & (LAPIC_ENABLED | LAPIC_ONLINE_CAPABLE) != 0;
        let apic_id = match kind {
            // Processor Local APIC: uid u8, apic id u8, flags u32.
            0 if len < 8 => return Err(bad),
            0 => usable(le_u32(e, 4)).then_some(u32::from(e[3])),
            // Processor Local x2APIC: reserved u16, x2apic id u32, flags u32, uid u32.
            9 if len < 16 => return Err(bad),
            9 => usable(le_u32(e, 8)).then_some(le_u32(e, 4)),
            _ => None,
        };
        if let Some(id) = apic_id {
            match out.get_mut(cpus.count) {
                Some(slot) => {
                    *slot = id;
                    cpus.count += 1;
                }
                None => cpus.dropped += 1,
            }
        }
        off += len;
    }
    if cpus.count == 0 {
        return Err(Error::NoCpus);
    }
    Ok(cpus)
}

/// Building blocks of ACPI tables for host tests (here and in `acpi_sleep`).
#[cfg(test)]
pub(crate) mod test_tables {
    use super::{PhysMem, RSDP_SIG, RSDP_V1_LEN, RSDP_V2_LEN, SDT_HEADER_LEN};

    /// Guest memory: one buffer at `base`.
    pub struct Mem {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl PhysMem for Mem {
        fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
            let start = usize::try_from(paddr.checked_sub(self.base)?).ok()?;
            self.bytes.get(start..start.checked_add(len)?)
        }
    }

    /// Sets byte `at` so that `t` sums to zero.
    pub fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        t[at] = 0u8.wrapping_sub(sum);
    }

    impl Mem {
        /// Copies `b` into the buffer at physical address `at`.
        pub fn put(&mut self, at: u64, b: &[u8]) {
            let i = (at - self.base) as usize;
            self.bytes[i..i + b.len()].copy_from_slice(b);
        }
    }

    /// An RSDP pointing at the root table at `root_at`: v2 with both addresses when
    /// `xsdt`, else v1 (RSDT only); both checksums set.
    pub fn rsdp(root_at: u64, xsdt: bool) -> Vec<u8> {
        let mut rsdp = vec![0u8; RSDP_V2_LEN];
        rsdp[..8].copy_from_slice(RSDP_SIG);
        rsdp[15] = if xsdt { 2 } else { 0 };
        rsdp[16..20].copy_from_slice(&(root_at as u32).to_le_bytes());
        rsdp[20..24].copy_from_slice(&(RSDP_V2_LEN as u32).to_le_bytes());
        if xsdt {
            rsdp[24..32].copy_from_slice(&root_at.to_le_bytes());
        }
        fix_checksum(&mut rsdp[..RSDP_V1_LEN], 8);
        fix_checksum(&mut rsdp, 32);
        rsdp
    }

    /// A system description table `sig` with `body`, length and checksum set.
    pub fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; SDT_HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t, 9);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::test_tables::{Mem, fix_checksum, rsdp, sdt};
    use super::*;
    use proptest::prelude::*;

    fn lapic(apic_id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, apic_id, apic_id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32) -> Vec<u8> {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&id.to_le_bytes());
        e
    }

    fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = 0xfee0_0000u32.to_le_bytes().to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        for e in entries {
            body.extend_from_slice(e);
        }
        sdt(b"APIC", &body)
    }

    /// RSDP (v2) at 0xe0000 → XSDT → [FACP dummy, MADT], laid out in one buffer.
    fn machine(madt: Vec<u8>, xsdt: bool) -> Mem {
        let base = 0xe0000u64;
        let facp_at = base + 0x100;
        let madt_at = base + 0x200;
        let root_at = base + 0x80;
        let facp = sdt(b"FACP", &[0; 8]);
        let root = if xsdt {
            sdt(
                b"XSDT",
                &[facp_at.to_le_bytes(), madt_at.to_le_bytes()].concat(),
            )
        } else {
            let (f, m) = (facp_at as u32, madt_at as u32);
            sdt(b"RSDT", &[f.to_le_bytes(), m.to_le_bytes()].concat())
        };
        let mut mem = Mem {
            base,
            bytes: vec![0u8; 0x1000],
        };
        mem.put(base + 0x40, &rsdp(root_at, xsdt));
        mem.put(root_at, &root);
        mem.put(facp_at, &facp);
        mem.put(madt_at, &madt);
        mem
    }

    #[test]
    fn finds_cpus_by_scan_and_by_hint() {
        for xsdt in [true, false] {
            let m = machine(
                madt(&[
                    lapic(0, 1),
                    lapic(1, 1),
                    lapic(5, 0),
                    x2apic(300, 1),
                    lapic(2, 2),
                ]),
                xsdt,
            );
            let mut out = [0u32; 8];
            let c = cpus(&m, 0, &mut out).unwrap();
            assert_eq!((c.count, c.dropped, c.lapic_paddr), (4, 0, 0xfee0_0000));
            assert_eq!(&out[..4], &[0, 1, 300, 2]);
            assert_eq!(cpus(&m, 0xe0040, &mut out), Ok(c));
            assert_eq!(cpus(&m, 0xe0050, &mut out), Err(Error::NoRsdp));
        }
    }

    #[test]
    fn too_many_cpus_are_counted_not_written() {
        let m = machine(madt(&[lapic(0, 1), lapic(1, 1), lapic(2, 1)]), true);
        let mut out = [0u32; 2];
        let c = cpus(&m, 0, &mut out).unwrap();
        assert_eq!((c.count, c.dropped), (2, 1));
    }

    #[test]
    fn rejects_malformed_tables() {
        let mut out = [0u32; 4];
        // Entry length 0 would loop forever if accepted.
        let mut t = madt(&[lapic(0, 1)]);
        t[MADT_ENTRIES + 1] = 0;
        fix_checksum(&mut t, 9);
        assert_eq!(
            parse_madt(&t, &mut out),
            Err(Error::BadEntry {
                offset: MADT_ENTRIES
            })
        );
        // A short local-APIC entry.
        let t = madt(&[vec![0, 4, 0, 0]]);
        assert!(matches!(
            parse_madt(&t, &mut out),
            Err(Error::BadEntry { .. })
        ));
        // No enabled CPU.
        assert_eq!(
            parse_madt(&madt(&[lapic(0, 0)]), &mut out),
            Err(Error::NoCpus)
        );
        // A corrupted byte in the MADT breaks its checksum.
        let mut m = machine(madt(&[lapic(0, 1)]), true);
        m.bytes[0x200 + 40] ^= 1;
        assert_eq!(cpus(&m, 0, &mut out), Err(Error::Checksum("MADT")));
        // No memory at all.
        let empty = Mem {
            base: 0,
            bytes: Vec::new(),
        };
        assert_eq!(cpus(&empty, 0, &mut out), Err(Error::NoRsdp));
    }

    proptest! {
        #[test]
        fn madt_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = [0u32; 4];
            let _ = parse_madt(&bytes, &mut out);
        }

        #[test]
        fn corrupted_machine_never_panics(flips in proptest::collection::vec((0usize..0x1000, any::<u8>()), 1..8)) {
            let mut m = machine(madt(&[lapic(0, 1), lapic(1, 1)]), true);
            for (i, v) in flips {
                m.bytes[i] = v;
            }
            let mut out = [0u32; 4];
            if let Ok(c) = cpus(&m, 0, &mut out) {
                prop_assert!(c.count >= 1 && c.count <= 4);
            }
        }

        #[test]
        fn lists_exactly_the_usable_cpus(entries in proptest::collection::vec((any::<u8>(), 0u32..4, any::<bool>()), 1..20)) {
            let raw: Vec<Vec<u8>> = entries
                .iter()
                .map(|&(id, flags, x2)| if x2 { x2apic(u32::from(id) + 256, flags) } else { lapic(id, flags) })
                .collect();
            let want: Vec<u32> = entries
                .iter()
                .filter(|e| e.1 & 3 != 0)
                .map(|&(id, _, x2)| if x2 { u32::from(id) + 256 } else { u32::from(id) })
                .collect();
            let m = machine(madt(&raw), true);
            let mut out = [0u32; 32];
            match cpus(&m, 0, &mut out) {
                Ok(c) => prop_assert_eq!(&out[..c.count], &want[..]),
                Err(e) => {
                    prop_assert_eq!(e, Error::NoCpus);
                    prop_assert!(want.is_empty());
                }
            }
        }
    }
}
