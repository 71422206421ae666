//! The card as smoltcp's `Device` for one poll of the net task: frames checked before
//! smoltcp sees them (malformed ones dropped and counted), the receive budget (NAPI's),
//! connection requests admitted against the backlogs' room, and the interface's
//! counters.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use super::nic::{Nic, NicError};
/// Ethernet header bytes (no VLAN tag).
pub(super) const ETHERNET_HEADER: usize = 14;
/// Frames one poll takes from the card (NAPI's budget): a flood leaves the rest in the
/// card's ring for the next pass, and the net task yields in between so other tasks run.
pub(super) const RX_BUDGET: usize = 64;

/// Counters of one interface.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) rx_frames: AtomicU64,
    pub(super) tx_frames: AtomicU64,
    pub(super) rx_bytes: AtomicU64,
    pub(super) tx_bytes: AtomicU64,
    pub(super) rx_dropped: AtomicU64,
    pub(super) tx_dropped: AtomicU64,
    pub(super) device_errors: AtomicU64,
    pub(super) wakeups: AtomicU64,
    pub(super) deferrals: AtomicU64,
    pub(super) syn_dropped: AtomicU64,
    pub(super) tx_gso_frames: AtomicU64,
    pub(super) tx_gso_segments: AtomicU64,
    pub(super) multi_buffer_frames: AtomicU64,
    pub(super) rx_gso_frames: AtomicU64,
}

/// A copy of an interface's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames received and handed to the stack.
    pub rx_frames: u64,
    /// Frames queued for sending.
    pub tx_frames: u64,
    /// Bytes of received frames.
    pub rx_bytes: u64,
    /// Bytes of sent frames.
    pub tx_bytes: u64,
    /// Received frames dropped as malformed.
    pub rx_dropped: u64,
    /// Frames the card refused to send.
    pub tx_dropped: u64,
    /// Protocol violations reported by the driver.
    pub device_errors: u64,
    /// Times the net task woke up.
    pub wakeups: u64,
    /// Polls that used their whole receive budget and left frames for the next pass.
    pub deferrals: u64,
    /// Connection requests (SYNs) dropped because the listener's backlog was full.
    pub syn_dropped: u64,
    /// Large TCP segments the card cut up itself ([`super::OffloadCounters`]).
    pub tx_gso_frames: u64,
    /// Segments they carried.
    pub tx_gso_segments: u64,
    /// Frames sent or received in more than one buffer.
    pub multi_buffer_frames: u64,
    /// Large TCP segments received whole.
    pub rx_gso_frames: u64,
}

pub(super) fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            rx_frames: r(&self.rx_frames),
            tx_frames: r(&self.tx_frames),
            rx_bytes: r(&self.rx_bytes),
            tx_bytes: r(&self.tx_bytes),
            rx_dropped: r(&self.rx_dropped),
            tx_dropped: r(&self.tx_dropped),
            device_errors: r(&self.device_errors),
            wakeups: r(&self.wakeups),
            deferrals: r(&self.deferrals),
            syn_dropped: r(&self.syn_dropped),
            tx_gso_frames: r(&self.tx_gso_frames),
            tx_gso_segments: r(&self.tx_gso_segments),
            multi_buffer_frames: r(&self.multi_buffer_frames),
            rx_gso_frames: r(&self.rx_gso_frames),
        }
    }
}

/// The card as smoltcp's `Device`, for the length of one poll.
pub(super) struct Port<'a> {
    nic: &'a mut dyn Nic,
    mtu: usize,
    stats: &'a Stats,
    /// Frames this poll may still take ([`RX_BUDGET`] at the start).
    pub(super) budget: usize,
    /// Listening ports and how many more SYNs their backlogs can take this poll.
    pub(super) syn_room: Vec<(u16, usize)>,
}

impl<'a> Port<'a> {
    pub(super) fn new(nic: &'a mut dyn Nic, mtu: usize, stats: &'a Stats) -> Self {
        Port {
            nic,
            mtu,
            stats,
            budget: RX_BUDGET,
            syn_room: Vec::new(),
        }
    }

    /// Sends what the card held back during the poll ([`Nic::flush`]) and copies its
    /// offload counters.
    pub(super) fn flush(&mut self) {
        self.nic.flush();
        let c = self.nic.offload_counters();
        let s = self.stats;
        s.tx_gso_frames.store(c.tx_gso_frames, Ordering::Relaxed);
        s.tx_gso_segments
            .store(c.tx_gso_segments, Ordering::Relaxed);
        s.multi_buffer_frames
            .store(c.multi_buffer_frames, Ordering::Relaxed);
        s.rx_gso_frames.store(c.rx_gso_frames, Ordering::Relaxed);
    }

