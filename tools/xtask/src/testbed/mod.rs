//! Test beds xtask assembles and caches under `target/testbed/`: the Xen dom0 (Debian
//! packages, kernel, initramfs, network) and libvirt on this host.

pub mod deb_deps;
pub mod debian;
pub mod dom0;
pub mod files;
pub mod initramfs;
pub mod kernel;
pub mod libvirt;
pub mod libvirt_xen;
pub mod nginx_guest;
pub mod xen;
pub mod xen_net;
