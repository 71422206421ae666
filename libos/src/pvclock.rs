//! The paravirtual clock record shared by KVM (`kvmclock`) and Xen (`vcpu_time_info`):
//! the hypervisor publishes (tsc_timestamp, system_time, mul, shift) and a version
//! counter; readers scale the TSC delta. The arithmetic is pure and host-tested.
#![forbid(unsafe_code)]

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
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let delta = tsc.saturating_sub(self.tsc_timestamp);
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

    proptest! {
        #[test]
        fn monotonic_in_tsc(a in any::<u32>(), b in any::<u32>(), mul in any::<u32>(), shift in -8i8..8) {
            let s = PvclockSnapshot { tsc_timestamp: 1000, system_time_ns: 7, tsc_to_system_mul: mul, tsc_shift: shift };
            let (lo, hi) = (u64::from(a.min(b)), u64::from(a.max(b)));
            prop_assert!(s.ns_at(1000 + lo) <= s.ns_at(1000 + hi));
        }
    }
}
