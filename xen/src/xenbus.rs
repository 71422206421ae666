//! What a frontend reads from xenstore about its device and its backend: the xenbus
//! state of either end (`enum xenbus_state`) and the device's MAC address (pure;
//! host-tested).
#![forbid(unsafe_code)]

/// Parses a xenstore `mac` value, `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `enum xenbus_state`, as xenstore spells it (`"4"` = connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenbusState {
    /// 1: setting up.
    Initialising,
    /// 2: backend waiting for the frontend's details.
    InitWait,
    /// 3: details written.
    Initialised,
    /// 4: running.
    Connected,
    /// 5: going away.
    Closing,
    /// 6: gone.
    Closed,
    /// 0, 7, 8 (unknown, reconfiguring, reconfigured).
    Other(u8),
}

impl XenbusState {
    /// Parses a state node's value; `None` if it is not a number.
    pub fn parse(s: &str) -> Option<XenbusState> {
        Some(match s.trim().parse::<u8>().ok()? {
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            n => XenbusState::Other(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_states_parse() {
        assert_eq!(
            parse_mac("00:16:3e:0a:Bb:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0xbb, 0xff])
        );
        for bad in [
            "",
            "00:16:3e:0a:bb",
            "00:16:3e:0a:bb:ff:00",
            "0:16:3e:0a:bb:ff",
            "zz:16:3e:0a:bb:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(XenbusState::parse("4"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse("8"), Some(XenbusState::Other(8)));
        assert_eq!(XenbusState::parse("x"), None);
    }
}
