//! Where the TSC frequency comes from: what the hypervisor or CPUID states, in a fixed
//! order, and calibration against the APIC timer only where nothing is stated.
//!
//! Order (first usable wins), pinned by the tests below:
//! 1. the hypervisor leaf `0x4000_0010` (EAX = guest TSC kHz; VMware's interface, which
//!    QEMU/KVM offer with `vmware-cpuid-freq`): the hypervisor's statement about *this
//!    guest's* TSC;
//! 2. kvmclock's scale (`tsc_to_system_mul`, `tsc_shift`): what KVM uses itself to turn
//!    this guest's TSC into nanoseconds;
//! 3. CPUID `0x15` (crystal clock × EBX / EAX), then
//! 4. CPUID `0x16` (base MHz): facts about the *host's* processor, which a VMM passes
//!    through even where it scales the guest's TSC, so they come after what the
//!    hypervisor says about the guest;
//! 5. calibration (nothing offered: QEMU TCG, for one).
//!
//! A stated value outside [`MIN_HZ`, `MAX_HZ`] is ignored (the next source is tried), so
//! a hostile or broken hypervisor cannot make the clock run at zero or overflow it.
#![forbid(unsafe_code)]

/// Lowest believable TSC frequency (1 MHz).
pub const MIN_HZ: u64 = 1_000_000;
/// Highest believable TSC frequency (100 GHz).
pub const MAX_HZ: u64 = 100_000_000_000;

/// A source of the TSC frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Hypervisor CPUID leaf 0x4000_0010.
    HypervisorLeaf,
    /// kvmclock's scale.
    Kvmclock,
    /// CPUID leaf 0x15.
    Cpuid15,
    /// CPUID leaf 0x16.
    Cpuid16,
    /// Measured against the APIC timer.
    Calibrated,
}

impl Source {
    /// Its name, for the boot log.
    pub fn name(self) -> &'static str {
        match self {
            Source::HypervisorLeaf => "cpuid 0x40000010",
            Source::Kvmclock => "kvmclock",
            Source::Cpuid15 => "cpuid 0x15",
            Source::Cpuid16 => "cpuid 0x16",
            Source::Calibrated => "calibrated",
        }
    }
}

/// What the platform offers, raw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offers {
    /// EAX of leaf 0x4000_0010 (TSC kHz), where the hypervisor has that leaf.
    pub hypervisor_khz: Option<u32>,
    /// kvmclock's (`tsc_to_system_mul`, `tsc_shift`), where kvmclock is in use.
    pub kvmclock: Option<(u32, i8)>,
    /// Leaf 0x15's (EAX denominator, EBX numerator, ECX crystal Hz), where present.
    pub cpuid_15: Option<(u32, u32, u32)>,
    /// Leaf 0x16's EAX bits 0..16 (base MHz), where present.
    pub cpuid_16_mhz: Option<u32>,
}

const HYPERVISOR_PRESENT: u32 = 1 << 31;

impl Offers {
    /// Reads the CPUID leaves through `cpuid(leaf) -> [eax, ebx, ecx, edx]`, looking
    /// only at leaves the maximum-leaf entries say exist. `kvmclock` is passed through.
    pub fn from_cpuid(cpuid: impl Fn(u32) -> [u32; 4], kvmclock: Option<(u32, i8)>) -> Offers {
        let max_basic = cpuid(0)[0];
        let hypervisor = max_basic >= 1 && cpuid(1)[2] & HYPERVISOR_PRESENT != 0;
        let max_hv = if hypervisor { cpuid(0x4000_0000)[0] } else { 0 };
        let hypervisor_khz = (hypervisor && (0x4000_0010..0x5000_0000).contains(&max_hv))
            .then(|| cpuid(0x4000_0010)[0]);
        let cpuid_15 = (max_basic >= 0x15).then(|| {
            let [a, b, c, _] = cpuid(0x15);
            (a, b, c)
        });
        let cpuid_16_mhz = (max_basic >= 0x16).then(|| cpuid(0x16)[0] & 0xffff);
        Offers {
            hypervisor_khz,
            kvmclock,
            cpuid_15,
            cpuid_16_mhz,
        }
    }
}

