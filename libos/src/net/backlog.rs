//! A listener's backlog: the listening sockets that take SYNs, tended by the net task.
//!
//! Each slot is a smoltcp socket listening on the port. A SYN turns one into
//! SYN-RECEIVED; smoltcp's per-socket timeout (the half-open timeout, set on every slot)
//! closes it if the handshake does not complete in time, and [`tend`] (run by the net
//! task after every poll) re-arms every closed slot, so half-open floods cannot take the
//! port for good (a listener without this kept 32 SYN-RECEIVED sockets forever and
//! refused every later client). An established connection waits in its slot until the
//! app accepts it (the half-open timeout no longer applies to it); while the listener
//! is at its connection cap it waits at most the queue timeout, then it is reset
//! (counted as refused). Slots whose replacement socket
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
                    if slot.ready_since.is_none() {
                        // Established: the handshake is done, so the half-open timeout
                        // ends here. Left set, smoltcp would abort the connection once
                        // the peer had been silent that long (a client that sent its
                        // request and waits for the answer) before the app accepted it:
                        // a reset whenever a busy or starved task accepts late.
                        // Waiting at the cap is bounded by the queue timeout below.
                        s.set_timeout(None);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use smoltcp::iface::{Config, Interface};
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::time::{Duration, Instant};
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

    const PORT: u16 = 80;
    const HALF_OPEN_MS: u64 = 3000;

    /// A listener with one slot and a client socket connecting to it, over smoltcp's
    /// loopback device.
    struct Bed {
        dev: Loopback,
        iface: Interface,
        sockets: SocketSet<'static>,
        backlogs: Vec<Backlog>,
        client: SocketHandle,
        now_ms: u64,
    }

    impl Bed {
        fn new() -> Bed {
            let mut dev = Loopback::new(Medium::Ethernet);
            let mut iface = local_iface(&mut dev);
            let mut sockets = SocketSet::new(vec![]);
            let mut b = one_slot_backlog();
            b.add_slot(&mut sockets).expect("heap");
            let mut c = socket::try_new_tcp_socket().expect("heap");
            c.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), PORT), 49152)
                .expect("connect");
            let client = sockets.add(c);
            Bed {
                dev,
                iface,
                sockets,
                backlogs: vec![b],
                client,
                now_ms: 0,
            }
        }

        /// Polls every 10 ms for `ms`, tending the backlog after each poll as the net
        /// task does.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms / 10 {
                self.now_ms += 10;
                let now = Instant::from_millis(self.now_ms as i64);
                self.iface.poll(now, &mut self.dev, &mut self.sockets);
                tend(
                    &mut self.backlogs,
                    &mut self.sockets,
                    self.now_ms * 1_000_000,
                );
            }
        }

        fn client(&mut self) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket<'static>>(self.client)
        }
    }

    /// A wire that loops frames back (like smoltcp's `Loopback`) and lets a test
    /// replay one: a retransmitted SYN.
    #[derive(Default)]
    struct Wire(alloc::collections::VecDeque<Vec<u8>>);

    struct Rx(Vec<u8>);
    struct Tx<'a>(&'a mut alloc::collections::VecDeque<Vec<u8>>);

    impl smoltcp::phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl smoltcp::phy::TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = vec![0; len];
            let r = f(&mut frame);
            self.0.push_back(frame);
            r
        }
    }

    impl smoltcp::phy::Device for Wire {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;
        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
            let f = self.0.pop_front()?;
            Some((Rx(f), Tx(&mut self.0)))
        }
        fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
            Some(Tx(&mut self.0))
        }
        fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
            let mut caps = smoltcp::phy::DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = 1514;
            caps.checksum = smoltcp::phy::ChecksumCapabilities::ignored();
            caps
        }
    }

    /// An interface on `dev` at 127.0.0.1/8, the address both tests talk to.
    fn local_iface(dev: &mut impl smoltcp::phy::Device) -> Interface {
        let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
        let mut iface = Interface::new(config, dev, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8))
                .expect("room for an address");
        });
        iface
    }

    /// The backlog both tests listen with: one slot on `PORT`, the test's half-open
    /// timeout, a cap of 8.
    fn one_slot_backlog() -> Backlog {
        Backlog {
            id: 0,
            port: PORT,
            slots: Vec::new(),
            size: 1,
            half_open_timeout: Duration::from_millis(HALF_OPEN_MS),
            queue_timeout_ns: 10_000_000_000,
            open: 0,
            cap: 8,
        }
    }

    #[test]
    fn retransmitted_syns_in_other_slots_leave_one_working_connection() {
        let mut dev = Wire::default();
        let mut iface = local_iface(&mut dev);
        let mut sockets = SocketSet::new(vec![]);
        // Sockets before the listener's, removed later: their places in the socket set
        // are where the next slots go (as sockets come and go on a busy server).
        let early: Vec<_> = (0..3)
            .map(|_| sockets.add(socket::try_new_tcp_socket().expect("heap")))
            .collect();
        let mut backlogs = vec![one_slot_backlog()];
        backlogs[0].add_slot(&mut sockets).expect("heap");
        let mut c = socket::try_new_tcp_socket().expect("heap");
        c.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), PORT), 49152)
            .expect("connect");
        let client = sockets.add(c);
        let now_ms = core::cell::Cell::new(0u64);
        let mut poll = |dev: &mut Wire, sockets: &mut SocketSet<'static>, b: &mut Vec<Backlog>| {
            now_ms.set(now_ms.get() + 10);
            iface.poll(Instant::from_millis(now_ms.get() as i64), dev, sockets);
            tend(b, sockets, now_ms.get() * 1_000_000);
        };
        // The client's SYN goes out; the listener takes it and answers.
        poll(&mut dev, &mut sockets, &mut backlogs);
        let syn = dev.0.front().expect("the SYN").clone();
        poll(&mut dev, &mut sockets, &mut backlogs);
        // Three more slots open where the early sockets were, ahead of the first slot;
        // then the client's SYN arrives three more times (retransmitted while the
        // guest was stalled).
        for e in early {
            sockets.remove(e);
        }
        backlogs[0].size = 4;
        tend(&mut backlogs, &mut sockets, now_ms.get() * 1_000_000);
        dev.0.push_front(syn.clone());
        dev.0.push_front(syn.clone());
        dev.0.push_front(syn);
        for _ in 0..(4 * HALF_OPEN_MS / 10) {
            poll(&mut dev, &mut sockets, &mut backlogs);
        }
        let c = sockets.get_mut::<tcp::Socket<'static>>(client);
        assert_eq!(
            c.state(),
            tcp::State::Established,
            "the retransmitted SYN's second half-open connection reset the client"
        );
        // The connection works both ways: one slot has it, in step with the client.
        c.send_slice(b"hello").expect("room");
        for _ in 0..10 {
            poll(&mut dev, &mut sockets, &mut backlogs);
        }
        let i = backlogs[0]
            .ready(&mut sockets)
            .expect("a slot has the connection");
        let server = backlogs[0].slots[i].handle;
        let s = sockets.get_mut::<tcp::Socket<'static>>(server);
        let mut got = [0u8; 8];
        assert_eq!(s.recv_slice(&mut got), Ok(5));
        s.send_slice(b"world").expect("room");
        for _ in 0..10 {
            poll(&mut dev, &mut sockets, &mut backlogs);
        }
        let c = sockets.get_mut::<tcp::Socket<'static>>(client);
        assert_eq!(c.recv_slice(&mut got), Ok(5));
        assert_eq!(&got[..5], b"world");
        let listening = backlogs[0]
            .slots
            .iter()
            .filter(|slot| {
                sockets.get::<tcp::Socket<'static>>(slot.handle).state() == tcp::State::Listen
            })
            .count();
        assert_eq!(listening, 3, "the other slots listen again");
    }

    #[test]
    fn an_unaccepted_connection_outlives_the_half_open_timeout() {
        let mut bed = Bed::new();
        bed.run(100);
        assert_eq!(bed.client().state(), tcp::State::Established);
        assert!(bed.backlogs[0].ready(&mut bed.sockets).is_some());
        // The client sends its request and waits; the app is slow to accept (a busy
        // or starved task): several half-open timeouts pass with nothing on the wire.
        bed.client()
            .send_slice(b"GET / HTTP/1.0\r\n\r\n")
            .expect("room");
        bed.run(4 * HALF_OPEN_MS);
        assert_eq!(
            bed.client().state(),
            tcp::State::Established,
            "the connection waiting for accept was reset"
        );
        let i = bed.backlogs[0]
            .ready(&mut bed.sockets)
            .expect("still waiting to be accepted");
        let slot = bed.backlogs[0].slots[i].handle;
        let s = bed.sockets.get_mut::<tcp::Socket<'static>>(slot);
        assert_eq!(s.recv_queue(), 18, "the request waits for the app");
    }
}
