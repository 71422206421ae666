//! The paravirtual clock record shared by KVM (`kvmclock`) and Xen (`vcpu_time_info`):
//! the hypervisor publishes (tsc_timestamp, system_time, mul, shift) and a version
//! counter; readers scale the TSC delta. The arithmetic is pure and host-tested;
//! [`read`] is the one reader of a live record for both backends.

/// `struct pvclock_vcpu_time_info` (KVM) = `struct vcpu_time_info` (Xen), 32 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PvclockRecord {
    /// Odd while the hypervisor updates the record.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at `system_time`.
    pub tsc_timestamp: u64,
    /// Nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// Scale multiplier.
    pub tsc_to_system_mul: u32,
    /// Scale shift.
    pub tsc_shift: i8,
    /// Flags (KVM) / padding (Xen).
    pub flags: u8,
    /// Padding.
    pub pad: [u8; 2],
}

/// Reads nanoseconds from a live record: a consistent snapshot under the version
/// protocol (retry while odd or changed), scaled at the current TSC.
///
/// # Safety
/// `record` points to a mapped record the hypervisor keeps updating for this CPU.
pub unsafe fn read(record: *const PvclockRecord) -> u64 {
    use core::sync::atomic::{Ordering, fence};
    loop {
        // SAFETY: (caller) the record is mapped; volatile reads because the hypervisor
        // writes it concurrently, and the version check rejects torn snapshots.
        let (v1, snap, tsc, v2) = unsafe {
            let v1 = (&raw const (*record).version).read_volatile();
            fence(Ordering::Acquire);
            let snap = PvclockSnapshot {
                tsc_timestamp: (&raw const (*record).tsc_timestamp).read_volatile(),
                system_time_ns: (&raw const (*record).system_time).read_volatile(),
                tsc_to_system_mul: (&raw const (*record).tsc_to_system_mul).read_volatile(),
                tsc_shift: (&raw const (*record).tsc_shift).read_volatile(),
            };
            let tsc = crate::arch::rdtsc();
            fence(Ordering::Acquire);
            (
                v1,
                snap,
                tsc,
                (&raw const (*record).version).read_volatile(),
            )
        };
        if v1 % 2 == 0 && v1 == v2 {
            return snap.ns_at(tsc);
        }
    }
}

/// One consistent snapshot of a pvclock record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PvclockSnapshot {
    /// TSC value at `system_time_ns`.
    pub tsc_timestamp: u64,
    /// Nanoseconds at `tsc_timestamp`.
    pub system_time_ns: u64,
    /// Multiplier (32.32 fixed point) after shifting.
    pub tsc_to_system_mul: u32,
    /// Binary shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
}

impl PvclockSnapshot {
    /// Nanoseconds at TSC value `tsc` (never before `system_time_ns`).
    ///
    /// The TSC delta is taken modulo 2^64, as the ABI defines it, not as a plain
    /// unsigned difference: `tsc_timestamp` may be "negative". Xen writes one for a PV
    /// domU whose TSC it emulates (Xen's default when the host TSC is not invariant, as
    /// under QEMU TCG): the guest TSC starts at 0 when the domain is created, and the
    /// record's stamp is the physical CPU's last calibration (up to a second old), which
    /// can predate the domain, so its TSC value wraps below zero. Only a TSC really
    /// behind the stamp (another vCPU's record read just after a migration, TSCs
    /// slightly apart) counts as zero elapsed.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let delta = u64::try_from(tsc.wrapping_sub(self.tsc_timestamp) as i64).unwrap_or(0);
        self.system_time_ns
            .wrapping_add(scale_delta(delta, self.tsc_to_system_mul, self.tsc_shift))
    }
}

/// `(delta << shift or >> -shift) * mul >> 32`, as the pvclock ABI defines it.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift >= 0 {
        delta << shift.min(63)
    } else {
        delta >> (-i16::from(shift)).min(63)
    };
    ((u128::from(shifted) * u128::from(mul)) >> 32) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scales_like_the_abi() {
        // mul = 2^31 with shift 0 halves the delta (a 2 GHz TSC).
        assert_eq!(scale_delta(2_000, 1 << 31, 0), 1_000);
        assert_eq!(scale_delta(2_000, 1 << 31, 1), 2_000);
        assert_eq!(scale_delta(2_000, 1 << 31, -1), 500);
        let s = PvclockSnapshot {
            tsc_timestamp: 100,
            system_time_ns: 5,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 0,
        };
        assert_eq!(s.ns_at(300), 105);
        assert_eq!(
            s.ns_at(50),
            5,
            "a TSC before the record does not go backwards"
        );
    }

    #[test]
    fn a_stamp_before_tsc_zero_is_honoured() {
        // Xen's emulated TSC for a domU counts from the domain's creation; a record
        // stamped 1 ms (1M ticks at 1 GHz) before that has tsc_timestamp = -1M.
        let s = PvclockSnapshot {
            tsc_timestamp: 0u64.wrapping_sub(1_000_000),
            system_time_ns: 7_000_000_000,
            tsc_to_system_mul: u32::MAX,
            tsc_shift: 0,
        };
        // 0.5 s into the domain's life: 0.501 s after the stamp (scale ~1.0).
        let ns = s.ns_at(500_000_000);
        assert!((7_500_999_000..=7_501_000_000).contains(&ns), "{ns}");
        assert!(s.ns_at(600_000_000) > ns, "the clock advances");
    }

    proptest! {
        #[test]
        fn monotonic_in_tsc(a in any::<u32>(), b in any::<u32>(), mul in any::<u32>(), shift in -8i8..8) {
            let s = PvclockSnapshot { tsc_timestamp: 1000, system_time_ns: 7, tsc_to_system_mul: mul, tsc_shift: shift };
            let (lo, hi) = (u64::from(a.min(b)), u64::from(a.max(b)));
            prop_assert!(s.ns_at(1000 + lo) <= s.ns_at(1000 + hi));
        }
    }
}
