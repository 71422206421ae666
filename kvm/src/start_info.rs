//! The PVH boot structure `hvm_start_info` and its memory map (pure; host-tested).
//!
//! Layout from Xen's `public/arch-x86/hvm/start_info.h` (QEMU fills version 1):
//!
//! ```text
//! 0  u32 magic (0x336ec578)   4  u32 version      8  u32 flags     12 u32 nr_modules
//! 16 u64 modlist_paddr        24 u64 cmdline_paddr                 32 u64 rsdp_paddr
//! 40 u64 memmap_paddr         48 u32 memmap_entries                52 u32 reserved
//! memmap entry (24 bytes): u64 addr, u64 size, u32 type (1 = RAM), u32 reserved
//! ```
#![forbid(unsafe_code)]

use core::fmt;

use libos::bytes::{le_u32, le_u64};

use libos::memory::Region;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Bytes of the version-1 header.
pub const HEADER_LEN: usize = 56;
/// Bytes of one memory-map entry.
pub const MEMMAP_ENTRY_LEN: usize = 24;
/// Memory-map entry type for usable RAM.
pub const TYPE_RAM: u32 = 1;

/// The fields of `hvm_start_info` the boot code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    /// Structure version (1 carries the memory map).
    pub version: u32,
    /// Physical address of the NUL-terminated command line (0 if none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0 if the VMM did not say).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map.
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
}

/// Malformed boot information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the header needs.
    Truncated,
    /// `magic` is not [`MAGIC`]: not booted through PVH.
    BadMagic(u32),
    /// Version 0 has no memory map, which Upcall needs.
    NoMemoryMap,
    /// The memory map lists no RAM.
    NoRam,
    /// The command line does not start below 4 GiB, where boot data must lie.
    CmdlineAbove4G(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "hvm_start_info truncated"),
            Error::BadMagic(m) => {
                write!(
                    f,
                    "hvm_start_info magic is {m:#x}, want {MAGIC:#x} (not a PVH boot?)"
                )
            }
            Error::NoMemoryMap => write!(f, "hvm_start_info version 0 has no memory map"),
            Error::NoRam => write!(f, "the PVH memory map lists no RAM"),
            Error::CmdlineAbove4G(pa) => {
                write!(f, "the command line at {pa:#x} is not below 4 GiB")
            }
        }
    }
}

/// How many bytes of command line may be read at physical `pa` (non-zero): up to `max`,
/// and never past 4 GiB (all the boot page tables map).
pub fn cmdline_window(pa: u64, max: usize) -> Result<usize, Error> {
    const FOUR_GIB: u64 = 1 << 32;
    let below = FOUR_GIB
        .checked_sub(pa)
        .filter(|&n| n > 0)
        .ok_or(Error::CmdlineAbove4G(pa))?;
    Ok(below.min(max as u64) as usize)
}

/// Parses the header.
pub fn parse(header: &[u8]) -> Result<StartInfo, Error> {
    if header.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    let magic = le_u32(header, 0);
    if magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let version = le_u32(header, 4);
    if version < 1 {
        return Err(Error::NoMemoryMap);
    }
    Ok(StartInfo {
        version,
        cmdline_paddr: le_u64(header, 24),
        rsdp_paddr: le_u64(header, 32),
        memmap_paddr: le_u64(header, 40),
        memmap_entries: le_u32(header, 48),
    })
}

/// Extracts the RAM entries of a memory map into `out`; returns how many were written.
///
/// Entries past `out.len()` are ignored; a trailing partial entry is ignored.
pub fn ram_regions(memmap: &[u8], out: &mut [Region]) -> Result<usize, Error> {
    let mut n = 0;
    for e in memmap.chunks_exact(MEMMAP_ENTRY_LEN) {
        let (addr, size, ty) = (le_u64(e, 0), le_u64(e, 8), le_u32(e, 16));
        if ty == TYPE_RAM && size > 0 && n < out.len() {
            out[n] = Region::from_len(addr, size);
            n += 1;
        }
    }
    if n == 0 { Err(Error::NoRam) } else { Ok(n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn command_line_window_stays_below_4_gib() {
        assert_eq!(cmdline_window(0x1000, 2048), Ok(2048));
        assert_eq!(cmdline_window((1 << 32) - 10, 2048), Ok(10));
        assert_eq!(
            cmdline_window(1 << 32, 2048),
            Err(Error::CmdlineAbove4G(1 << 32))
        );
        assert_eq!(
            cmdline_window(u64::MAX, 2048),
            Err(Error::CmdlineAbove4G(u64::MAX))
        );
    }

    fn header(magic: u32, version: u32, cmdline: u64, memmap: u64, n: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..8].copy_from_slice(&version.to_le_bytes());
        h[24..32].copy_from_slice(&cmdline.to_le_bytes());
        h[40..48].copy_from_slice(&memmap.to_le_bytes());
        h[48..52].copy_from_slice(&n.to_le_bytes());
        h
    }

    fn entry(addr: u64, size: u64, ty: u32) -> Vec<u8> {
        [
            &addr.to_le_bytes()[..],
            &size.to_le_bytes(),
            &ty.to_le_bytes(),
            &[0; 4],
        ]
        .concat()
    }

    #[test]
    fn parses_qemu_like_info() {
        let h = header(MAGIC, 1, 0x7000, 0x8000, 3);
        let s = parse(&h).unwrap();
        assert_eq!(
            (s.cmdline_paddr, s.memmap_paddr, s.memmap_entries),
            (0x7000, 0x8000, 3)
        );
        let map = [
            entry(0, 0x9fc00, 1),
            entry(0xf0000, 0x10000, 2),
            entry(0x100000, 0x7f00000, 1),
        ]
        .concat();
        let mut out = [Region::default(); 4];
        assert_eq!(ram_regions(&map, &mut out), Ok(2));
        assert_eq!(
            out[1],
            Region {
                start: 0x100000,
                end: 0x8000000
            }
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(&[0; 10]), Err(Error::Truncated));
        assert_eq!(
            parse(&header(0x1234, 1, 0, 0, 0)),
            Err(Error::BadMagic(0x1234))
        );
        assert_eq!(parse(&header(MAGIC, 0, 0, 0, 0)), Err(Error::NoMemoryMap));
        let mut out = [Region::default(); 4];
        assert_eq!(ram_regions(&entry(0, 4096, 2), &mut out), Err(Error::NoRam));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let mut out = [Region::default(); 3];
            let _ = ram_regions(&bytes, &mut out);
        }

        #[test]
        fn ram_entries_round_trip(entries in proptest::collection::vec((any::<u64>(), 1u64..1 << 40, 1u32..6), 1..10)) {
            let map: Vec<u8> = entries.iter().flat_map(|&(a, s, t)| entry(a, s, t)).collect();
            let mut out = [Region::default(); 16];
            let want: Vec<Region> = entries.iter().filter(|e| e.2 == TYPE_RAM).map(|&(a, s, _)| Region::from_len(a, s)).collect();
            match ram_regions(&map, &mut out) {
                Ok(n) => prop_assert_eq!(&out[..n], &want[..]),
                Err(e) => { prop_assert_eq!(e, Error::NoRam); prop_assert!(want.is_empty()); }
            }
        }
    }
}
