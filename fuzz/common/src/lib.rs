//! The fuzz targets' logic, shared by the thin libFuzzer targets in
//! `fuzz/fuzz_targets/` (nightly, `cargo xtask fuzz`) and the stable replay of the
//! committed regression inputs (`fuzz/regressions/<target>/`, run by `cargo xtask
//! test`).
//!
//! Each target is `fn(&[u8])`: it decodes the bytes into hostile input (parsers) or
//! into a sequence of steps of the driver and a model of the device or backend
//! (stateful targets: honest most of the time, hostile sometimes), and panics when an
//! invariant breaks. Layout as in rust-vmm's vm-virtio: input types and models here,
//! targets thin.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

extern crate alloc;

pub mod httpd;
pub mod input;
pub mod netfront;
pub mod parsers;
pub mod seeds;
pub mod tso;
pub mod virtio;
pub mod xenstore;

/// A target: runs one input, panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name, as `cargo xtask fuzz` and the replay know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("xen_start_info", parsers::xen_start_info),
    ("kvm_start_info", parsers::kvm_start_info),
    ("bootargs", parsers::bootargs),
    ("madt", parsers::madt),
    ("mmio_devices", parsers::mmio_devices),
    ("cmdline", parsers::cmdline),
    ("pvclock", parsers::pvclock),
    ("xenstore", xenstore::xenstore),
    ("netfront", netfront::netfront),
    ("tso", tso::tso),
    ("virtio_net_rx", virtio::virtio_net_rx),
    ("virtio_net_hdr", virtio::virtio_net_hdr),
    ("virtio_pci_caps", virtio::virtio_pci_caps),
    ("httpd", httpd::httpd),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}
