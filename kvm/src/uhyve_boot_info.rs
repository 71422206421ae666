//! uhyve's boot information, hermit-entry's `RawBootInfo` (pure; host-tested).
//!
//! Read from its bytes instead of through hermit-entry's `BootInfo::from`, which
//! unwraps (and so links the `Debug` formatting of `time`'s and `str`'s errors, about
//! 6 KB of `hello`) and panics on a boot time out of `time`'s range. We need three
//! fields. Layout of hermit-entry 0.10 (`#[repr(C)]`, x86-64):
//!
//! ```text
//! 0  u64 phys_addr_start     8  u64 phys_addr_end
//! 16 Option<NonZeroU16> serial_port_base       24 Option<NonZeroU64> device_tree (0 = none)
//! 32 RawLoadInfo (48 bytes: image range, TLS info)
//! 80 u32 platform tag (0 Multiboot, 1 Uhyve, 2 LinuxBootParams, 3 Fdt)
//! 88 Uhyve: bool has_pci   96 NonZeroU64 num_cpus   104 Option<NonZeroU32> cpu_freq
//!    112 [u8; 16] boot_time
//! ```
//!
//! (`kvm_uhyve_main` checks at compile time that `RawBootInfo` is [`LEN`] bytes.)
#![forbid(unsafe_code)]

use core::fmt;

use libos::bytes::{le_u32, le_u64};

/// Bytes of `RawBootInfo`.
pub const LEN: usize = 128;
const TAG_UHYVE: u32 = 1;

/// The fields of the boot information the uhyve boot path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UhyveBootInfo {
    /// Guest RAM, `start..end` physical.
    pub ram_start: u64,
    pub ram_end: u64,
    /// Physical address of the flattened device tree, if uhyve passed one.
    pub device_tree: Option<u64>,
    /// vCPUs uhyve started (every one enters `uhyve_start64`).
    pub num_cpus: u64,
}

/// Why the boot information cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer than [`LEN`] bytes.
    Short(usize),
    /// The platform is not uhyve (the tag found).
    NotUhyve(u32),
    /// `num_cpus` is 0.
    NoCpus,
    /// The RAM range is empty or reversed.
    BadRam { start: u64, end: u64 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Short(n) => write!(f, "uhyve boot info: {n} bytes, want {LEN}"),
            Error::NotUhyve(tag) => write!(
                f,
                "entered through the uhyve entry, but the boot info's platform is {tag}, not uhyve's"
            ),
            Error::NoCpus => write!(f, "uhyve boot info: 0 CPUs"),
            Error::BadRam { start, end } => {
                write!(f, "uhyve boot info: RAM {start:#x}..{end:#x} is empty")
            }
        }
    }
}

/// Parses the bytes of a `RawBootInfo`.
pub fn parse(raw: &[u8]) -> Result<UhyveBootInfo, Error> {
    if raw.len() < LEN {
        return Err(Error::Short(raw.len()));
    }
    let tag = le_u32(raw, 80);
    if tag != TAG_UHYVE {
        return Err(Error::NotUhyve(tag));
    }
    let (start, end) = (le_u64(raw, 0), le_u64(raw, 8));
    if start >= end {
        return Err(Error::BadRam { start, end });
    }
    let num_cpus = le_u64(raw, 96);
    if num_cpus == 0 {
        return Err(Error::NoCpus);
    }
    let device_tree = match le_u64(raw, 24) {
        0 => None,
        addr => Some(addr),
    };
    Ok(UhyveBootInfo {
        ram_start: start,
        ram_end: end,
        device_tree,
        num_cpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `RawBootInfo` as uhyve 0.10 writes it (hermit-entry's loader side).
    fn raw(tag: u32, start: u64, end: u64, fdt: u64, cpus: u64) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&start.to_le_bytes());
        b[8..16].copy_from_slice(&end.to_le_bytes());
        b[16..18].copy_from_slice(&0x3f8u16.to_le_bytes());
        b[24..32].copy_from_slice(&fdt.to_le_bytes());
        b[32..40].copy_from_slice(&0x10_0000u64.to_le_bytes());
        b[80..84].copy_from_slice(&tag.to_le_bytes());
        b[88] = 1;
        b[96..104].copy_from_slice(&cpus.to_le_bytes());
        b[104..108].copy_from_slice(&2_000_000u32.to_le_bytes());
        b[112..128].copy_from_slice(&1_700_000_000_000_000_000i128.to_ne_bytes());
        b
    }

    #[test]
    fn uhyve_fields() {
        let info = parse(&raw(1, 0, 64 << 20, 0x5000, 4)).unwrap();
        assert_eq!(
            info,
            UhyveBootInfo {
                ram_start: 0,
                ram_end: 64 << 20,
                device_tree: Some(0x5000),
                num_cpus: 4,
            }
        );
        assert_eq!(parse(&raw(1, 0, 1 << 20, 0, 1)).unwrap().device_tree, None);
    }

    #[test]
    fn rejects() {
        assert_eq!(parse(&[0; LEN - 1]), Err(Error::Short(LEN - 1)));
        assert_eq!(parse(&raw(3, 0, 1 << 20, 0, 1)), Err(Error::NotUhyve(3)));
        assert_eq!(parse(&raw(1, 0, 1 << 20, 0, 0)), Err(Error::NoCpus));
        assert_eq!(
            parse(&raw(1, 8 << 20, 8 << 20, 0, 1)),
            Err(Error::BadRam {
                start: 8 << 20,
                end: 8 << 20
            })
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(info) = parse(&bytes) {
                prop_assert!(info.ram_start < info.ram_end && info.num_cpus > 0);
            }
        }
    }
}
