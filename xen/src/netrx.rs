//! Netfront's receive chains: a frame in several slots (`feature-sg`) with a GSO
//! extra-info slot (`feature-gso-tcpv4`), put together slot by slot from what the
//! backend writes, every field checked (pure; host-tested and fuzzed).
//!
//! With scatter-gather, netback answers one frame with a chain of RX responses: the
//! first carries the flags (checksum state, `NETRXF_extra_info`) and each slot's
//! `status` is that slot's byte count; `NETRXF_more_data` on every slot but the last.
//! With `NETRXF_extra_info`, the slot after the first holds a `netif_extra_info`
//! instead of a response (GSO: the segment size); it used up the buffer posted in that
//! ring slot without writing it, so that buffer is known only from the ring slot
//! (`posted`), not from an id. A hostile backend may send chains that never end, more
//! slots or bytes than a frame has, ids not in flight, offsets outside a page, flags in
//! the wrong slot or unknown extra types: each ends as [`Step::Dropped`] once the
//! chain ends (its buffers go back to the ring), and an id we cannot account for is
//! fatal ([`RingError::UnknownId`]). Nothing accumulates without bound: past
//! [`MAX_RX_SLOTS`] slots a chain keeps no more fragments.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::netif::{
    EXTRA_TYPE_GSO, F_EXTRA_INFO, F_MORE_DATA, GSO_TYPE_TCPV4, InFlight, MIN_FRAME, PAGE,
    RXF_CSUM_BLANK, RXF_DATA_VALIDATED, RingError,
};

/// Most slots (data and extra) one received frame may take: a 64 KiB frame in whole
/// pages is 17, plus its GSO slot; netback stays within `XEN_NETBK_LEGACY_SLOTS_MAX`.
pub const MAX_RX_SLOTS: usize = 19;
/// The largest frame accepted: an Ethernet header and the largest IPv4 packet.
pub const MAX_RX_FRAME: usize = 14 + 65535;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
const EXTRA_FLAG_MORE: u8 = 1;

/// `len` bytes at `offset` in buffer `id`'s page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frag {
    /// The buffer.
    pub id: u16,
    /// Offset in its page.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

/// A whole frame: its fragments in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where its bytes lie.
    pub frags: Vec<Frag>,
    /// Their total.
    pub len: usize,
    /// The checksum field holds only the pseudo-header sum (`NETRXF_csum_blank`).
    pub csum_blank: bool,
    /// The backend cut nothing: a large TCP segment of `gso_size`-byte pieces.
    pub gso_size: Option<u16>,
}

/// What one slot did to the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The chain goes on.
    More,
    /// The chain ended with a good frame.
    Frame(Frame),
    /// The chain ended, but the frame is bad: dropped (its buffers are posted again).
    Dropped(RingError),
}

