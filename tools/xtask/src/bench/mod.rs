//! Benchmarks (`cargo xtask bench …`): each writes `target/bench/<name>.{json,md}`.

pub mod boot;
pub mod entry;
pub mod goals;
pub mod libvirt;
pub mod net;
pub mod net_load;
pub mod preempt;
pub mod report;
pub mod smp;
pub mod soak;
pub mod stats;
pub mod xen_boot;
