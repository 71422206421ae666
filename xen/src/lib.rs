//! Upcall's Xen PV backend (64-bit PV guest).
//!
//! Xen's domain builder loads the image at its link address (VIRT_BASE 0, so virtual ==
//! pseudo-physical for the initial mapping), enters `xen_start` in 64-bit mode with
//! `rsi` = `start_info` (`head`: the ELF notes and `xen_start`). `boot` maps shared
//! info, installs the trap table and hands over to `libos::start` with the part of the
//! initial mapping not used by the boot structures as heap; `platform` is what libos
//! calls from then on.
//!
//! Boots as dom0 (console through `console_io`, exit status through QEMU's
//! isa-debug-exit port, which dom0 may drive) or as an `xl create`d domU (console ring,
//! xenstore, `control/shutdown`, balloon target); events arrive by upcall through the
//! shared entry core. Pure modules (rings, xenstore protocol, grant refs, netif, xenbus) are
//! host-tested.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod abi;
pub mod balloon_ops;
pub mod evtchn_demux;
pub mod grant_ref;
pub mod netbuf;
pub mod netif;
pub mod netrx;
pub mod ring;
pub mod start_info;
pub mod xenbus;
pub mod xs_client;
pub mod xs_proto;

#[cfg(target_os = "none")]
mod balloon_target;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod events;
#[cfg(target_os = "none")]
pub mod gnttab;
#[cfg(target_os = "none")]
mod head;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod netfront;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod shared_info;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod traps;
#[cfg(target_os = "none")]
mod vcpu;
#[cfg(target_os = "none")]
pub mod xenstore;
#[cfg(target_os = "none")]
mod xs_check;
