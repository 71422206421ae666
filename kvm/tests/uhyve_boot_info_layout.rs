//! `upcall_kvm::uhyve_boot_info` reads hermit-entry's `RawBootInfo` from its bytes; this
//! checks that reading against hermit-entry's own conversion of the same bytes, so a
//! layout change in a hermit-entry update fails here; and the blocks it accepts and
//! rejects, built at the offsets the module documents.

use hermit_entry::boot_info::{BootInfo, PlatformInfo, RawBootInfo};
use upcall_kvm::uhyve_boot_info::{self, Error, LEN, UhyveBootInfo};

/// The bytes of a uhyve `RawBootInfo`, written at the offsets the module documents.
fn raw(start: u64, end: u64, fdt: u64, cpus: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&start.to_le_bytes());
    b[8..16].copy_from_slice(&end.to_le_bytes());
    b[16..18].copy_from_slice(&0x3f8u16.to_le_bytes());
    b[24..32].copy_from_slice(&fdt.to_le_bytes());
    b[80..84].copy_from_slice(&1u32.to_le_bytes());
    b[88] = 1;
    b[96..104].copy_from_slice(&cpus.to_le_bytes());
    b[104..108].copy_from_slice(&3_000_000u32.to_le_bytes());
    b[112..128].copy_from_slice(&1_700_000_000_000_000_000i128.to_ne_bytes());
    b
}

#[test]
fn same_fields_as_hermit_entry() {
    assert_eq!(size_of::<RawBootInfo>(), LEN);
    for (start, end, fdt, cpus) in [(0, 64 << 20, 0x5000, 4), (1 << 20, 1 << 30, 0, 1)] {
        let bytes = raw(start, end, fdt, cpus);
        // SAFETY: `bytes` is `size_of::<RawBootInfo>()` bytes holding a valid value:
        // the enum tag is a variant (Uhyve), `has_pci` is 0 or 1, `num_cpus` is not 0,
        // and the `Option`s of non-zero integers accept any value.
        let theirs =
            BootInfo::from(unsafe { bytes.as_ptr().cast::<RawBootInfo>().read_unaligned() });
        let ours: UhyveBootInfo = uhyve_boot_info::parse(&bytes).unwrap();
        assert_eq!(
            theirs.hardware_info.phys_addr_range,
            ours.ram_start..ours.ram_end
        );
        assert_eq!(
            theirs.hardware_info.device_tree.map(|a| a.get()),
            ours.device_tree
        );
        let PlatformInfo::Uhyve { num_cpus, .. } = theirs.platform_info else {
            panic!("hermit-entry does not read these bytes as uhyve's");
        };
        assert_eq!(num_cpus.get(), ours.num_cpus);
    }
}

#[test]
fn uhyve_fields() {
    let info = uhyve_boot_info::parse(&raw(0, 64 << 20, 0x5000, 4)).unwrap();
    assert_eq!(
        info,
        UhyveBootInfo {
            ram_start: 0,
            ram_end: 64 << 20,
            device_tree: Some(0x5000),
            num_cpus: 4,
        }
    );
    let no_fdt = uhyve_boot_info::parse(&raw(0, 1 << 20, 0, 1)).unwrap();
    assert_eq!(no_fdt.device_tree, None);
}

#[test]
fn rejects() {
    let parse = uhyve_boot_info::parse;
    assert_eq!(parse(&[0; LEN - 1]), Err(Error::Short(LEN - 1)));
    let mut fdt_platform = raw(0, 1 << 20, 0, 1);
    fdt_platform[80] = 3;
    assert_eq!(parse(&fdt_platform), Err(Error::NotUhyve(3)));
    assert_eq!(parse(&raw(0, 1 << 20, 0, 0)), Err(Error::NoCpus));
    assert_eq!(
        parse(&raw(8 << 20, 8 << 20, 0, 1)),
        Err(Error::BadRam {
            start: 8 << 20,
            end: 8 << 20
        })
    );
}
