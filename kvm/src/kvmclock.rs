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

/// kvmclock's (`tsc_to_system_mul`, `tsc_shift`) once KVM has written a consistent
/// record (it does before the vCPU resumes from `init`'s MSR write), else `None`.
pub fn scale() -> Option<(u32, i8)> {
    if !active() {
        return None;
    }
    let rec = (&raw const TIME_INFO).cast::<PvclockRecord>();
    // SAFETY: TIME_INFO is registered with KVM, which writes it concurrently: volatile
    // reads, and the version check rejects a torn pair.
    let (v1, mul, shift, v2) = unsafe {
        let v1 = (&raw const (*rec).version).read_volatile();
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        let mul = (&raw const (*rec).tsc_to_system_mul).read_volatile();
        let shift = (&raw const (*rec).tsc_shift).read_volatile();
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        (v1, mul, shift, (&raw const (*rec).version).read_volatile())
    };
    (v1 == v2 && v1 % 2 == 0 && mul != 0).then_some((mul, shift))
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
