//! Upcall's KVM backend.
//!
//! QEMU path: the image is a PVH ELF (`-kernel`); `pvh` switches from 32-bit
//! protected mode to long mode, `boot` reads `hvm_start_info`, sets up the GDT with
//! IST stacks, the IDT, its own page tables and the serial console, then hands over to
//! `libos::start`.
//!
//! Modules that touch hardware only build for the bare-metal target; the pure parsers
//! build (and are tested) on the host too.
#![cfg_attr(not(test), no_std)]

pub mod start_info;

#[cfg(target_os = "none")]
mod apic;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod gdt;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod kvmclock;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
mod pvh;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod stacks;
#[cfg(target_os = "none")]
mod traps;
