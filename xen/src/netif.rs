//! Netfront's shared rings (`io/netif.h` on `io/ring.h`): wire formats, ring
//! bookkeeping, and the checks that keep a hostile or broken backend from corrupting the
//! frontend (pure; host-tested).
//!
//! A shared ring page starts with `req_prod`, `req_event`, `rsp_prod`, `rsp_event`
//! (u32 each) and 48 bytes of padding; then come `size` entries, each the union of a
//! request and a response. Indices are free-running u32s, a slot is the index modulo
//! the ring size. The frontend produces requests (TX: frames to send; RX: empty
//! buffers) and consumes the backend's responses. Every value the backend writes —
//! `rsp_prod`, a response's id, status, offset, flags — is checked here before use:
//! an impossible producer index or an id we did not send stops the device (we can no
//! longer trust which buffer is whose), a bad length or flag drops the one frame.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// A page.
pub const PAGE: usize = 4096;
pub use crate::abi::{
    EXTRA_TYPE_GSO, F_EXTRA_INFO, F_MORE_DATA, GSO_TYPE_TCPV4, REQ_EVENT, REQ_PROD, RSP_EVENT,
    RSP_NULL, RSP_OKAY, RSP_PROD, RX_ENTRY, RXF_CSUM_BLANK, RXF_DATA_VALIDATED, RXF_GSO_PREFIX,
    SRING_HEADER, TX_ENTRY, TXF_CSUM_BLANK, TXF_DATA_VALIDATED,
};
/// Most slots one transmitted frame may take, extra-info slot included. Netback
/// refuses frames of more than `XEN_NETBK_LEGACY_SLOTS_MAX` (18) slots and disables the
/// interface past 20; a 64 KiB frame in whole pages takes 17, its GSO slot one more.
pub const MAX_TX_SLOTS: usize = 18;
/// The largest frame sent (the first request's 16-bit `size` holds the whole frame's
/// length): 16 pages, so at most 17 slots with the GSO slot.
pub const MAX_TX_FRAME: usize = 65535;
/// Entries in a one-page ring of `entry`-byte entries (`__RING_SIZE`: the largest power
/// of two that fits).
pub const fn ring_size(entry: usize) -> u32 {
    let fit = ((PAGE - SRING_HEADER) / entry) as u32;
    1 << (31 - fit.leading_zeros())
}

/// TX ring entries (256).
pub const TX_RING_SIZE: u32 = ring_size(TX_ENTRY);
/// RX ring entries (256).
pub const RX_RING_SIZE: u32 = ring_size(RX_ENTRY);

/// Smallest Ethernet frame (header only) we accept.
pub const MIN_FRAME: usize = 14;

/// What a backend did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// `rsp_prod` claims responses to requests never made.
    BadResponseProducer {
        /// The backend's `rsp_prod`.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
        /// Requests we have outstanding.
        outstanding: u32,
    },
    /// A response's id is out of range or names no request in flight.
    UnknownId(u16),
    /// A TX response's status is neither okay nor an error code.
    BadTxStatus(i16),
    /// An RX response's status is an error (the backend dropped the frame).
    RxError(i16),
    /// An RX response's data would not lie within its page, or is shorter than a frame.
    BadRxBounds {
        /// Offset in the page.
        offset: u16,
        /// Bytes claimed.
        len: i16,
    },
    /// An RX response uses a feature we did not negotiate, or a flag in a slot where
    /// it has no place (checksum or extra-info flags after a chain's first slot).
    UnsupportedRxFlags(u16),
    /// An RX chain ran past [`crate::netrx::MAX_RX_SLOTS`] slots.
    RxChainTooLong,
    /// An RX chain's data add up to more than [`crate::netrx::MAX_RX_FRAME`].
    RxFrameTooLong,
    /// An RX extra-info slot of a type (or GSO type or size) we did not ask for.
    BadRxExtra(u8),
    /// A GSO frame that is not exactly one IPv4 TCP segment as long as the frame.
    RxLengthMismatch,
    /// A buffer's grant cannot be ended (the backend still uses it after answering)
    /// or made (no reference free).
    Grant(crate::netbuf::GrantError),
}

