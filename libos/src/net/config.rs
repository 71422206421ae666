//! Network configuration from the command line (`ip=`, `mask=`, `gw=`; pure, host-tested).
//!
//! Without `ip=` the interface asks DHCP. `ip=` takes `A.B.C.D` or `A.B.C.D/PREFIX`;
//! `mask=` gives the prefix as a dotted netmask instead (default /24); `gw=` the default
//! router.
#![forbid(unsafe_code)]

use core::fmt;

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: [u8; 4],
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

/// How interfaces get their address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// A static address (`ip=`); `None` = DHCP.
    pub ip: Option<Cidr>,
    /// A static default router (`gw=`).
    pub gateway: Option<[u8; 4]>,
    /// `mask=` seen (applied to `ip=` whichever comes first).
    mask_prefix: Option<u8>,
    /// `offload=on|off`: drivers may use the card's offloads (default on).
    pub offload: bool,
}

impl NetConfig {
    /// DHCP, no static router.
    pub const fn new() -> Self {
        NetConfig {
            ip: None,
            gateway: None,
            mask_prefix: None,
            offload: true,
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig::new()
    }
}

/// Prefix used with `ip=A.B.C.D` when neither `/N` nor `mask=` is given.
pub const DEFAULT_PREFIX: u8 = 24;

/// Parses `A.B.C.D`.
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The prefix length of a contiguous netmask such as `255.255.255.0`.
pub fn mask_to_prefix(mask: [u8; 4]) -> Option<u8> {
    let m = u32::from_be_bytes(mask);
    let prefix = m.leading_ones();
    (m.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

impl NetConfig {
    /// Applies one option; `Err` names what is expected.
    pub fn set(&mut self, option: &str, value: &str) -> Result<(), &'static str> {
        match option {
            "ip" => {
                let (addr, prefix) = match value.split_once('/') {
                    Some((a, p)) => (
                        a,
                        Some(
                            p.parse::<u8>()
                                .ok()
                                .filter(|p| *p <= 32)
                                .ok_or(IP_EXPECTED)?,
                        ),
                    ),
                    None => (value, None),
                };
                let addr = parse_ipv4(addr).ok_or(IP_EXPECTED)?;
                let prefix = prefix.or(self.mask_prefix).unwrap_or(DEFAULT_PREFIX);
                self.ip = Some(Cidr { addr, prefix });
            }
            "mask" => {
                let prefix = parse_ipv4(value)
                    .and_then(mask_to_prefix)
                    .ok_or(MASK_EXPECTED)?;
                self.mask_prefix = Some(prefix);
                if let Some(ip) = &mut self.ip {
                    ip.prefix = prefix;
                }
            }
            "gw" => self.gateway = Some(parse_ipv4(value).ok_or(GW_EXPECTED)?),
            "offload" => {
                self.offload = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(OFFLOAD_EXPECTED),
                }
            }
            _ => return Err("a network option"),
        }
        Ok(())
    }
}

/// What `ip=` accepts.
pub const IP_EXPECTED: &str = "an IPv4 address A.B.C.D or A.B.C.D/PREFIX";
/// What `mask=` accepts.
pub const MASK_EXPECTED: &str = "a netmask such as 255.255.255.0";
/// What `offload=` accepts.
pub const OFFLOAD_EXPECTED: &str = "on|off (the network card's offloads)";
/// What `gw=` accepts.
pub const GW_EXPECTED: &str = "an IPv4 address A.B.C.D";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_masks_and_gateways() {
        let mut c = NetConfig::default();
        c.set("ip", "10.0.2.15").unwrap();
        assert_eq!(
            c.ip,
            Some(Cidr {
                addr: [10, 0, 2, 15],
                prefix: 24
            })
        );
        c.set("mask", "255.255.0.0").unwrap();
        assert_eq!(c.ip.unwrap().prefix, 16);
        c.set("ip", "192.168.1.2/30").unwrap();
        assert_eq!(c.ip.unwrap().to_string(), "192.168.1.2/30");
        c.set("gw", "10.0.2.2").unwrap();
        assert_eq!(c.gateway, Some([10, 0, 2, 2]));
        // mask= before ip= applies too.
        let mut d = NetConfig::default();
        d.set("mask", "255.0.0.0").unwrap();
        d.set("ip", "10.1.2.3").unwrap();
        assert_eq!(d.ip.unwrap().prefix, 8);
    }

    #[test]
    fn offloads_are_on_unless_turned_off() {
        let mut c = NetConfig::default();
        assert!(c.offload);
        c.set("offload", "off").unwrap();
        assert!(!c.offload);
        c.set("offload", "on").unwrap();
        assert!(c.offload);
        assert_eq!(c.set("offload", "no"), Err(OFFLOAD_EXPECTED));
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut c = NetConfig::default();
        for bad in [
            "10.0.2",
            "10.0.2.256",
            "a.b.c.d",
            "10.0.2.15/33",
            "1.2.3.4.5",
            "",
            "1..2.3",
        ] {
            assert!(c.set("ip", bad).is_err(), "{bad}");
        }
        assert_eq!(c.set("mask", "255.0.255.0"), Err(MASK_EXPECTED));
        assert_eq!(c.set("gw", "x"), Err(GW_EXPECTED));
        assert_eq!(c, NetConfig::default());
    }

    proptest! {
        #[test]
        fn dotted_quads_round_trip(a in any::<[u8; 4]>(), p in 0u8..=32) {
            let s = format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3]);
            let mut c = NetConfig::default();
            c.set("ip", &s).unwrap();
            prop_assert_eq!(c.ip.unwrap().to_string(), s);
            let mask = (u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0)).to_be_bytes();
            prop_assert_eq!(mask_to_prefix(mask), Some(p));
        }

        #[test]
        fn never_panics(s in ".{0,20}") {
            let mut c = NetConfig::default();
            let _ = c.set("ip", &s);
            let _ = c.set("mask", &s);
            let _ = c.set("gw", &s);
        }
    }
}
