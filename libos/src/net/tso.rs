//! Transmit segmentation offload, the driver's half (pure; host-tested and fuzzed).
//!
//! smoltcp never builds a TCP segment larger than the peer's MSS (1460 bytes behind a
//! 1500-byte MTU), so a bulk transfer leaves the stack as a train of full-sized
//! segments of one flow, back to back within one poll. A card that cuts large
//! segments itself (netfront with `feature-gso-tcpv4`: netback, or dom0's NIC, does
//! the cutting) is better fed with one 64 KiB frame than with 45 small ones: one
//! request chain, one trip through the backend's bridge and firewall, one interrupt.
//! [`Coalescer`] merges such a train back into one segment, exactly as Linux's GSO
//! will cut it again: every merged segment carries the same Ethernet, IP and TCP
//! headers but for the IP length, id and checksum, the sequence number, PSH and the
//! TCP checksum; the payloads are contiguous in sequence space; all but the last are
//! `gso_size` bytes long. Anything else (SYN, FIN, RST, URG, ECN flags, IP options,
//! fragments, padding, pure ACKs) passes alone.
//!
//! [`partial_checksum`] prepares a TCP segment for checksum offload (Linux's
//! `CHECKSUM_PARTIAL`): the pseudo-header sum in the checksum field.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

const ETHERNET: usize = 14;
const IP: usize = 20;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const PROTO_TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Where the checksum lies in a TCP header.
const TCP_CSUM: usize = 16;
/// The largest IPv4 packet.
pub const MAX_IP_PACKET: usize = 65535;

/// A data-carrying IPv4 TCP segment without IP options, unfragmented, whose only
/// flags are ACK and maybe PSH.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// End of the TCP header (start of the payload).
    header: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

fn segment(frame: &[u8]) -> Option<Segment> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET..ETHERNET + IP)?;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // Version 4, no options; DF alone may be set (no MF, no offset); exactly the
    // frame's length (no Ethernet padding to carry along).
    if ip[0] != 0x45
        || ip[9] != PROTO_TCP
        || u16::from_be_bytes([ip[6], ip[7]]) & 0xbfff != 0
        || ETHERNET + total != frame.len()
    {
        return None;
    }
    let tcp = frame.get(ETHERNET + IP..ETHERNET + IP + 20)?;
    let header = ETHERNET + IP + usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    if header < ETHERNET + IP + 20 || header >= frame.len() || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some(Segment {
        header,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        payload: frame.len() - header,
        psh: flags & TCP_PSH != 0,
    })
}

/// Whether header bytes `a` and `b` (equally long) agree wherever GSO copies one
/// header to every segment: all but the IP length, id and checksum, the sequence
/// number, the flags and the TCP checksum.
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    const T: usize = ETHERNET + IP;
    let varies = |i: usize| {
        matches!(i - ETHERNET, 2..=5 | 10 | 11) && i < T
            || i >= T && matches!(i - T, 4..=7 | 13 | 16 | 17)
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| x == y || (i >= ETHERNET && varies(i)))
}

/// A merged segment ready for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The frame: the first segment's headers (IP length and checksum fixed, PSH if
    /// the last had it), then every payload. Its TCP checksum field is whatever the
    /// first segment had: call [`partial_checksum`] for checksum offload.
    pub frame: Vec<u8>,
    /// Payload bytes per segment (the card cuts at this size).
    pub gso_size: u16,
    /// How many segments were merged (1: an ordinary frame, send it without GSO).
    pub segments: u16,
}

/// Merges consecutive segments of one TCP flow (see the module docs).
#[derive(Debug)]
pub struct Coalescer {
    limit: usize,
    buf: Vec<u8>,
    header: usize,
    segments: u16,
    gso_size: u16,
    next_seq: u32,
    /// A short or PSH segment ended the train.
    closed: bool,
}

