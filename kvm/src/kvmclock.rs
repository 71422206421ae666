//! kvmclock: KVM's paravirtual clock, where the hypervisor offers it.
//!
//! Detected through the KVM CPUID leaves (`KVMKVMKVM` signature at 0x4000_0000,
//! `KVM_FEATURE_CLOCKSOURCE2` in 0x4000_0001). Under TCG there is no such leaf and the
//! APIC-calibrated TSC is used instead (see `apic`).

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use libos::pvclock::PvclockSnapshot;
use x86_64::registers::model_specific::Msr;

const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

/// `struct pvclock_vcpu_time_info`, written by KVM.
#[repr(C, align(64))]
struct TimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

// Written by the hypervisor only (after `init` registers it); read with volatile loads.
static mut TIME_INFO: TimeInfo = TimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
};
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

/// Nanoseconds from kvmclock (a consistent snapshot: retried while KVM updates it).
pub fn now_ns() -> u64 {
    let p = &raw const TIME_INFO;
    loop {
        // SAFETY: `p` is the registered record; volatile reads because KVM writes it.
        let (v1, snap, v2) = unsafe {
            let v1 = (&raw const (*p).version).read_volatile();
            core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
            let snap = PvclockSnapshot {
                tsc_timestamp: (&raw const (*p).tsc_timestamp).read_volatile(),
                system_time_ns: (&raw const (*p).system_time).read_volatile(),
                tsc_to_system_mul: (&raw const (*p).tsc_to_system_mul).read_volatile(),
                tsc_shift: (&raw const (*p).tsc_shift).read_volatile(),
            };
            let tsc = libos::arch::rdtsc();
            core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
            ((v1, tsc), snap, (&raw const (*p).version).read_volatile())
        };
        if v1.0 % 2 == 0 && v1.0 == v2 {
            return snap.ns_at(v1.1);
        }
    }
}