/// TSC Hz from kvmclock's scale: ns = (tsc << shift) * mul >> 32 (a negative shift
/// shifts right), so Hz = 10⁹ · 2³² / (mul · 2^shift).
pub fn kvmclock_hz(mul: u32, shift: i8) -> Option<u64> {
    if mul == 0 || !(-32..=32).contains(&shift) {
        return None;
    }
    let num = 1_000_000_000u128 << 32;
    let hz = if shift >= 0 {
        num / (u128::from(mul) << shift)
    } else {
        (num << -shift) / u128::from(mul)
    };
    u64::try_from(hz).ok()
}

fn believable(hz: Option<u64>) -> Option<u64> {
    hz.filter(|hz| (MIN_HZ..=MAX_HZ).contains(hz))
}

/// The first usable source in the order above and its frequency in Hz, or `None` when
/// nothing usable is offered (then the caller calibrates).
pub fn pick(o: &Offers) -> Option<(Source, u64)> {
    let candidates = [
        (
            Source::HypervisorLeaf,
            o.hypervisor_khz.map(|k| u64::from(k) * 1000),
        ),
        (
            Source::Kvmclock,
            o.kvmclock.and_then(|(m, s)| kvmclock_hz(m, s)),
        ),
        (
            Source::Cpuid15,
            o.cpuid_15.and_then(|(den, num, crystal)| {
                (den != 0).then(|| u64::from(crystal) * u64::from(num) / u64::from(den))
            }),
        ),
        (
            Source::Cpuid16,
            o.cpuid_16_mhz.map(|m| u64::from(m) * 1_000_000),
        ),
    ];
    candidates
        .into_iter()
        .find_map(|(s, hz)| Some((s, believable(hz)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: Offers = Offers {
        hypervisor_khz: Some(2_000_000),
        // 3 GHz: mul = 2^32 / 3 · 2 with shift -1.
        kvmclock: Some((2_863_311_530, -1)),
        cpuid_15: Some((2, 250, 24_000_000)), // 3 GHz
        cpuid_16_mhz: Some(2_500),
    };

    #[test]
    fn source_order_is_hypervisor_kvmclock_cpuid15_cpuid16() {
        let mut o = ALL;
        assert_eq!(pick(&o), Some((Source::HypervisorLeaf, 2_000_000_000)));
        o.hypervisor_khz = None;
        let (s, hz) = pick(&o).unwrap();
        assert_eq!(s, Source::Kvmclock);
        assert!(hz.abs_diff(3_000_000_000) < 10, "{hz}");
        o.kvmclock = None;
        assert_eq!(pick(&o), Some((Source::Cpuid15, 3_000_000_000)));
        o.cpuid_15 = None;
        assert_eq!(pick(&o), Some((Source::Cpuid16, 2_500_000_000)));
        o.cpuid_16_mhz = None;
        assert_eq!(pick(&o), None);
    }

    #[test]
    fn unusable_values_fall_through() {
        let o = Offers {
            hypervisor_khz: Some(0),
            kvmclock: Some((0, 0)),
            cpuid_15: Some((0, 250, 24_000_000)), // leaf present, ratio not enumerated
            cpuid_16_mhz: Some(2_500),
        };
        assert_eq!(pick(&o), Some((Source::Cpuid16, 2_500_000_000)));
        // Crystal not enumerated (ECX = 0): 0x15 is skipped.
        let o = Offers {
            cpuid_15: Some((2, 250, 0)),
            ..Offers::default()
        };
        assert_eq!(pick(&o), None);
        // Absurdly high: ignored.
        let o = Offers {
            hypervisor_khz: Some(u32::MAX),
            kvmclock: Some((1, 0)), // 4.3e18 Hz
            ..Offers::default()
        };
        assert_eq!(pick(&o), None);
    }

    #[test]
    fn kvmclock_scale_of_known_rates() {
        // What KVM computes for 1 GHz: mul = 2^31, shift = 1.
        assert_eq!(kvmclock_hz(1 << 31, 1), Some(1_000_000_000));
        // 2 GHz: ns = tsc / 2 = (tsc >> 1) · 2^32 >> 32.
        assert_eq!(
            kvmclock_hz(u32::MAX, -1).map(|h| h / 1_000_000),
            Some(2_000)
        );
        assert_eq!(kvmclock_hz(1, 40), None);
        assert_eq!(kvmclock_hz(1, -40), None);
    }

    /// A CPUID table: leaves not in it read as zeros.
    fn table(entries: &[(u32, [u32; 4])]) -> impl Fn(u32) -> [u32; 4] + '_ {
        |leaf| entries.iter().find(|e| e.0 == leaf).map_or([0; 4], |e| e.1)
    }

    #[test]
    fn from_cpuid_reads_only_leaves_that_exist() {
        // QEMU TCG's qemu64: max basic leaf 0xd, no hypervisor leaves beyond 0x40000001.
        let tcg = [
            (0, [0xd, 0, 0, 0]),
            (1, [0, 0, HYPERVISOR_PRESENT, 0]),
            (0x15, [2, 250, 24_000_000, 0]), // beyond the max: must not be read
            (0x4000_0000, [0x4000_0001, 0, 0, 0]),
            (0x4000_0010, [2_000_000, 0, 0, 0]),
        ];
        assert_eq!(Offers::from_cpuid(table(&tcg), None), Offers::default());
        // A hypervisor with the timing leaf.
        let hv = [
            (0, [0x16, 0, 0, 0]),
            (1, [0, 0, HYPERVISOR_PRESENT, 0]),
            (0x16, [0x1_09c4, 0, 0, 0]),
            (0x4000_0000, [0x4000_0010, 0, 0, 0]),
            (0x4000_0010, [2_000_000, 1_000_000, 0, 0]),
        ];
        let o = Offers::from_cpuid(table(&hv), Some((1 << 31, 1)));
        assert_eq!(o.hypervisor_khz, Some(2_000_000));
        assert_eq!(o.cpuid_16_mhz, Some(2_500));
        assert_eq!(o.cpuid_15, Some((0, 0, 0)));
        assert_eq!(pick(&o), Some((Source::HypervisorLeaf, 2_000_000_000)));
        // No hypervisor bit: the hypervisor range is not trusted.
        let bare = [
            (0, [1, 0, 0, 0]),
            (0x4000_0000, [0x4000_0010, 0, 0, 0]),
            (0x4000_0010, [2_000_000, 0, 0, 0]),
        ];
        assert_eq!(Offers::from_cpuid(table(&bare), None), Offers::default());
    }

    proptest! {
        /// Whatever is offered, a picked frequency is believable, and nothing picked
        /// means every offer was unusable.
        #[test]
        fn picked_frequency_is_believable(
            hv in proptest::option::of(any::<u32>()),
            kc in proptest::option::of((any::<u32>(), any::<i8>())),
            c15 in proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>())),
            c16 in proptest::option::of(0u32..0x1_0000),
        ) {
            let o = Offers { hypervisor_khz: hv, kvmclock: kc, cpuid_15: c15, cpuid_16_mhz: c16 };
            match pick(&o) {
                Some((s, hz)) => {
                    prop_assert!((MIN_HZ..=MAX_HZ).contains(&hz));
                    prop_assert!(s != Source::Calibrated);
                }
                None => prop_assert!(c16.is_none_or(|m| u64::from(m) * 1_000_000 < MIN_HZ)),
            }
        }
    }
}
