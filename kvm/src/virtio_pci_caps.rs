//! The virtio-pci capability walk (virtio 1.x §4.1.4), pure and host-tested.
//!
//! A modern virtio-pci function describes its four register structures (common,
//! notify, ISR, device configuration) with vendor capabilities in PCI configuration
//! space: each names a BAR, an offset and a length in it. Everything here comes from
//! the device, so everything is checked before the driver maps or touches anything: a
//! capability must lie inside the 256 bytes of configuration space, its structure
//! inside its BAR (whose size the caller measured) and inside one 2 MiB page of the
//! mapping the driver makes, and the structure must be long enough for the registers
//! the driver uses. Each queue's notify address, `queue_notify_off` × the notify
//! multiplier, is checked against the notify structure by [`notify_offset`] before the
//! driver writes there. A device that fails a check gets an initialization error.
#![forbid(unsafe_code)]

// The `teeth` feature removes a bounds check for the fuzzers' teeth check: never in an
// image.
#[cfg(all(feature = "teeth", target_os = "none"))]
compile_error!("the `teeth` feature is for host fuzzing only (cargo xtask fuzz --teeth)");

use core::fmt;

/// Bytes of configuration space reachable through ports 0xcf8/0xcfc.
pub const CONFIG_SPACE: usize = 256;
/// The status register; bit 4 says a capability list exists.
const STATUS: usize = 0x06;
const STATUS_CAPS: u16 = 1 << 4;
/// The first capability's offset.
const CAPABILITIES_PTR: usize = 0x34;
/// Vendor-specific capability id.
const CAP_VENDOR: u8 = 0x09;
/// `struct virtio_pci_cap`: vndr, next, len, cfg_type, bar, id, pad[2], offset, length.
#[cfg_attr(feature = "teeth", allow(dead_code))]
const CAP_LEN: usize = 16;
/// `struct virtio_pci_notify_cap`: the above plus `notify_off_multiplier`.
const NOTIFY_CAP_LEN: usize = 20;
/// Capabilities looked at before giving up (a looping list cannot hang us).
const MAX_CAPS: usize = 48;
/// The driver maps each structure with one 2 MiB page.
pub const MAP_PAGE: u64 = 2 << 20;

/// `cfg_type` values.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// Smallest structures the driver accepts: the common configuration up to
/// `queue_device` (0x38 bytes), one ISR byte, one notify register, and the device
/// configuration's MAC address.
pub const MIN_COMMON: u32 = 0x38;
/// See [`MIN_COMMON`].
pub const MIN_ISR: u32 = 1;
/// See [`MIN_COMMON`].
pub const MIN_NOTIFY: u32 = 2;
/// See [`MIN_COMMON`].
pub const MIN_DEVICE: u32 = 6;

/// Why a function's capabilities are unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// A structure has no (usable) capability.
    Missing(&'static str),
    /// A capability at this config offset runs past the end of configuration space.
    Truncated(u8),
    /// A structure lies outside its BAR, or is shorter than the driver needs.
    OutsideBar(&'static str),
    /// A structure crosses the 2 MiB page the driver maps for it.
    CrossesPage(&'static str),
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapError::Missing(what) => write!(f, "no usable {what} capability"),
            CapError::Truncated(at) => {
                write!(
                    f,
                    "capability at config offset {at:#x} runs past config space"
                )
            }
            CapError::OutsideBar(what) => {
                write!(f, "{what} structure lies outside its BAR or is too short")
            }
            CapError::CrossesPage(what) => {
                write!(f, "{what} structure crosses a 2 MiB page boundary")
            }
        }
    }
}

/// A register structure: `length` bytes at `offset` in memory BAR `bar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The BAR (0–5).
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Bytes.
    pub length: u32,
}

/// A memory BAR as the caller found (and assigned) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Physical base address.
    pub base: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// A structure checked against its BAR: the window the driver maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Physical address of the structure.
    pub base: u64,
    /// Bytes the driver may access from `base`.
    pub len: u32,
}

