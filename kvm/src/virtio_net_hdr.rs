//! virtio-net's per-frame header and the checksum offloads it carries (pure;
//! host-tested and fuzzed).
//!
//! With `VIRTIO_NET_F_CSUM` the driver sends TCP segments without their checksum:
//! smoltcp leaves the field zero, [`tx_offload`] puts the pseudo-header sum there and
//! returns a header with `NEEDS_CSUM` and `csum_start`/`csum_offset`, and the device
//! (or the host kernel behind a TAP) finishes it. With `VIRTIO_NET_F_GUEST_CSUM` the
//! device may hand frames over marked `DATA_VALID` (checksum verified) or `NEEDS_CSUM`
//! (a partial checksum from the host, completed here by [`rx_checksum`]); TCP frames
//! with neither flag are verified here, since smoltcp then no longer does. Every
//! device-supplied offset is checked against the frame: a hostile header drops its
//! frame with an [`HdrError`], never a panic or an access out of bounds.
#![forbid(unsafe_code)]

use core::fmt;

// The Internet checksum's sums, shared with netfront's offloads.
use libos::net::tso::{fold, sum};

/// Bytes of the header in front of every frame (virtio 1.x, with `num_buffers`).
pub const LEN: usize = 12;
/// Flag: the checksum from `csum_start` on still has to be computed.
pub const NEEDS_CSUM: u8 = 1;
/// Flag: the device verified the checksum (receive only).
pub const DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;

const ETHERNET: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
/// Where the checksum lies in a TCP header.
const TCP_CSUM_OFFSET: u16 = 16;

/// The header (`struct virtio_net_hdr_v1`), all fields little-endian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl Header {
    /// Reads a header (any 12 bytes are a header; the fields are checked where used).
    pub fn parse(b: &[u8; LEN]) -> Header {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// `NEEDS_CSUM` with a checksum field outside the frame.
    BadCsumOffsets { start: u16, offset: u16, len: usize },
    /// A TCP segment the device did not vouch for has a wrong checksum.
    BadChecksum,
}

impl fmt::Display for HdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HdrError::BadCsumOffsets { start, offset, len } => write!(
                f,
                "NEEDS_CSUM at {start}+{offset} outside a {len}-byte frame"
            ),
            HdrError::BadChecksum => write!(f, "bad TCP checksum"),
        }
    }
}

/// An IPv4 TCP segment inside an Ethernet frame: where its TCP header starts, where the
/// IP packet ends, and its pseudo-header sum (not folded or complemented).
struct TcpV4 {
    start: usize,
    end: usize,
    pseudo: u32,
}

/// Finds the TCP segment in `frame`, if it is a well-formed unfragmented IPv4 TCP
/// frame (anything else is left to smoltcp).
fn tcp_v4(frame: &[u8]) -> Option<TcpV4> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETHERNET..)?;
    if ethertype != ETHERTYPE_IPV4 || ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != PROTO_TCP {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // A fragment's checksum covers the whole datagram: smoltcp reassembles nothing, so
    // leave it alone (it drops it).
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ihl < 20 || total < ihl + 20 || total > ip.len() || fragment {
        return None;
    }
    let tcp_len = (total - ihl) as u32;
    let mut pseudo = sum(&ip[12..20], 0);
    pseudo += u32::from(PROTO_TCP) + tcp_len;
    Some(TcpV4 {
        start: ETHERNET + ihl,
        end: ETHERNET + total,
        pseudo,
    })
}

/// Prepares a frame for a device with `VIRTIO_NET_F_CSUM`: an IPv4 TCP segment gets
/// its pseudo-header sum in the checksum field and a `NEEDS_CSUM` header; any other
/// frame (ARP, ICMP, UDP: smoltcp checksums those itself) a plain header.
pub fn tx_offload(frame: &mut [u8]) -> Header {
    let Some(t) = tcp_v4(frame) else {
        return Header::default();
    };
    let field = t.start + usize::from(TCP_CSUM_OFFSET);
    if field + 2 > t.end {
        return Header::default();
    }
    frame[field..field + 2].copy_from_slice(&fold(t.pseudo).to_be_bytes());
    Header {
        flags: NEEDS_CSUM,
        gso_type: GSO_NONE,
        csum_start: t.start as u16,
        csum_offset: TCP_CSUM_OFFSET,
        ..Header::default()
    }
}

/// What receive must do with a frame under `VIRTIO_NET_F_GUEST_CSUM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxCsum {
    /// Deliver it as it is (the device vouched for it, it was verified here, or it is
    /// not TCP, which smoltcp still checks).
    Deliver,
    /// Deliver it after [`complete`] filled in its partial checksum.
    Complete { start: usize, field: usize },
}

/// Decides what to do with a received frame and its header under
/// `VIRTIO_NET_F_GUEST_CSUM` (smoltcp does not verify TCP checksums then).
pub fn rx_checksum(h: &Header, frame: &[u8]) -> Result<RxCsum, HdrError> {
    if h.flags & NEEDS_CSUM != 0 {
        let (start, offset) = (usize::from(h.csum_start), usize::from(h.csum_offset));
        let field = start + offset;
        if field + 2 > frame.len() {
            return Err(HdrError::BadCsumOffsets {
                start: h.csum_start,
                offset: h.csum_offset,
                len: frame.len(),
            });
        }
        return Ok(RxCsum::Complete { start, field });
    }
    if h.flags & DATA_VALID != 0 {
        return Ok(RxCsum::Deliver);
    }
    match tcp_v4(frame) {
        Some(t) if fold(sum(&frame[t.start..t.end], t.pseudo)) != 0xffff => {
            Err(HdrError::BadChecksum)
        }
        _ => Ok(RxCsum::Deliver),
    }
}

