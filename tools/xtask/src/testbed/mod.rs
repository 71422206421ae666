//! Test beds xtask assembles and caches under `target/testbed/`: the Xen dom0 (Debian
//! packages, kernel, initramfs, network) and libvirt on this host.

pub mod initramfs;
pub mod libvirt;
pub mod xen;
pub mod xen_net;