/// The four structures of one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Common configuration.
    pub common: Window,
    /// Notify structure.
    pub notify: Window,
    /// `notify_off_multiplier`.
    pub notify_multiplier: u32,
    /// ISR status.
    pub isr: Window,
    /// Device-specific configuration.
    pub device: Window,
}

fn u16_at(c: &[u8; CONFIG_SPACE], at: usize) -> u16 {
    u16::from_le_bytes([c[at], c[at + 1]])
}

fn u32_at(c: &[u8; CONFIG_SPACE], at: usize) -> u32 {
    u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]])
}

/// The offsets of the capabilities with id `cap_id`, in list order; at most
/// [`MAX_CAPS`] entries are followed.
pub fn capabilities(config: &[u8; CONFIG_SPACE], cap_id: u8) -> impl Iterator<Item = u8> + '_ {
    let mut next = if u16_at(config, STATUS) & STATUS_CAPS != 0 {
        config[CAPABILITIES_PTR] & 0xfc
    } else {
        0
    };
    let mut budget = MAX_CAPS;
    core::iter::from_fn(move || {
        while next >= 0x40 && budget > 0 {
            budget -= 1;
            let at = next;
            // `at` ≤ 0xfc, so `at + 1` is inside config space.
            next = config[usize::from(at) + 1] & 0xfc;
            if config[usize::from(at)] == cap_id {
                return Some(at);
            }
        }
        None
    })
}

/// Checks `region` against its BAR (from `bar`, `None` for an I/O BAR or one without
/// an address) and the driver's mapping; `min` is the length the driver needs.
fn window(
    region: Region,
    bar: &impl Fn(u8) -> Option<Bar>,
    min: u32,
    what: &'static str,
) -> Result<Window, CapError> {
    let b = bar(region.bar).ok_or(CapError::Missing(what))?;
    let end = u64::from(region.offset) + u64::from(region.length);
    if region.length < min || end > b.size {
        return Err(CapError::OutsideBar(what));
    }
    let base = b
        .base
        .checked_add(u64::from(region.offset))
        .ok_or(CapError::OutsideBar(what))?;
    let last = base + u64::from(region.length) - 1;
    if base / MAP_PAGE != last / MAP_PAGE {
        return Err(CapError::CrossesPage(what));
    }
    Ok(Window {
        base,
        len: region.length,
    })
}

/// Walks `config` (the function's configuration space) for the virtio structures; the
/// first capability of each type whose BAR `bar` accepts is used.
pub fn parse(
    config: &[u8; CONFIG_SPACE],
    bar: impl Fn(u8) -> Option<Bar>,
) -> Result<Caps, CapError> {
    let (mut common, mut notify, mut isr, mut device) = (None, None, None, None);
    let mut notify_multiplier = 0;
    for cap in capabilities(config, CAP_VENDOR) {
        let at = usize::from(cap);
        #[cfg(not(feature = "teeth"))]
        if at + CAP_LEN > CONFIG_SPACE {
            return Err(CapError::Truncated(cap));
        }
        let region = Region {
            bar: config[at + 4],
            offset: u32_at(config, at + 8),
            length: u32_at(config, at + 12),
        };
        if region.bar > 5 || bar(region.bar).is_none() {
            continue;
        }
        match config[at + 3] {
            CFG_COMMON if common.is_none() => {
                common = Some(window(region, &bar, MIN_COMMON, "common configuration")?);
            }
            CFG_NOTIFY if notify.is_none() => {
                if at + NOTIFY_CAP_LEN > CONFIG_SPACE {
                    return Err(CapError::Truncated(cap));
                }
                notify = Some(window(region, &bar, MIN_NOTIFY, "notify")?);
                notify_multiplier = u32_at(config, at + 16);
            }
            CFG_ISR if isr.is_none() => isr = Some(window(region, &bar, MIN_ISR, "ISR")?),
            CFG_DEVICE if device.is_none() => {
                device = Some(window(region, &bar, MIN_DEVICE, "device configuration")?);
            }
            _ => {}
        }
    }
    Ok(Caps {
        common: common.ok_or(CapError::Missing("common configuration"))?,
        notify: notify.ok_or(CapError::Missing("notify"))?,
        notify_multiplier,
        isr: isr.ok_or(CapError::Missing("ISR"))?,
        device: device.ok_or(CapError::Missing("device configuration"))?,
    })
}