impl Coalescer {
    /// Merged frames stay within `limit` bytes (Ethernet header included, at most
    /// 14 + 65535).
    pub fn new(limit: usize) -> Self {
        Coalescer {
            limit: limit.min(ETHERNET + MAX_IP_PACKET),
            buf: Vec::new(),
            header: 0,
            segments: 0,
            gso_size: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// Whether a frame is held.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Takes `frame` into the held batch (or starts one with it); `false` if it cannot
    /// join: then [`Coalescer::take`] the batch, send it, and offer the frame again
    /// (a frame refused by an empty coalescer is sent alone).
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let Some(s) = segment(frame) else {
            return false;
        };
        if frame.len() > self.limit || s.payload > usize::from(u16::MAX) {
            return false;
        }
        if self.segments == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(frame);
            self.header = s.header;
            self.segments = 1;
            self.gso_size = s.payload as u16;
            self.next_seq = s.seq.wrapping_add(s.payload as u32);
            self.closed = s.psh;
            return true;
        }
        if self.closed
            || s.header != self.header
            || s.seq != self.next_seq
            || s.payload > usize::from(self.gso_size)
            || self.buf.len() + s.payload > self.limit
            || self.segments == u16::MAX
            || !same_flow(&self.buf[..self.header], &frame[..s.header])
        {
            return false;
        }
        self.buf.extend_from_slice(&frame[s.header..]);
        self.segments += 1;
        self.next_seq = s.seq.wrapping_add(s.payload as u32);
        if s.psh {
            self.buf[ETHERNET + IP + 13] |= TCP_PSH;
        }
        self.closed = s.psh || s.payload < usize::from(self.gso_size);
        true
    }

    /// The held batch, if any, with its IP header made whole again.
    pub fn take(&mut self) -> Option<Batch> {
        if self.segments == 0 {
            return None;
        }
        let mut frame = core::mem::take(&mut self.buf);
        let total = (frame.len() - ETHERNET) as u16;
        frame[ETHERNET + 2..ETHERNET + 4].copy_from_slice(&total.to_be_bytes());
        frame[ETHERNET + 10..ETHERNET + 12].fill(0);
        let csum = !fold(sum(&frame[ETHERNET..ETHERNET + IP], 0));
        frame[ETHERNET + 10..ETHERNET + 12].copy_from_slice(&csum.to_be_bytes());
        let batch = Batch {
            frame,
            gso_size: self.gso_size,
            segments: self.segments,
        };
        self.segments = 0;
        Some(batch)
    }
}

/// Adds `data` as big-endian 16-bit words (a trailing byte padded) to `acc`.
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
        if acc >= 0x8000_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = words.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a sum to 16 bits (one's complement addition).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// For an IPv4 TCP frame: where its TCP checksum field lies and the pseudo-header sum
/// (folded, not complemented) that checksum offload expects there, for a TCP length
/// taken from the IP header; `None` for anything else, or a malformed frame.
pub fn partial_checksum(frame: &[u8]) -> Option<(usize, u16)> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET..ETHERNET + IP)?;
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ip[0] >> 4 != 4
        || ip[9] != PROTO_TCP
        || ihl < IP
        || total < ihl + 20
        || ETHERNET + total > frame.len()
        || fragment
    {
        return None;
    }
    let pseudo = sum(&ip[12..20], u32::from(PROTO_TCP) + (total - ihl) as u32);
    Some((ETHERNET + ihl + TCP_CSUM, fold(pseudo)))
}