impl RingError {
    /// Whether the device can no longer be trusted (as opposed to one bad frame).
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            RingError::BadResponseProducer { .. } | RingError::UnknownId(_) | RingError::Grant(_)
        )
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingError::BadResponseProducer {
                rsp_prod,
                rsp_cons,
                outstanding,
            } => write!(
                f,
                "backend's rsp_prod {rsp_prod} is {} past our consumer {rsp_cons}, but only {outstanding} requests are outstanding",
                rsp_prod.wrapping_sub(rsp_cons)
            ),
            RingError::UnknownId(id) => write!(f, "response id {id} names no request in flight"),
            RingError::BadTxStatus(s) => write!(f, "TX response status {s} is not defined"),
            RingError::RxError(s) => write!(f, "RX response carries error status {s}"),
            RingError::BadRxBounds { offset, len } => write!(
                f,
                "RX data at offset {offset} length {len} does not fit a page as a frame"
            ),
            RingError::UnsupportedRxFlags(flags) => {
                write!(f, "RX flags {flags:#x} ask for features not negotiated")
            }
            RingError::RxChainTooLong => write!(f, "RX chain longer than a frame can be"),
            RingError::RxFrameTooLong => write!(f, "RX chain carries more than a frame"),
            RingError::BadRxExtra(t) => write!(f, "RX extra-info slot of type {t} not asked for"),
            RingError::RxLengthMismatch => {
                write!(f, "RX GSO frame's IP length disagrees with its chain")
            }
            RingError::Grant(e) => write!(f, "{e}"),
        }
    }
}