    /// Whether smoltcp gets `frame`: a SYN to a listening port whose backlog has no
    /// free slot left is dropped (and counted), as Linux drops SYNs when its queues are
    /// full: the client retries after its SYN timeout instead of getting an RST.
    fn admit(&mut self, frame: &[u8]) -> bool {
        let Some(port) = tcp_syn_port(frame) else {
            return true;
        };
        match self.syn_room.iter_mut().find(|(p, _)| *p == port) {
            Some((_, 0)) => {
                bump(&self.stats.syn_dropped, 1);
                false
            }
            Some((_, free)) => {
                *free -= 1;
                true
            }
            None => true,
        }
    }
}

/// The destination port of an Ethernet frame carrying an IPv4 TCP segment with SYN
/// set and ACK clear (a connection request); `None` for anything else (pure, checks
/// every length before reading).
fn tcp_syn_port(frame: &[u8]) -> Option<u16> {
    const IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    if frame.get(12..14)? != IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET_HEADER..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    // Not TCP, or a fragment other than the first.
    let fragment_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
    if ihl < 20 || *ip.get(9)? != TCP || fragment_offset != 0 {
        return None;
    }
    // A whole TCP header (20 bytes), or smoltcp drops the frame anyway.
    let tcp = ip.get(ihl..ihl + 20)?;
    let flags = tcp[13];
    let (syn, ack) = (flags & 0x02 != 0, flags & 0x10 != 0);
    (syn && !ack).then(|| u16::from_be_bytes([tcp[2], tcp[3]]))
}

impl Port<'_> {
    /// The next well-formed frame, dropping (and counting) malformed ones.
    fn next_frame(&mut self) -> Option<Vec<u8>> {
        let max = self.nic.max_rx_frame().max(self.mtu + ETHERNET_HEADER);
        loop {
            let mut frame = None;
            match self.nic.receive(&mut |f| frame = Some(f.to_vec())) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(NicError::Busy) => return None,
                Err(NicError::Malformed(_)) => {
                    bump(&self.stats.rx_dropped, 1);
                    continue;
                }
                Err(NicError::Device(what)) => {
                    if self.stats.device_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        crate::println!("net: {what} (counted in device_errors; reported once)");
                    }
                    return None;
                }
            }
            match frame {
                Some(f) if (ETHERNET_HEADER..=max).contains(&f.len()) => {
                    bump(&self.stats.rx_frames, 1);
                    bump(&self.stats.rx_bytes, f.len() as u64);
                    return Some(f);
                }
                _ => bump(&self.stats.rx_dropped, 1),
            }
        }
    }
}