/// Fills in a partial checksum as [`RxCsum::Complete`] says: the field holds the
/// pseudo-header sum; the checksum covers `frame[start..]` (up to the IPv4 packet's
/// end where the frame is IPv4, so Ethernet padding is not summed).
pub fn complete(frame: &mut [u8], start: usize, field: usize) {
    let end = tcp_v4(frame)
        .map_or(frame.len(), |t| t.end)
        .min(frame.len());
    if field + 2 > end || start > field {
        return;
    }
    let csum = !fold(sum(&frame[start..end], 0));
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// An Ethernet + IPv4 + TCP frame with `payload`, checksum filled in correctly.
    fn segment(payload: &[u8], pad: usize) -> Vec<u8> {
        let total = 20 + 20 + payload.len();
        let mut f = vec![0u8; ETHERNET];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, PROTO_TCP, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&80u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18;
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        // Reference checksum, computed independently of `sum`.
        let t = tcp_v4(&f).unwrap();
        let mut acc: u64 = 0;
        let mut bytes = f[t.start..t.end].to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        for w in bytes.chunks(2) {
            acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        for w in f[ETHERNET + 12..ETHERNET + 20].chunks(2) {
            acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        acc += u64::from(PROTO_TCP) + (t.end - t.start) as u64;
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        let c = !(acc as u16);
        f[t.start + 16..t.start + 18].copy_from_slice(&c.to_be_bytes());
        f.extend(core::iter::repeat_n(0xee, pad));
        f
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            flags: 1,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        assert_eq!(Header::parse(&h.to_bytes()), h);
        assert_eq!(h.to_bytes()[4..6], 1448u16.to_le_bytes());
    }

    #[test]
    fn non_tcp_frames_are_left_alone() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let before = arp.clone();
        assert_eq!(tx_offload(&mut arp), Header::default());
        assert_eq!(arp, before);
        assert_eq!(rx_checksum(&Header::default(), &arp), Ok(RxCsum::Deliver));
    }

    proptest! {
        /// What the driver leaves for the device, completed the way the device does,
        /// is the right checksum (odd lengths and padding included).
        #[test]
        fn tx_offload_then_device_completion_is_correct(
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
            pad in 0usize..8,
        ) {
            let good = segment(&payload, pad);
            let mut f = good.clone();
            let t = tcp_v4(&f).unwrap();
            f[t.start + 16..t.start + 18].fill(0); // as smoltcp leaves it
            let h = tx_offload(&mut f);
            prop_assert_eq!(h.flags, NEEDS_CSUM);
            prop_assert_eq!(usize::from(h.csum_start), t.start);
            // Device side (virtio spec 5.1.6.2): checksum from csum_start to the end of
            // the packet, stored at csum_start + csum_offset.
            let field = usize::from(h.csum_start + h.csum_offset);
            let c = !fold(sum(&f[t.start..t.end], 0));
            f[field..field + 2].copy_from_slice(&c.to_be_bytes());
            prop_assert_eq!(&f, &good);
            // And receive accepts it without any flag, as smoltcp would.
            prop_assert_eq!(rx_checksum(&Header::default(), &f), Ok(RxCsum::Deliver));
        }

        /// A host-partial frame (`NEEDS_CSUM`) is completed to the right checksum.
        #[test]
        fn rx_partial_checksums_are_completed(
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
            pad in 0usize..8,
        ) {
            let good = segment(&payload, pad);
            let mut f = good.clone();
            let h = tx_offload(&mut f);
            match rx_checksum(&h, &f) {
                Ok(RxCsum::Complete { start, field }) => complete(&mut f, start, field),
                other => prop_assert!(false, "{:?}", other),
            }
            prop_assert_eq!(f, good);
        }

        /// A flipped bit in a TCP segment nobody vouched for is caught; with
        /// DATA_VALID the device's word is taken.
        #[test]
        fn corrupt_segments_are_dropped_unless_vouched_for(
            payload in proptest::collection::vec(any::<u8>(), 1..600),
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut f = segment(&payload, 0);
            let t = tcp_v4(&f).unwrap();
            let i = t.start + bit.index((t.end - t.start) * 8) / 8;
            f[i] ^= 1 << (bit.index(8));
            prop_assert_eq!(rx_checksum(&Header::default(), &f), Err(HdrError::BadChecksum));
            let valid = Header { flags: DATA_VALID, ..Header::default() };
            prop_assert_eq!(rx_checksum(&valid, &f), Ok(RxCsum::Deliver));
        }

        /// Hostile headers and frames: never a panic, never an access outside the
        /// frame; a completion stays inside it.
        #[test]
        fn hostile_headers_and_frames(
            hdr in any::<[u8; LEN]>(),
            mut frame in proptest::collection::vec(any::<u8>(), 0..200),
            ipv4 in any::<bool>(),
        ) {
            if ipv4 && frame.len() >= 34 {
                frame[12] = 0x08;
                frame[13] = 0x00;
                frame[14] = 0x40 | (frame[14] & 0xf);
                frame[23] = PROTO_TCP;
            }
            let h = Header::parse(&hdr);
            let len = frame.len();
            match rx_checksum(&h, &frame) {
                Ok(RxCsum::Complete { start, field }) => {
                    prop_assert!(field + 2 <= len);
                    complete(&mut frame, start, field);
                }
                Ok(RxCsum::Deliver) | Err(_) => {}
            }
            prop_assert_eq!(frame.len(), len);
            let _ = tx_offload(&mut frame);
        }
    }
}