/// The chain being received.
#[derive(Debug, Default)]
pub struct RxChain {
    frags: Vec<Frag>,
    len: usize,
    slots: usize,
    flags: u16,
    gso_size: Option<u16>,
    /// Extra-info slots still due.
    extras_due: bool,
    /// More data slots follow.
    more: bool,
    error: Option<RingError>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl RxChain {
    /// An empty chain.
    pub fn new() -> Self {
        RxChain::default()
    }

    /// Whether a chain is half received.
    pub fn in_progress(&self) -> bool {
        self.slots > 0
    }

    fn fail(&mut self, e: RingError) {
        self.error.get_or_insert(e);
    }

    /// Consumes the response in the next ring slot, `entry`; `posted` is the buffer we
    /// posted in that slot. Returns the buffer the slot answered (ours again: end its
    /// grant, keep it until the chain ends) and what the chain did. `Err`: the backend
    /// named a buffer not in flight; the card must stop.
    pub fn push(
        &mut self,
        entry: &[u8],
        posted: u16,
        in_flight: &mut InFlight,
    ) -> Result<(u16, Step), RingError> {
        self.slots += 1;
        let id = if self.extras_due {
            in_flight.complete(posted)?;
            self.extra(entry);
            posted
        } else {
            let id = u16_at(entry, 0);
            in_flight.complete(id)?;
            self.data(id, entry);
            id
        };
        if self.slots > MAX_RX_SLOTS {
            self.fail(RingError::RxChainTooLong);
        }
        if self.extras_due || self.more {
            return Ok((id, Step::More));
        }
        Ok((id, self.finish()))
    }

    fn extra(&mut self, entry: &[u8]) {
        let (kind, flags) = (entry[0], entry[1]);
        let (size, gso_type) = (u16_at(entry, 2), entry[4]);
        self.extras_due = flags & EXTRA_FLAG_MORE != 0;
        // A second GSO slot in one chain is as wrong as an unknown type.
        let bad = kind != EXTRA_TYPE_GSO || gso_type != GSO_TYPE_TCPV4 || size == 0;
        if bad || self.gso_size.replace(size).is_some() {
            self.fail(RingError::BadRxExtra(kind));
        }
    }

    fn data(&mut self, id: u16, entry: &[u8]) {
        let (offset, flags, status) = (u16_at(entry, 2), u16_at(entry, 4), u16_at(entry, 6) as i16);
        let first = self.slots == 1;
        self.more = flags & F_MORE_DATA != 0;
        let allowed = if first {
            F_MORE_DATA | F_EXTRA_INFO | RXF_CSUM_BLANK | RXF_DATA_VALIDATED
        } else {
            F_MORE_DATA
        };
        if first {
            self.flags = flags;
            self.extras_due = flags & F_EXTRA_INFO != 0;
        }
        if flags & !allowed != 0 {
            self.fail(RingError::UnsupportedRxFlags(flags));
        }
        if status < 0 {
            self.fail(RingError::RxError(status));
            return;
        }
        let (start, len) = (usize::from(offset), status as usize);
        if start + len > PAGE {
            self.fail(RingError::BadRxBounds {
                offset,
                len: status,
            });
            return;
        }
        if self.len + len > MAX_RX_FRAME {
            self.fail(RingError::RxFrameTooLong);
            return;
        }
        if self.error.is_none() && self.slots <= MAX_RX_SLOTS {
            self.len += len;
            self.frags.push(Frag {
                id,
                offset: start,
                len,
            });
        }
    }

    fn finish(&mut self) -> Step {
        let chain = core::mem::take(self);
        if let Some(e) = chain.error {
            return Step::Dropped(e);
        }
        if chain.len < MIN_FRAME {
            let (offset, len) = chain
                .frags
                .first()
                .map_or((0, 0), |f| (f.offset as u16, chain.len as i16));
            return Step::Dropped(RingError::BadRxBounds { offset, len });
        }
        Step::Frame(Frame {
            frags: chain.frags,
            len: chain.len,
            csum_blank: chain.flags & RXF_CSUM_BLANK != 0,
            gso_size: chain.gso_size,
        })
    }
}

/// Checks a put-together frame against what its chain claimed: a GSO frame must be
/// one IPv4 TCP segment exactly as long as the frame (no padding, nothing cut off).
pub fn check_frame(frame: &[u8], gso_size: Option<u16>) -> Result<(), RingError> {
    if gso_size.is_none() {
        return Ok(());
    }
    let ok = frame.len() >= 14 + 40
        && frame[12..14] == [0x08, 0x00]
        && frame[14] >> 4 == 4
        && frame[14 + 9] == 6
        && 14 + usize::from(u16::from_be_bytes([frame[16], frame[17]])) == frame.len();
    if ok {
        Ok(())
    } else {
        Err(RingError::RxLengthMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netif::RX_RING_SIZE;
    use alloc::vec;
    use proptest::prelude::*;

    use crate::netif::rx_response as rx;

    fn gso(size: u16, more: bool) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = EXTRA_TYPE_GSO;
        b[1] = u8::from(more);
        b[2..4].copy_from_slice(&size.to_le_bytes());
        b[4] = GSO_TYPE_TCPV4;
        b
    }

    fn all_in_flight() -> InFlight {
        let mut f = InFlight::new(RX_RING_SIZE as usize);
        (0..RX_RING_SIZE as u16).for_each(|i| f.mark(i));
        f
    }

    #[test]
    fn a_gso_chain_as_netback_sends_it() {
        let mut f = all_in_flight();
        let mut c = RxChain::new();
        let first = F_MORE_DATA | F_EXTRA_INFO | RXF_CSUM_BLANK | RXF_DATA_VALIDATED;
        assert_eq!(
            c.push(&rx(0, 0, first, 4096), 0, &mut f),
            Ok((0, Step::More))
        );
        // The extra slot's buffer is the one posted there (its bytes name no id).
        assert_eq!(c.push(&gso(1448, false), 1, &mut f), Ok((1, Step::More)));
        assert_eq!(
            c.push(&rx(2, 0, F_MORE_DATA, 4096), 2, &mut f),
            Ok((2, Step::More))
        );
        let (id, step) = c.push(&rx(3, 0, 0, 100), 3, &mut f).unwrap();
        assert_eq!(id, 3);
        assert_eq!(
            step,
            Step::Frame(Frame {
                frags: vec![
                    Frag {
                        id: 0,
                        offset: 0,
                        len: 4096
                    },
                    Frag {
                        id: 2,
                        offset: 0,
                        len: 4096
                    },
                    Frag {
                        id: 3,
                        offset: 0,
                        len: 100
                    },
                ],
                len: 8292,
                csum_blank: true,
                gso_size: Some(1448),
            })
        );
        assert!(!c.in_progress());
        // A one-slot frame as before.
        let (_, step) = c
            .push(&rx(9, 10, RXF_DATA_VALIDATED, 60), 9, &mut f)
            .unwrap();
        assert!(matches!(
            step,
            Step::Frame(Frame {
                len: 60,
                csum_blank: false,
                gso_size: None,
                ..
            })
        ));
    }

    #[test]
    fn hostile_chains_are_dropped_whole() {
        let mut f = all_in_flight();
        let mut c = RxChain::new();
        // Flags in the wrong place: csum on a later slot.
        c.push(&rx(0, 0, F_MORE_DATA, 100), 0, &mut f).unwrap();
        let (_, s) = c.push(&rx(1, 0, RXF_CSUM_BLANK, 100), 1, &mut f).unwrap();
        assert_eq!(
            s,
            Step::Dropped(RingError::UnsupportedRxFlags(RXF_CSUM_BLANK))
        );
        // An unknown extra type.
        c.push(&rx(2, 0, F_EXTRA_INFO, 100), 2, &mut f).unwrap();
        let (_, s) = c.push(&[4, 0, 0, 0, 0, 0, 0, 0], 3, &mut f).unwrap();
        assert_eq!(s, Step::Dropped(RingError::BadRxExtra(4)));
        // Outside the page, and an error status inside a chain.
        c.push(&rx(4, 4000, F_MORE_DATA, 200), 4, &mut f).unwrap();
        c.push(&rx(5, 0, F_MORE_DATA, -1), 5, &mut f).unwrap();
        let (_, s) = c.push(&rx(6, 0, 0, 10), 6, &mut f).unwrap();
        assert_eq!(
            s,
            Step::Dropped(RingError::BadRxBounds {
                offset: 4000,
                len: 200
            })
        );
        // An id not in flight (answered twice) is fatal.
        assert_eq!(
            c.push(&rx(6, 0, 0, 60), 7, &mut f),
            Err(RingError::UnknownId(6))
        );
        // A chain that never ends: past MAX_RX_SLOTS it is dropped when it ends.
        let mut c = RxChain::new();
        for i in 10..10 + 3 * MAX_RX_SLOTS as u16 {
            let (_, s) = c.push(&rx(i, 0, F_MORE_DATA, 4096), i, &mut f).unwrap();
            assert_eq!(s, Step::More);
            assert!(c.frags.len() <= MAX_RX_SLOTS);
        }
        let (_, s) = c.push(&rx(200, 0, 0, 1), 200, &mut f).unwrap();
        assert!(matches!(
            s,
            Step::Dropped(RingError::RxFrameTooLong | RingError::RxChainTooLong)
        ));
    }

    #[test]
    fn gso_frames_must_be_exactly_one_tcp_segment() {
        let mut frame = vec![0u8; 14 + 60];
        frame[12..14].copy_from_slice(&[8, 0]);
        frame[14] = 0x45;
        frame[14 + 9] = 6;
        frame[16..18].copy_from_slice(&60u16.to_be_bytes());
        assert_eq!(check_frame(&frame, Some(1448)), Ok(()));
        frame.push(0);
        assert_eq!(
            check_frame(&frame, Some(1448)),
            Err(RingError::RxLengthMismatch)
        );
        assert_eq!(check_frame(&frame, None), Ok(()));
        assert_eq!(
            check_frame(&frame[..20], Some(1)),
            Err(RingError::RxLengthMismatch)
        );
    }

    proptest! {
        /// Whatever the backend writes into any number of slots (ids from the ring's
        /// posted buffers or anything else): no panic; every slot answers exactly one
        /// buffer, never one twice while the chain holds it; a frame's fragments lie
        /// in their pages, are at most MAX_RX_SLOTS, add up to its length, which is a
        /// frame's and at most MAX_RX_FRAME.
        #[test]
        fn hostile_slots_are_contained(entries in proptest::collection::vec((any::<[u8; 8]>(), any::<bool>()), 0..200)) {
            let mut f = all_in_flight();
            let mut c = RxChain::new();
            let mut held: Vec<u16> = Vec::new();
            let mut slot = 0u16;
            for (e, honest_id) in &entries {
                let mut e = *e;
                let posted = slot % RX_RING_SIZE as u16;
                if *honest_id { e[0..2].copy_from_slice(&posted.to_le_bytes()); }
                slot = slot.wrapping_add(1);
                match c.push(&e, posted, &mut f) {
                    Err(err) => { prop_assert!(err.is_fatal()); break; }
                    Ok((id, step)) => {
                        prop_assert!(!held.contains(&id));
                        held.push(id);
                        let ended = !matches!(step, Step::More);
                        match step {
                            Step::More => {}
                            Step::Dropped(err) => prop_assert!(!err.is_fatal()),
                            Step::Frame(fr) => {
                                prop_assert!(fr.frags.len() <= MAX_RX_SLOTS);
                                prop_assert!((MIN_FRAME..=MAX_RX_FRAME).contains(&fr.len));
                                prop_assert_eq!(fr.frags.iter().map(|g| g.len).sum::<usize>(), fr.len);
                                for g in &fr.frags {
                                    prop_assert!(g.offset + g.len <= PAGE);
                                    prop_assert!(held.contains(&g.id));
                                }
                            }
                        }
                        if ended {
                            // The chain's buffers go back to the ring.
                            for id in held.drain(..) { f.mark(id); }
                        }
                    }
                }
            }
        }
    }
}