impl Device for Port<'_> {
    type RxToken<'a>
        = Received
    where
        Self: 'a;
    type TxToken<'a>
        = Sender<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Received, Sender<'_>)> {
        // Only take a frame when a reply could go out; the card interrupts when
        // transmit buffers free up, so nothing stalls.
        let frame = loop {
            if self.budget == 0 || !self.nic.can_transmit() {
                return None;
            }
            let frame = self.next_frame()?;
            self.budget -= 1;
            if self.admit(&frame) {
                break frame;
            }
        };
        Some((
            Received(frame),
            Sender {
                nic: &mut *self.nic,
                stats: self.stats,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Sender<'_>> {
        if !self.nic.can_transmit() {
            return None;
        }
        Some(Sender {
            nic: &mut *self.nic,
            stats: self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + ETHERNET_HEADER;
        let o = self.nic.offloads();
        caps.checksum.tcp = match (o.tx_tcp_checksum, o.rx_tcp_checksum) {
            (false, false) => Checksum::Both,
            (true, false) => Checksum::Rx,
            (false, true) => Checksum::Tx,
            (true, true) => Checksum::None,
        };
        caps
    }
}

/// A received frame.
pub(super) struct Received(Vec<u8>);

impl RxToken for Received {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for one frame to send.
pub(super) struct Sender<'a> {
    nic: &'a mut dyn Nic,
    stats: &'a Stats,
}

impl TxToken for Sender<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        match self.nic.transmit(&frame) {
            Ok(()) => {
                bump(&self.stats.tx_frames, 1);
                bump(&self.stats.tx_bytes, len as u64);
            }
            Err(_) => bump(&self.stats.tx_dropped, 1),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::string::ToString;

    /// A card whose receive side replays a script; what it transmits is kept.
    struct ScriptedNic {
        rx: VecDeque<Result<Vec<u8>, NicError>>,
        sent: Vec<Vec<u8>>,
        room: usize,
    }

    impl Nic for ScriptedNic {
        fn mac(&self) -> [u8; 6] {
            [2, 0, 0, 0, 0, 1]
        }
        fn mtu(&self) -> usize {
            1500
        }
        fn can_transmit(&mut self) -> bool {
            self.sent.len() < self.room
        }
        fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError> {
            if !self.can_transmit() {
                return Err(NicError::Busy);
            }
            self.sent.push(frame.to_vec());
            Ok(())
        }
        fn receive(&mut self, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
            match self.rx.pop_front() {
                None => Ok(false),
                Some(Ok(f)) => {
                    deliver(&f);
                    Ok(true)
                }
                Some(Err(e)) => Err(e),
            }
        }
    }

    fn nic(rx: Vec<Result<Vec<u8>, NicError>>) -> ScriptedNic {
        ScriptedNic {
            rx: rx.into(),
            sent: Vec::new(),
            room: 1,
        }
    }

    #[test]
    fn malformed_frames_are_dropped_and_counted() {
        let good = vec![0xab; 60];
        let mut card = nic(vec![
            Err(NicError::Malformed("shorter than the virtio-net header")),
            Ok(vec![1, 2, 3]), // shorter than an Ethernet header
            Ok(vec![0; 1515]), // longer than MTU + header
            Ok(Vec::new()),    // empty
            Ok(good.clone()),
        ]);
        let stats = Stats::default();
        let mut port = Port::new(&mut card, 1500, &stats);
        assert_eq!(port.next_frame(), Some(good));
        assert_eq!(port.next_frame(), None);
        let s = stats.snapshot();
        assert_eq!((s.rx_frames, s.rx_dropped, s.device_errors), (1, 4, 0));
    }

    #[test]
    fn a_device_error_stops_the_round_and_is_counted() {
        let mut card = nic(vec![
            Err(NicError::Device("bad used id".to_string())),
            Ok(vec![0; 60]),
        ]);
        let stats = Stats::default();
        let mut port = Port::new(&mut card, 1500, &stats);
        assert_eq!(port.next_frame(), None);
        assert_eq!(stats.snapshot().device_errors, 1);
        // The next round goes on with the next frame.
        assert!(port.next_frame().is_some());
    }

    #[test]
    fn frames_are_taken_only_when_a_reply_could_go_out() {
        let mut card = nic(vec![Ok(vec![0; 60])]);
        card.room = 0;
        let stats = Stats::default();
        let mut port = Port::new(&mut card, 1500, &stats);
        assert!(port.receive(Instant::from_millis(0)).is_none());
        assert!(port.transmit(Instant::from_millis(0)).is_none());
        card.room = 2;
        let mut port = Port::new(&mut card, 1500, &stats);
        let (rx, tx) = port.receive(Instant::from_millis(0)).expect("a frame");
        assert_eq!(rx.consume(|f| f.len()), 60);
        tx.consume(42, |buf| buf.fill(7));
        assert_eq!(card.sent, vec![vec![7u8; 42]]);
        assert_eq!(stats.snapshot().tx_frames, 1);
    }

    #[test]
    fn one_poll_takes_at_most_the_budget() {
        let mut card = nic((0..RX_BUDGET + 10).map(|_| Ok(vec![0; 60])).collect());
        card.room = usize::MAX;
        let stats = Stats::default();
        let mut port = Port::new(&mut card, 1500, &stats);
        let mut taken = 0;
        while port.receive(Instant::from_millis(0)).is_some() {
            taken += 1;
        }
        assert_eq!((taken, port.budget), (RX_BUDGET, 0));
        // The rest waits in the card for the next pass.
        assert_eq!(card.rx.len(), 10);
    }

    /// An Ethernet + IPv4 + TCP frame with `flags` to port `dst`.
    fn tcp_frame(flags: u8, dst: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[34 + 2..34 + 4].copy_from_slice(&dst.to_be_bytes());
        f[34 + 13] = flags;
        f
    }

    #[test]
    fn syns_are_recognized_and_nothing_else() {
        assert_eq!(tcp_syn_port(&tcp_frame(0x02, 80)), Some(80));
        assert_eq!(tcp_syn_port(&tcp_frame(0x12, 80)), None); // SYN-ACK
        assert_eq!(tcp_syn_port(&tcp_frame(0x10, 80)), None); // ACK
        let mut udp = tcp_frame(0x02, 80);
        udp[14 + 9] = 17;
        assert_eq!(tcp_syn_port(&udp), None);
        let mut frag = tcp_frame(0x02, 80);
        frag[14 + 7] = 1;
        assert_eq!(tcp_syn_port(&frag), None);
        let mut bad_ihl = tcp_frame(0x02, 80);
        bad_ihl[14] = 0x4f; // 60-byte header: beyond the frame
        assert_eq!(tcp_syn_port(&bad_ihl), None);
        // Every truncation is refused without a panic.
        let full = tcp_frame(0x02, 80);
        for n in 0..full.len() {
            assert_eq!(tcp_syn_port(&full[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn syns_beyond_the_backlog_room_are_dropped() {
        let mut card = nic(vec![
            Ok(tcp_frame(0x02, 80)),
            Ok(tcp_frame(0x02, 80)),
            Ok(tcp_frame(0x02, 81)),
            Ok(tcp_frame(0x10, 80)),
        ]);
        card.room = usize::MAX;
        let stats = Stats::default();
        let mut port = Port::new(&mut card, 1500, &stats);
        port.syn_room = vec![(80, 1)];
        let mut got = 0;
        while port.receive(Instant::from_millis(0)).is_some() {
            got += 1;
        }
        // One SYN to 80 fits; the second is dropped; other ports and ACKs pass.
        assert_eq!((got, stats.snapshot().syn_dropped), (3, 1));
    }
}