/// Completes a partial checksum in place (checksum offload on receive: the backend
/// left only the pseudo-header sum in the field) of an IPv4 TCP or UDP frame, over the
/// IP packet's length; `false` (and nothing written) for anything else.
pub fn complete_checksum(frame: &mut [u8]) -> bool {
    const PROTO_UDP: u8 = 17;
    let Some(ip) = frame.get(ETHERNET..ETHERNET + IP) else {
        return false;
    };
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let field = match ip[9] {
        PROTO_TCP => TCP_CSUM,
        PROTO_UDP => 6,
        _ => return false,
    };
    let (start, end) = (ETHERNET + ihl, ETHERNET + total);
    if frame[12..14] != ETHERTYPE_IPV4
        || ip[0] >> 4 != 4
        || ihl < IP
        || end > frame.len()
        || start + field + 2 > end
    {
        return false;
    }
    let mut csum = !fold(sum(&frame[start..end], 0));
    if csum == 0 && field == 6 {
        csum = 0xffff;
    }
    frame[start + field..start + field + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// Ethernet + IPv4 + TCP (20-byte header + `opts`) with `payload`.
    fn seg(seq: u32, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + opts.len();
        let total = IP + tcp_len + payload.len();
        let mut f = vec![0u8; ETHERNET];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, seq as u8, 0x40, 0, 64, PROTO_TCP, 0, 0]);
        f[ETHERNET + 2..ETHERNET + 4].copy_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.push(((tcp_len / 4) as u8) << 4);
        f.push(flags);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(opts);
        f.extend_from_slice(payload);
        f
    }

    fn ip_ok(frame: &[u8]) -> bool {
        fold(sum(&frame[ETHERNET..ETHERNET + IP], 0)) == 0xffff
    }

    /// Cuts a batch as Linux's GSO does: the payload in `gso_size` pieces, each with
    /// the batch's headers, sequence numbers advanced, PSH only on the last.
    fn resegment(b: &Batch) -> Vec<Vec<u8>> {
        let s = segment(&b.frame).expect("a batch is a segment");
        let payload = &b.frame[s.header..];
        let n = payload.chunks(usize::from(b.gso_size)).count();
        payload
            .chunks(usize::from(b.gso_size))
            .enumerate()
            .map(|(i, p)| {
                let off = i * usize::from(b.gso_size);
                let flags = if i + 1 == n && s.psh {
                    TCP_ACK | TCP_PSH
                } else {
                    TCP_ACK
                };
                let mut f = b.frame[..s.header].to_vec();
                f[ETHERNET + IP + 4..ETHERNET + IP + 8]
                    .copy_from_slice(&s.seq.wrapping_add(off as u32).to_be_bytes());
                f[ETHERNET + IP + 13] = flags;
                f.extend_from_slice(p);
                f
            })
            .collect()
    }

    #[test]
    fn a_train_of_full_segments_becomes_one() {
        let mut c = Coalescer::new(65536);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut seq = 1000u32;
        for (i, chunk) in data.chunks(1460).enumerate() {
            let flags = if i == 3 { TCP_ACK | TCP_PSH } else { TCP_ACK };
            assert!(c.push(&seg(seq, flags, chunk, &[])), "segment {i}");
            seq += chunk.len() as u32;
        }
        // After the short PSH segment nothing joins.
        assert!(!c.push(&seg(seq, TCP_ACK, &data[..10], &[])));
        let b = c.take().unwrap();
        assert_eq!((b.gso_size, b.segments), (1460, 4));
        assert_eq!(b.frame.len(), ETHERNET + IP + 20 + 5000);
        assert_eq!(&b.frame[ETHERNET + IP + 20..], &data[..]);
        assert!(ip_ok(&b.frame));
        assert_eq!(b.frame[ETHERNET + IP + 13], TCP_ACK | TCP_PSH);
        assert!(c.is_empty() && c.take().is_none());
    }

    #[test]
    fn what_may_not_join_is_refused() {
        let p = [1u8; 100];
        let mut c = Coalescer::new(65536);
        assert!(c.push(&seg(0, TCP_ACK, &p, &[])));
        // A gap, a longer segment, another flag, other options, a pure ACK.
        assert!(!c.push(&seg(101, TCP_ACK, &p, &[])));
        assert!(!c.push(&seg(100, TCP_ACK, &[1u8; 101], &[])));
        assert!(!c.push(&seg(100, TCP_ACK | 0x01, &p, &[])));
        assert!(!c.push(&seg(100, TCP_ACK, &p, &[1, 1, 1, 1])));
        assert!(!c.push(&seg(100, TCP_ACK, &[], &[])));
        let mut other_port = seg(100, TCP_ACK, &p, &[]);
        other_port[ETHERNET + IP + 1] ^= 1;
        assert!(!c.push(&other_port));
        let mut padded = seg(100, TCP_ACK, &p, &[]);
        padded.push(0);
        assert!(!c.push(&padded));
        assert!(c.push(&seg(100, TCP_ACK, &p, &[])));
        assert_eq!(c.take().unwrap().segments, 2);
        // Over the limit: refused, and alone it is never taken.
        let mut small = Coalescer::new(200);
        assert!(small.push(&seg(0, TCP_ACK, &p, &[])));
        assert!(!small.push(&seg(100, TCP_ACK, &p, &[])));
        assert!(!Coalescer::new(100).push(&seg(0, TCP_ACK, &p, &[])));
    }

    #[test]
    fn partial_checksum_is_the_pseudo_header_sum() {
        let mut f = seg(5, TCP_ACK, b"hello", &[]);
        let (field, pseudo) = partial_checksum(&f).unwrap();
        assert_eq!(field, ETHERNET + IP + TCP_CSUM);
        // Completing it over the TCP segment gives a checksum that verifies.
        f[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        let csum = !fold(sum(&f[ETHERNET + IP..], 0));
        f[field..field + 2].copy_from_slice(&csum.to_be_bytes());
        let check = sum(&f[ETHERNET + 12..ETHERNET + 20], 6 + 25);
        assert_eq!(fold(sum(&f[ETHERNET + IP..], check)), 0xffff);
        let mut udp = f.clone();
        udp[ETHERNET + 9] = 17;
        assert_eq!(partial_checksum(&udp), None);
        assert_eq!(partial_checksum(&f[..30]), None);
    }

    #[test]
    fn a_partial_checksum_is_completed_on_receive() {
        let mut f = seg(5, TCP_ACK, b"some payload", &[]);
        let (field, pseudo) = partial_checksum(&f).unwrap();
        f[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        assert!(complete_checksum(&mut f));
        let check = sum(&f[ETHERNET + 12..ETHERNET + 20], 6 + 32);
        assert_eq!(fold(sum(&f[ETHERNET + IP..], check)), 0xffff);
        let mut short = f[..40].to_vec();
        assert!(!complete_checksum(&mut short));
        assert_eq!(short, f[..40]);
    }

    proptest! {
        /// Whatever frames come, in whatever order: merged batches cut up again as GSO
        /// does give back exactly the segments pushed, in order; every batch's IP
        /// header checksums; and nothing exceeds the limit.
        #[test]
        fn batches_resegment_to_what_was_pushed(
            ops in proptest::collection::vec((0u8..6, 1usize..1600, any::<u8>()), 1..60),
            limit in 60usize..70000,
        ) {
            let mut c = Coalescer::new(limit);
            let mut seq = 0u32;
            let mut sent: Vec<Vec<u8>> = Vec::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let flush = |c: &mut Coalescer, got: &mut Vec<Vec<u8>>| {
                if let Some(b) = c.take() {
                    prop_assert!(b.frame.len() <= limit.min(ETHERNET + MAX_IP_PACKET));
                    prop_assert!(ip_ok(&b.frame));
                    let parts = resegment(&b);
                    prop_assert_eq!(parts.len(), usize::from(b.segments));
                    got.extend(parts);
                }
                Ok(())
            };
            for (kind, len, byte) in ops {
                let payload = vec![byte; len];
                let f = match kind {
                    0 => { let f = seg(seq, TCP_ACK, &payload, &[]); seq += len as u32; f }
                    1 => { let f = seg(seq, TCP_ACK | TCP_PSH, &payload, &[]); seq += len as u32; f }
                    2 => seg(seq.wrapping_add(7), TCP_ACK, &payload, &[]),
                    3 => seg(seq, TCP_ACK | 0x01, &payload, &[]),
                    4 => seg(seq, TCP_ACK, &[], &[]),
                    _ => payload.clone(),
                };
                if !c.push(&f) {
                    flush(&mut c, &mut got)?;
                    if !c.push(&f) {
                        got.push(f.clone());
                    }
                }
                // Non-segments go out as they are; segments as GSO cuts them (IP
                // header rebuilt by take, so compare after normalising it).
                sent.push(f);
            }
            flush(&mut c, &mut got)?;
            prop_assert_eq!(got.len(), sent.len());
            for (g, s) in got.iter().zip(&sent) {
                // GSO restores length, id and checksum per segment from its own rules;
                // compare everything else.
                prop_assert_eq!(g.len(), s.len());
                if g.len() < ETHERNET + IP {
                    prop_assert_eq!(g, s);
                } else {
                    prop_assert_eq!(&g[..ETHERNET + 2], &s[..ETHERNET + 2]);
                    prop_assert_eq!(&g[ETHERNET + 12..], &s[ETHERNET + 12..]);
                }
            }
        }

        /// Hostile bytes never panic and never join a batch unless they are a proper
        /// segment of its flow.
        #[test]
        fn arbitrary_bytes_are_harmless(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut c = Coalescer::new(65536);
            for f in &frames {
                if !c.push(f) { let _ = c.take(); let _ = c.push(f); }
                let _ = partial_checksum(f);
                let _ = complete_checksum(&mut f.clone());
            }
            if let Some(b) = c.take() { prop_assert!(segment(&b.frame).is_some()); }
        }
    }
}
