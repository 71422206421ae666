//! Upcall's KVM backend.
//!
//! One image boots on both KVM VMMs:
//! - QEMU (`-kernel`): the PVH note leads to `pvh`, which switches from 32-bit
//!   protected mode to long mode and reads `hvm_start_info`;
//! - uhyve: the HERMIT note and the ELF entry lead to `uhyve`, entered in long mode
//!   with hermit-entry's boot info.
//!
//! Both continue in `boot`: GDT with IST stacks, IDT, own page tables, then
//! `libos::start`. The platform differs only in console and exit.
//!
//! Modules that touch hardware only build for the bare-metal target; the pure parsers
//! build (and are tested) on the host too.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi_sleep;
pub mod bootargs;
pub mod madt;
pub mod mmio_devices;
pub mod pci_intx;
pub mod start_info;
pub mod tsc_freq;
pub mod uhyve_boot_info;
pub mod virtio_net_hdr;
pub mod virtio_net_rx;
pub mod virtio_pci_caps;
pub mod virtq;

// (First: its macros are used by `pvh` and `trampoline`.)
#[cfg(target_os = "none")]
#[macro_use]
mod long_mode;
#[cfg(target_os = "none")]
mod apic;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod devirq;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod gdt;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod ioapic;
#[cfg(target_os = "none")]
mod kvmclock;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
#[cfg_attr(not(feature = "virtio-net"), allow(dead_code))]
mod pci;
#[cfg(target_os = "none")]
mod poweroff;
#[cfg(target_os = "none")]
mod pvh;
#[cfg(target_os = "none")]
mod pvpanic;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod shootdown;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod stacks;
#[cfg(target_os = "none")]
mod trampoline;
#[cfg(target_os = "none")]
mod traps;
#[cfg(target_os = "none")]
mod uhyve;
#[cfg(target_os = "none")]
#[cfg_attr(not(feature = "virtio-net"), allow(dead_code, unused_imports))]
mod virtio;