/// The frontend's private view of one ring: the next request to produce and the next
/// response to consume. Invariant: `rsp_cons ≤ req_prod_pvt ≤ rsp_cons + size`
/// (in wrapping arithmetic).
#[derive(Debug, Clone)]
pub struct FrontRing {
    size: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl FrontRing {
    /// A fresh ring of `size` entries (a power of two).
    pub fn new(size: u32) -> Self {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        FrontRing {
            size,
            req_prod_pvt: 0,
            rsp_cons: 0,
        }
    }

    /// Requests not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Slots free for requests.
    pub fn free(&self) -> u32 {
        self.size - self.outstanding()
    }

    /// Claims the next request slot; `None` when the ring is full.
    pub fn next_request(&mut self) -> Option<usize> {
        (self.free() > 0).then(|| {
            let slot = (self.req_prod_pvt % self.size) as usize;
            self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
            slot
        })
    }

    /// The producer index to publish in the shared `req_prod`.
    pub fn req_prod(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The consumer index (for `rsp_event`).
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// How many new responses the backend's `rsp_prod` announces; an error if it
    /// claims more than we have outstanding.
    pub fn pending(&self, rsp_prod: u32) -> Result<u32, RingError> {
        let n = rsp_prod.wrapping_sub(self.rsp_cons);
        if n > self.outstanding() {
            return Err(RingError::BadResponseProducer {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                outstanding: self.outstanding(),
            });
        }
        Ok(n)
    }

    /// Takes the next response's slot (call only while [`FrontRing::pending`] > 0).
    pub fn next_response(&mut self) -> usize {
        debug_assert!(self.outstanding() > 0, "no response outstanding");
        let slot = (self.rsp_cons % self.size) as usize;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        slot
    }
}

/// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`'s test: after moving the shared `req_prod`
/// from `old` to `new`, the backend wants an event if its `req_event` lies in
/// `(old, new]`.
pub fn needs_notify(old: u32, new: u32, req_event: u32) -> bool {
    new.wrapping_sub(req_event) < new.wrapping_sub(old)
}

/// Which ids (buffers) have a request in flight; every operation is O(1) (per frame).
/// Invariant: `free` holds exactly the ids whose `busy` is false, each once.
#[derive(Debug, Clone)]
pub struct InFlight {
    busy: Vec<bool>,
    free: Vec<u16>,
}

impl InFlight {
    /// `n` ids (at most 65536), none in flight.
    pub fn new(n: usize) -> Self {
        InFlight {
            busy: vec![false; n],
            // Popped from the end: low ids first.
            free: (0..n as u16).rev().collect(),
        }
    }

    /// A free id, marked in flight.
    pub fn take_free(&mut self) -> Option<u16> {
        let id = self.free.pop()?;
        self.busy[id as usize] = true;
        Some(id)
    }

    /// Marks `id` in flight (posting a known buffer); it must be free.
    pub fn mark(&mut self, id: u16) {
        if let Some(i) = self.free.iter().rposition(|&f| f == id) {
            // Posting known buffers happens at setup (ids in order, found at the end)
            // and on re-posting an id just completed (the last one pushed): O(1) in
            // practice.
            self.free.swap_remove(i);
            self.busy[id as usize] = true;
        }
    }

    /// Ends `id`'s flight; an error if the backend names an id not in flight.
    pub fn complete(&mut self, id: u16) -> Result<(), RingError> {
        match self.busy.get_mut(id as usize) {
            Some(b) if *b => {
                *b = false;
                self.free.push(id);
                Ok(())
            }
            _ => Err(RingError::UnknownId(id)),
        }
    }

    /// Ids in flight.
    pub fn count(&self) -> usize {
        self.busy.len() - self.free.len()
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// `struct netif_tx_request`: one frame in one granted page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRequest {
    /// Grant of the page holding the frame.
    pub gref: u32,
    /// Offset of the frame in the page.
    pub offset: u16,
    /// `NETTXF_*` (0: one fragment, checksum present).
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Frame length.
    pub size: u16,
}

impl TxRequest {
    /// The entry's bytes.
    pub fn encode(&self) -> [u8; TX_ENTRY] {
        let mut b = [0u8; TX_ENTRY];
        b[0..4].copy_from_slice(&self.gref.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..10].copy_from_slice(&self.id.to_le_bytes());
        b[10..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// Checks a `struct netif_tx_response` (`id`, `status` at the entry's start) and ends
/// its id's flight. Returns whether the frame was sent (`false`: the backend reported
/// an error or dropped it — counted, not fatal). `extras` counts the extra-info slots
/// sent and not yet answered: netback answers each with `NETIF_RSP_NULL` (its id is
/// whatever our extra-info entry left there, so it names no buffer); a NULL beyond
/// them is a protocol error.
pub fn check_tx_response(
    entry: &[u8],
    in_flight: &mut InFlight,
    extras: &mut u32,
) -> Result<bool, RingError> {
    let id = u16_at(entry, 0);
    let status = u16_at(entry, 2) as i16;
    if status == RSP_NULL {
        if *extras == 0 {
            return Err(RingError::BadTxStatus(status));
        }
        *extras -= 1;
        return Ok(true);
    }
    in_flight.complete(id)?;
    match status {
        RSP_OKAY => Ok(true),
        -2..=-1 => Ok(false),
        _ => Err(RingError::BadTxStatus(status)),
    }
}

/// One buffer of a transmitted frame: its id and the grant of its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxBuffer {
    /// The request id (echoed in the response).
    pub id: u16,
    /// Grant of the page.
    pub gref: u32,
}

/// Why a frame cannot be sent as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// Not one buffer per started page of the frame.
    Buffers { len: usize, buffers: usize },
    /// Larger than [`MAX_TX_FRAME`] or empty.
    Length(usize),
}

/// The ring entries for sending a `len`-byte frame laid out in whole pages, page `i`
/// in `buffers[i]` (`netif.h`'s scatter-gather): the first request carries the whole
/// frame's size and the flags, a GSO extra-info slot follows it when `gso_size` is
/// given, then one request per further page with its own size; `NETTXF_more_data` on
/// every request but the last. `csum_blank`: the TCP checksum holds only the
/// pseudo-header sum.
pub fn tx_chain(
    len: usize,
    buffers: &[TxBuffer],
    gso_size: Option<u16>,
    csum_blank: bool,
) -> Result<Vec<[u8; TX_ENTRY]>, ChainError> {
    if len == 0 || len > MAX_TX_FRAME {
        return Err(ChainError::Length(len));
    }
    if buffers.len() != len.div_ceil(PAGE) {
        return Err(ChainError::Buffers {
            len,
            buffers: buffers.len(),
        });
    }
    let more = |i: usize| {
        if i + 1 < buffers.len() {
            F_MORE_DATA
        } else {
            0
        }
    };
    let mut out = Vec::with_capacity(buffers.len() + 1);
    let mut flags = more(0);
    if csum_blank {
        flags |= TXF_CSUM_BLANK | TXF_DATA_VALIDATED;
    }
    if gso_size.is_some() {
        flags |= F_EXTRA_INFO;
    }
    out.push(
        TxRequest {
            gref: buffers[0].gref,
            offset: 0,
            flags,
            id: buffers[0].id,
            size: len as u16,
        }
        .encode(),
    );
    if let Some(size) = gso_size {
        out.push(encode_gso_extra(size));
    }
    for (i, b) in buffers.iter().enumerate().skip(1) {
        out.push(
            TxRequest {
                gref: b.gref,
                offset: 0,
                flags: more(i),
                id: b.id,
                size: (len - i * PAGE).min(PAGE) as u16,
            }
            .encode(),
        );
    }
    Ok(out)
}

/// `struct netif_extra_info` of type GSO: TCPv4 cut into `gso_size`-byte payloads.
pub fn encode_gso_extra(gso_size: u16) -> [u8; TX_ENTRY] {
    let mut b = [0u8; TX_ENTRY];
    b[0] = EXTRA_TYPE_GSO;
    b[2..4].copy_from_slice(&gso_size.to_le_bytes());
    b[4] = GSO_TYPE_TCPV4;
    b
}

/// `struct netif_rx_request`: an empty granted page for the backend to copy into.
pub fn encode_rx_request(id: u16, gref: u32) -> [u8; RX_ENTRY] {
    let mut b = [0u8; RX_ENTRY];
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[4..8].copy_from_slice(&gref.to_le_bytes());
    b
}

/// A received frame: `len` bytes at `offset` in buffer `id`'s page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// The buffer.
    pub id: u16,
    /// Offset in its page.
    pub offset: usize,
    /// Frame length.
    pub len: usize,
}

/// Checks a `struct netif_rx_response` (`id`, `offset`, `flags`, `status`) and ends
/// its id's flight. `Ok`: a frame to deliver. `Err((Some(id), e))`: this frame is bad,
/// buffer `id` may be posted again; `Err((None, e))`: the id itself is bad (fatal).
pub fn check_rx_response(
    entry: &[u8],
    in_flight: &mut InFlight,
) -> Result<RxFrame, (Option<u16>, RingError)> {
    let id = u16_at(entry, 0);
    let offset = u16_at(entry, 2);
    let flags = u16_at(entry, 4);
    let status = u16_at(entry, 6) as i16;
    in_flight.complete(id).map_err(|e| (None, e))?;
    let bad = |e| Err((Some(id), e));
    if status < 0 {
        return bad(RingError::RxError(status));
    }
    if flags & !RXF_DATA_VALIDATED != 0 {
        return bad(RingError::UnsupportedRxFlags(flags));
    }
    let (start, len) = (offset as usize, status as usize);
    if len < MIN_FRAME || start + len > PAGE {
        return bad(RingError::BadRxBounds {
            offset,
            len: status,
        });
    }
    Ok(RxFrame {
        id,
        offset: start,
        len,
    })
}

/// A `struct netif_rx_response` as a backend writes it (tests of this module and
/// `netrx`).
#[cfg(test)]
pub(crate) fn rx_response(id: u16, offset: u16, flags: u16, status: i16) -> [u8; RX_ENTRY] {
    let mut b = [0u8; RX_ENTRY];
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[2..4].copy_from_slice(&offset.to_le_bytes());
    b[4..6].copy_from_slice(&flags.to_le_bytes());
    b[6..8].copy_from_slice(&status.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::rx_response as rx;

    fn tx(id: u16, status: i16) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..2].copy_from_slice(&id.to_le_bytes());
        b[2..4].copy_from_slice(&status.to_le_bytes());
        b
    }

    #[test]
    fn ring_sizes_match_xen() {
        assert_eq!(TX_RING_SIZE, 256);
        assert_eq!(RX_RING_SIZE, 256);
        assert_eq!(ring_size(64), 32);
    }

    #[test]
    fn front_ring_fills_and_drains() {
        let mut r = FrontRing::new(4);
        let slots: Vec<_> = (0..4).map(|_| r.next_request().unwrap()).collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        assert_eq!(r.next_request(), None);
        assert_eq!(r.pending(2), Ok(2));
        assert_eq!(r.next_response(), 0);
        assert_eq!(r.next_response(), 1);
        assert_eq!(r.next_request(), Some(0));
        // Claims more responses than requests outstanding.
        assert!(matches!(
            r.pending(7),
            Err(RingError::BadResponseProducer { .. })
        ));
        // A producer index behind ours is "4 billion responses": also refused.
        assert!(r.pending(1).is_err());
    }

    #[test]
    fn notify_follows_req_event() {
        assert!(needs_notify(0, 1, 1));
        assert!(!needs_notify(1, 2, 1));
        assert!(needs_notify(1, 5, 3));
        assert!(needs_notify(u32::MAX, 1, 0));
    }

    #[test]
    fn tx_responses_are_checked() {
        let mut f = InFlight::new(4);
        let mut x = 0;
        assert_eq!(f.take_free(), Some(0));
        assert_eq!(f.take_free(), Some(1));
        assert_eq!(
            check_tx_response(&tx(1, RSP_OKAY), &mut f, &mut x),
            Ok(true)
        );
        assert_eq!(
            check_tx_response(&tx(1, RSP_OKAY), &mut f, &mut x),
            Err(RingError::UnknownId(1))
        );
        assert_eq!(check_tx_response(&tx(0, -2), &mut f, &mut x), Ok(false));
        assert_eq!(
            check_tx_response(&tx(9, 0), &mut f, &mut x),
            Err(RingError::UnknownId(9))
        );
        f.mark(2);
        // No extra-info slot outstanding: a NULL answers nothing.
        assert_eq!(
            check_tx_response(&tx(2, RSP_NULL), &mut f, &mut x),
            Err(RingError::BadTxStatus(1))
        );
        // One outstanding: its NULL is taken whatever id it shows, once.
        x = 1;
        assert_eq!(
            check_tx_response(&tx(0x0101, RSP_NULL), &mut f, &mut x),
            Ok(true)
        );
        assert_eq!(x, 0);
        assert_eq!(
            check_tx_response(&tx(2, RSP_NULL), &mut f, &mut x),
            Err(RingError::BadTxStatus(1))
        );
        assert_eq!(
            check_tx_response(&tx(2, 7), &mut f, &mut x),
            Err(RingError::BadTxStatus(7))
        );
        assert_eq!(f.count(), 0);
    }

    /// What netback (`xenvif_count_requests`, `xenvif_set_skb_gso`) makes of a chain:
    /// the frame's length, its GSO size and the ids; `None` where it would refuse it.
    fn netback_reads(entries: &[[u8; TX_ENTRY]]) -> Option<(usize, Option<u16>, Vec<u16>)> {
        let req = |e: &[u8; TX_ENTRY]| (u16_at(e, 4), u16_at(e, 6), u16_at(e, 8), u16_at(e, 10));
        let (offset, flags, id, total) = req(entries.first()?);
        let mut ids = vec![id];
        let mut rest = &entries[1..];
        let mut gso = None;
        if flags & F_EXTRA_INFO != 0 {
            let x = rest.first()?;
            if x[0] != EXTRA_TYPE_GSO || x[4] != GSO_TYPE_TCPV4 || u16_at(x, 2) == 0 {
                return None;
            }
            gso = Some(u16_at(x, 2));
            rest = &rest[1..];
        }
        let mut first = usize::from(total);
        let mut more = flags & F_MORE_DATA != 0;
        while more {
            let (o, f, id, size) = req(rest.first()?);
            rest = &rest[1..];
            if usize::from(size) > first || usize::from(o) + usize::from(size) > PAGE {
                return None;
            }
            first -= usize::from(size);
            ids.push(id);
            more = f & F_MORE_DATA != 0;
        }
        let slots = entries.len() - rest.len();
        (rest.is_empty() && slots <= MAX_TX_SLOTS && usize::from(offset) + first <= PAGE)
            .then_some((usize::from(total), gso, ids))
    }

    #[test]
    fn a_64k_gso_frame_is_a_chain_netback_takes() {
        let len = MAX_TX_FRAME;
        let bufs: Vec<_> = (0..16)
            .map(|i| TxBuffer {
                id: i,
                gref: 100 + u32::from(i),
            })
            .collect();
        let chain = tx_chain(len, &bufs, Some(1460), true).unwrap();
        assert_eq!(chain.len(), 17);
        let first = u16_at(&chain[0], 6);
        assert_eq!(
            first,
            F_MORE_DATA | F_EXTRA_INFO | TXF_CSUM_BLANK | TXF_DATA_VALIDATED
        );
        assert_eq!(
            netback_reads(&chain),
            Some((len, Some(1460), (0..16).collect()))
        );
        // A one-page frame: one plain request.
        let one = tx_chain(60, &bufs[..1], None, false).unwrap();
        assert_eq!(
            one,
            vec![
                TxRequest {
                    gref: 100,
                    offset: 0,
                    flags: 0,
                    id: 0,
                    size: 60
                }
                .encode()
            ]
        );
        assert_eq!(
            tx_chain(len + 1, &bufs, None, false),
            Err(ChainError::Length(len + 1))
        );
        assert_eq!(
            tx_chain(5000, &bufs[..1], None, false),
            Err(ChainError::Buffers {
                len: 5000,
                buffers: 1
            })
        );
    }

    #[test]
    fn rx_responses_are_checked() {
        let mut f = InFlight::new(4);
        (0..4).for_each(|i| f.mark(i));
        assert_eq!(
            check_rx_response(&rx(0, 10, RXF_DATA_VALIDATED, 60), &mut f),
            Ok(RxFrame {
                id: 0,
                offset: 10,
                len: 60
            })
        );
        assert_eq!(
            check_rx_response(&rx(0, 0, 0, 60), &mut f),
            Err((None, RingError::UnknownId(0)))
        );
        assert_eq!(
            check_rx_response(&rx(1, 4000, 0, 200), &mut f),
            Err((
                Some(1),
                RingError::BadRxBounds {
                    offset: 4000,
                    len: 200
                }
            ))
        );
        assert_eq!(
            check_rx_response(&rx(2, 0, F_MORE_DATA, 100), &mut f),
            Err((Some(2), RingError::UnsupportedRxFlags(F_MORE_DATA)))
        );
        f.mark(2);
        assert_eq!(
            check_rx_response(&rx(2, 0, RXF_CSUM_BLANK, 100), &mut f),
            Err((Some(2), RingError::UnsupportedRxFlags(RXF_CSUM_BLANK)))
        );
        assert_eq!(
            check_rx_response(&rx(3, 0, 0, -1), &mut f),
            Err((Some(3), RingError::RxError(-1)))
        );
        assert!(RingError::UnknownId(0).is_fatal());
        assert!(!RingError::RxError(-1).is_fatal());
    }

    #[test]
    fn requests_encode_as_netif_h() {
        let t = TxRequest {
            gref: 0x0102_0304,
            offset: 5,
            flags: 0,
            id: 7,
            size: 60,
        };
        assert_eq!(t.encode(), [4, 3, 2, 1, 5, 0, 0, 0, 7, 0, 60, 0]);
        assert_eq!(encode_rx_request(3, 9), [3, 0, 0, 0, 9, 0, 0, 0]);
    }

    proptest! {
        /// Whatever a backend writes into a response entry, checking it never panics,
        /// a delivered frame always lies inside its page, and an id is never completed
        /// twice.
        #[test]
        fn hostile_rx_responses_are_contained(entries in proptest::collection::vec(any::<[u8; 8]>(), 0..64)) {
            let mut f = InFlight::new(RX_RING_SIZE as usize);
            (0..RX_RING_SIZE as u16).for_each(|i| f.mark(i));
            let mut seen = vec![false; RX_RING_SIZE as usize];
            for e in &entries {
                match check_rx_response(e, &mut f) {
                    Ok(frame) => {
                        prop_assert!(frame.offset + frame.len <= PAGE);
                        prop_assert!(frame.len >= MIN_FRAME);
                        prop_assert!(!seen[frame.id as usize]);
                        seen[frame.id as usize] = true;
                    }
                    Err((Some(id), e)) => {
                        prop_assert!(!e.is_fatal());
                        prop_assert!(!seen[id as usize]);
                        seen[id as usize] = true;
                    }
                    Err((None, e)) => prop_assert!(e.is_fatal()),
                }
            }
        }

        /// Every frame length with or without GSO and checksum offload becomes a chain
        /// that netback reads back as the same frame, in at most [`MAX_TX_SLOTS`].
        #[test]
        fn tx_chains_read_back(len in 1usize..=MAX_TX_FRAME, gso in proptest::option::of(1u16..9000), csum in any::<bool>()) {
            let bufs: Vec<_> = (0..len.div_ceil(PAGE) as u16).map(|i| TxBuffer { id: 200 - i, gref: u32::from(i) }).collect();
            let chain = tx_chain(len, &bufs, gso, csum).unwrap();
            let ids: Vec<u16> = bufs.iter().map(|b| b.id).collect();
            prop_assert_eq!(netback_reads(&chain), Some((len, gso, ids)));
        }

        /// Any mix of responses for a known set of sent frames (real ids, NULLs,
        /// hostile statuses and ids): never more NULLs accepted than extra slots sent,
        /// never an id completed that was not in flight.
        #[test]
        fn hostile_tx_responses_are_contained(extras in 0u32..4, entries in proptest::collection::vec(any::<[u8; 12]>(), 0..64)) {
            let mut f = InFlight::new(16);
            for _ in 0..8 { f.take_free(); }
            let mut x = extras;
            let mut nulls = 0;
            for e in &entries {
                let before = f.count();
                match check_tx_response(e, &mut f, &mut x) {
                    Ok(_) if u16_at(e, 2) as i16 == RSP_NULL => nulls += 1,
                    Ok(_) => prop_assert_eq!(f.count() + 1, before),
                    // A fatal error (the card stops); at most the named id ended.
                    Err(_) => prop_assert!(before - f.count() <= 1),
                }
            }
            prop_assert!(nulls <= extras);
            prop_assert_eq!(x + nulls, extras);
        }

        /// Taking, marking and completing ids in any order keeps the free list and the
        /// busy flags in step, and never hands out an id in flight.
        #[test]
        fn in_flight_bookkeeping_is_consistent(ops in proptest::collection::vec((0u8..3, 0u16..20), 0..200)) {
            let mut f = InFlight::new(16);
            let mut model = [false; 16];
            for (op, id) in ops {
                match op {
                    0 => if let Some(t) = f.take_free() {
                        prop_assert!(!model[t as usize]);
                        model[t as usize] = true;
                    } else {
                        prop_assert!(model.iter().all(|&b| b));
                    },
                    1 => if (id as usize) < 16 && !model[id as usize] {
                        f.mark(id);
                        model[id as usize] = true;
                    },
                    _ => {
                        let ok = f.complete(id).is_ok();
                        prop_assert_eq!(ok, (id as usize) < 16 && model[id as usize]);
                        if ok { model[id as usize] = false; }
                    }
                }
                prop_assert_eq!(f.count(), model.iter().filter(|&&b| b).count());
            }
        }

        /// Any rsp_prod the backend shows is either within what we have outstanding or
        /// refused; consuming accepted responses keeps the ring invariant.
        #[test]
        fn hostile_rsp_prod_is_refused(sent in 0u32..=256, prods in proptest::collection::vec(any::<u32>(), 0..16), start in any::<u32>()) {
            let mut r = FrontRing { size: 256, req_prod_pvt: start, rsp_cons: start };
            for _ in 0..sent { r.next_request().unwrap(); }
            for p in prods {
                if let Ok(n) = r.pending(p) {
                    prop_assert!(n <= r.outstanding());
                    for _ in 0..n { r.next_response(); }
                    prop_assert!(r.outstanding() <= 256);
                }
            }
        }
    }
}
