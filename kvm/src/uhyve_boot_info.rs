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

    // Valid and rejected blocks: kvm/tests/uhyve_boot_info_layout.rs, which checks them
    // against hermit-entry's own reading.

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(info) = parse(&bytes) {
                prop_assert!(info.ram_start < info.ram_end && info.num_cpus > 0);
            }
        }
    }
}
