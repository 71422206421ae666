//! kvmclock: KVM's paravirtual clock, where the hypervisor offers it.
//!
//! Detected through the KVM CPUID leaves (`KVMKVMKVM` signature at 0x4000_0000,
//! `KVM_FEATURE_CLOCKSOURCE2` in 0x4000_0001). Under TCG there is no such leaf and the
//! APIC-calibrated TSC is used instead (see `apic`).

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use libos::pvclock::PvclockRecord;
use x86_64::registers::model_specific::Msr;

const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

/// The time record KVM writes (64-byte aligned, as the ABI wants).
#[repr(C, align(64))]
struct TimeInfo(PvclockRecord);

// Written by the hypervisor only (after `init` registers it); read with volatile loads.
static mut TIME_INFO: TimeInfo = TimeInfo(PvclockRecord {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
});
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether the hypervisor offers kvmclock.
fn available() -> bool {
    let leaf = core::arch::x86_64::__cpuid(0x4000_0000);
    let sig = [leaf.ebx, leaf.ecx, leaf.edx];
    let kvm = sig
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .take(9)
        .eq(*b"KVMKVMKVM");
    kvm && leaf.eax >= 0x4000_0001
        && core::arch::x86_64::__cpuid(0x4000_0001).eax & KVM_FEATURE_CLOCKSOURCE2 != 0
}

/// Registers the time record with KVM if offered; returns whether kvmclock is in use.
pub fn init() -> bool {
    if !available() {
        return false;
    }
    let paddr = (&raw const TIME_INFO) as u64; // identity-mapped
    // SAFETY: the MSR exists (CPUID said so); bit 0 enables updates of the 64-byte
    // aligned record, which lives forever and which only KVM writes.
    unsafe { Msr::new(MSR_KVM_SYSTEM_TIME_NEW).write(paddr | 1) };
    ACTIVE.store(true, Relaxed);
    true
}

/// Whether kvmclock is the clock source.
pub fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// Nanoseconds from kvmclock.
pub fn now_ns() -> u64 {
    // SAFETY: TIME_INFO is the record registered with KVM in `init`, which KVM keeps
    // updating for this vCPU.
    unsafe { libos::pvclock::read((&raw const TIME_INFO).cast::<PvclockRecord>()) }
}
