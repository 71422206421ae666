//! A listener's backlog: the listening sockets that take SYNs, tended by the net task.
//!
//! Each slot is a smoltcp socket listening on the port. A SYN turns one into
//! SYN-RECEIVED; smoltcp's per-socket timeout (the half-open timeout, set on every slot)
//! closes it if the handshake does not complete in time, and [`tend`] (run by the net
//! task after every poll) re-arms every closed slot, so half-open floods cannot take the
//! port for good (a listener without this kept 32 SYN-RECEIVED sockets forever and
//! refused every later client). An established connection waits in its slot until the
//! app accepts it; while the listener is at its connection cap it waits at most the
//! queue timeout, then it is reset (counted as refused). Slots whose replacement socket
//! could not be allocated (heap short) are refilled here once memory allows.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use super::socket::{self, Counter, NetError, bump};

/// How long a closed slot waits for its RST to go out before it listens again.
const RST_GRACE_NS: u64 = 1_000_000_000;

/// One listening socket of a backlog.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) handle: SocketHandle,
    /// When the net task first saw it established and not accepted (monotonic ns).
    ready_since: Option<u64>,
    /// Reset by [`tend`] (queue timeout), not by the peer or the half-open timeout.
    refused: bool,
    /// When the net task first saw it closed with its RST not yet sent.
    closed_since: Option<u64>,
}

/// The backlog of one [`super::TcpListener`].
#[derive(Debug)]
pub(super) struct Backlog {
    pub(super) id: u64,
    pub(super) port: u16,
    pub(super) slots: Vec<Slot>,
    /// Slots wanted (the configured backlog).
    pub(super) size: usize,
    pub(super) half_open_timeout: smoltcp::time::Duration,
    pub(super) queue_timeout_ns: u64,
    /// Accepted streams of this listener still open.
    pub(super) open: usize,
    /// Most streams open at once; `accept` waits while `open` is here.
    pub(super) cap: usize,
}

impl Backlog {
    /// Adds one listening slot; fails if the heap cannot hold its buffers.
    pub(super) fn add_slot(&mut self, sockets: &mut SocketSet<'static>) -> Result<(), NetError> {
        let mut s = socket::try_new_tcp_socket()?;
        s.set_timeout(Some(self.half_open_timeout));
        s.listen(self.port)
            .map_err(|_| NetError::BadPort(self.port))?;
        self.slots.push(Slot {
            handle: sockets.add(s),
            ready_since: None,
            refused: false,
            closed_since: None,
        });
        Ok(())
    }

    /// The index of a slot holding an established connection, if any.
    pub(super) fn ready(&self, sockets: &mut SocketSet<'static>) -> Option<usize> {
        self.slots.iter().position(|slot| {
            let s = sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
            !matches!(
                s.state(),
                tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
            )
        })
    }
}

/// Each listening port with the number of its slots free to take a SYN (in LISTEN).
pub(super) fn syn_room(
    backlogs: &[Backlog],
    sockets: &mut SocketSet<'static>,
) -> Vec<(u16, usize)> {
    backlogs
        .iter()
        .map(|b| {
            let free = b
                .slots
                .iter()
                .filter(|slot| {
                    sockets.get_mut::<tcp::Socket<'_>>(slot.handle).state() == tcp::State::Listen
                })
                .count();
            (b.port, free)
        })
        .collect()
}

/// Re-arms closed slots, resets connections queued too long at the cap, refills
/// missing slots. Context: the net task, holding the interface lock.
pub(super) fn tend(backlogs: &mut [Backlog], sockets: &mut SocketSet<'static>, now_ns: u64) {
    for b in backlogs.iter_mut() {
        let at_cap = b.open >= b.cap;
        for slot in b.slots.iter_mut() {
            let s = sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
            match s.state() {
                tcp::State::Listen | tcp::State::SynReceived => slot.ready_since = None,
                // Reset before accept (half-open timeout, the peer's RST, or ours). Give
                // smoltcp a moment to send a pending RST (it forgets the peer then);
                // not forever: an RST to a spoofed peer waits for an ARP answer that
                // never comes, and would hold the slot for good.
                tcp::State::Closed => {
                    let since = *slot.closed_since.get_or_insert(now_ns);
                    if s.remote_endpoint().is_some() && now_ns.saturating_sub(since) < RST_GRACE_NS
                    {
                        continue;
                    }
                    slot.closed_since = None;
                    if !core::mem::take(&mut slot.refused) {
                        bump(Counter::HalfOpenDropped);
                    }
                    slot.ready_since = None;
                    s.set_timeout(Some(b.half_open_timeout));
                    // Cannot fail: the socket is closed and the port non-zero.
                    let _ = s.listen(b.port);
                }
                _ => {
                    let since = *slot.ready_since.get_or_insert(now_ns);
                    if at_cap && now_ns.saturating_sub(since) >= b.queue_timeout_ns {
                        s.abort();
                        slot.refused = true;
                        slot.ready_since = None;
                        bump(Counter::Refused);
                    }
                }
            }
        }
        while b.slots.len() < b.size {
            if b.add_slot(sockets).is_err() {
                break;
            }
        }
    }
}