/// The offset in the notify structure of a queue whose `queue_notify_off` is `off`:
/// `None` unless its 16-bit register lies inside the `window_len` bytes.
pub fn notify_offset(off: u16, multiplier: u32, window_len: u32) -> Option<u64> {
    let at = u64::from(off) * u64::from(multiplier);
    (at.is_multiple_of(2) && at + 2 <= u64::from(window_len)).then_some(at)
}

/// Whether a `size`-byte access at `offset` lies inside a window of `len` bytes.
pub fn access_inside(offset: u64, size: usize, len: u32) -> bool {
    offset
        .checked_add(size as u64)
        .is_some_and(|end| end <= u64::from(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A config space with the capability list `caps`: (offset, cfg_type, bar,
    /// offset in BAR, length, multiplier).
    fn config(caps: &[(u8, u8, u8, u32, u32, u32)]) -> [u8; CONFIG_SPACE] {
        let mut c = [0u8; CONFIG_SPACE];
        c[STATUS] = STATUS_CAPS as u8;
        c[CAPABILITIES_PTR] = caps.first().map_or(0, |c| c.0);
        for (i, &(at, ty, bar, off, len, mult)) in caps.iter().enumerate() {
            let at = usize::from(at);
            let mut body = [0u8; NOTIFY_CAP_LEN];
            body[0] = CAP_VENDOR;
            body[1] = caps.get(i + 1).map_or(0, |c| c.0);
            body[2] = NOTIFY_CAP_LEN as u8;
            body[3] = ty;
            body[4] = bar;
            body[8..12].copy_from_slice(&off.to_le_bytes());
            body[12..16].copy_from_slice(&len.to_le_bytes());
            body[16..20].copy_from_slice(&mult.to_le_bytes());
            let len = if ty == CFG_NOTIFY {
                NOTIFY_CAP_LEN
            } else {
                CAP_LEN
            };
            let n = (CONFIG_SPACE - at).min(len);
            c[at..at + n].copy_from_slice(&body[..n]);
        }
        c
    }

    fn bar4(n: u8) -> Option<Bar> {
        (n == 4).then_some(Bar {
            base: 0xe000_0000,
            size: 0x4000,
        })
    }

    /// QEMU's layout: four structures of 4 KiB each in BAR 4.
    fn qemu() -> Vec<(u8, u8, u8, u32, u32, u32)> {
        vec![
            (0x84, CFG_COMMON, 4, 0x0000, 0x1000, 0),
            (0x70, CFG_ISR, 4, 0x1000, 0x1000, 0),
            (0x60, CFG_DEVICE, 4, 0x2000, 0x1000, 0),
            (0x4c, CFG_NOTIFY, 4, 0x3000, 0x1000, 4),
        ]
    }

    #[test]
    fn finds_qemus_structures() {
        let caps = parse(&config(&qemu()), bar4).unwrap();
        assert_eq!(caps.common.base, 0xe000_0000);
        assert_eq!(caps.isr.base, 0xe000_1000);
        assert_eq!(caps.device.base, 0xe000_2000);
        assert_eq!(caps.notify.base, 0xe000_3000);
        assert_eq!(caps.notify_multiplier, 4);
        assert_eq!(notify_offset(1, 4, caps.notify.len), Some(4));
    }

    #[test]
    fn a_capability_at_the_end_of_config_space_is_an_error_not_an_overflow() {
        for at in [0xf0u8, 0xf4, 0xf8, 0xfc] {
            let mut caps = qemu();
            caps.push((at, CFG_NOTIFY, 4, 0x3000, 0x1000, 4));
            caps.remove(3);
            assert_eq!(
                parse(&config(&caps), bar4),
                Err(CapError::Truncated(at)),
                "cap at {at:#x}"
            );
        }
    }

    #[test]
    fn structures_outside_their_bar_are_refused() {
        let mut caps = qemu();
        caps[0].3 = 0x3800; // common: 0x3800 + 0x1000 > 0x4000
        assert_eq!(
            parse(&config(&caps), bar4),
            Err(CapError::OutsideBar("common configuration"))
        );
        let mut caps = qemu();
        caps[3].3 = u32::MAX; // notify: offset wraps
        assert_eq!(
            parse(&config(&caps), bar4),
            Err(CapError::OutsideBar("notify"))
        );
        let mut caps = qemu();
        caps[0].4 = 0x10; // common shorter than the registers we use
        assert!(parse(&config(&caps), bar4).is_err());
        // A structure across a 2 MiB boundary of the mapping the driver makes.
        let near = |n: u8| {
            (n == 4).then_some(Bar {
                base: 0xe01f_f000,
                size: 0x4000,
            })
        };
        let mut caps = qemu();
        caps[0].3 = 0x800;
        assert_eq!(
            parse(&config(&caps), near),
            Err(CapError::CrossesPage("common configuration"))
        );
    }

    #[test]
    fn notify_offsets_beyond_the_notify_window_are_refused() {
        let caps = parse(&config(&qemu()), bar4).unwrap();
        // 0x1000 bytes of notify structure, multiplier 4: offsets up to 1023 fit.
        assert_eq!(notify_offset(1023, 4, caps.notify.len), Some(4092));
        assert_eq!(notify_offset(1024, 4, caps.notify.len), None);
        assert_eq!(notify_offset(u16::MAX, u32::MAX, caps.notify.len), None);
    }

    #[test]
    fn a_looping_list_ends() {
        let mut c = config(&qemu());
        c[0x50 + 1] = 0x84; // notify -> common: a loop
        assert!(capabilities(&c, CAP_VENDOR).count() <= MAX_CAPS);
    }

    proptest! {
        /// Whatever the device puts in configuration space and whatever its BARs: no
        /// panic, and every window that comes out lies inside its BAR and one mapped
        /// page, and is long enough for the registers the driver uses.
        #[test]
        fn hostile_config_space_never_yields_a_bad_window(
            bytes in proptest::collection::vec(any::<u8>(), CONFIG_SPACE),
            size_log in 0u32..24,
            base_page in 0u64..0x10000,
        ) {
            let mut c = [0u8; CONFIG_SPACE];
            c.copy_from_slice(&bytes);
            let b = Bar { base: base_page << 12, size: 1 << size_log };
            let bar = |n: u8| (n < 6).then_some(b);
            if let Ok(caps) = parse(&c, bar) {
                for (w, min) in [
                    (caps.common, MIN_COMMON),
                    (caps.notify, MIN_NOTIFY),
                    (caps.isr, MIN_ISR),
                    (caps.device, MIN_DEVICE),
                ] {
                    prop_assert!(w.len >= min);
                    prop_assert!(w.base >= b.base);
                    prop_assert!(w.base + u64::from(w.len) <= b.base + b.size);
                    prop_assert_eq!(w.base / MAP_PAGE, (w.base + u64::from(w.len) - 1) / MAP_PAGE);
                }
                for off in [0u16, 1, 1000, u16::MAX] {
                    if let Some(at) = notify_offset(off, caps.notify_multiplier, caps.notify.len) {
                        prop_assert!(access_inside(at, 2, caps.notify.len));
                    }
                }
            }
        }

        /// Capabilities placed anywhere in config space, including its last bytes.
        #[test]
        fn capability_at_any_offset_never_panics(at in 0x40u8..=0xfc, ty in 1u8..5) {
            let at = at & 0xfc;
            let _ = parse(&config(&[(at, ty, 4, 0, 0x1000, 4)]), bar4);
        }
    }
}
