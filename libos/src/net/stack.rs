//! One interface: the card, its smoltcp `Interface` and sockets, and the net task that
//! drives them.
//!
//! The net task polls smoltcp (received frames in, queued segments out, DHCP and TCP
//! timers), wakes the socket waiters when something changed, then blocks on its wait
//! queue until the card interrupts, a socket operation kicks it, or smoltcp's
//! `poll_delay` says a timer is due. An idle interface costs nothing.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

use super::backlog::{self, Backlog};
use super::config::NetConfig;
use super::nic::{Nic, NicError};
use crate::cmdline::LogLevel;
use crate::irqflags::IrqGuard;
use crate::sched::{self, Priority, WaitQueue};
use crate::sync::Mutex;
use crate::time::{self, NEVER};

/// Ethernet header bytes (no VLAN tag).
const ETHERNET_HEADER: usize = 14;
/// How long a closed TCP socket may linger (FIN handshake, lost ACKs) before it is
/// aborted and its memory freed.
const CLOSE_TIMEOUT_NS: u64 = 10_000_000_000;
/// Frames one poll takes from the card (NAPI's budget): a flood leaves the rest in the
/// card's ring for the next pass, and the net task yields in between so other tasks run.
pub(super) const RX_BUDGET: usize = 64;

/// Counters of one interface.
#[derive(Debug, Default)]
struct Stats {
    rx_frames: AtomicU64,
    tx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    tx_dropped: AtomicU64,
    device_errors: AtomicU64,
    wakeups: AtomicU64,
    deferrals: AtomicU64,
    syn_dropped: AtomicU64,
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
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
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
        }
    }
}

/// What the net task and socket calls share, behind the interface's mutex.
pub(super) struct State {
    nic: Box<dyn Nic>,
    mtu: usize,
    iface: Interface,
    pub(super) sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    /// TCP sockets the app closed: removed once the connection is over (or the
    /// deadline passed), so a graceful close still sends what was written.
    closing: Vec<(SocketHandle, u64)>,
    /// The next local port for an outgoing connection (IANA's dynamic range).
    next_port: u16,
    /// The listeners' backlogs, tended after every poll.
    pub(super) backlogs: Vec<Backlog>,
    pub(super) next_backlog_id: u64,
}

/// One interface.
pub(crate) struct Stack {
    name: &'static str,
    pub(super) state: Mutex<State>,
    /// The net task waits here.
    wake: WaitQueue,
    /// News the net task has not polled for yet (an interrupt or a socket kick).
    pending: AtomicBool,
    /// Socket calls wait here for the net task's next poll that changed something.
    socket_waiters: WaitQueue,
    /// Polls that changed something; a waiter that saw an older count polls again
    /// instead of sleeping (no lost wake-up between its check and its sleep).
    events: AtomicU64,
    stats: Stats,
}

fn timestamp() -> Instant {
    Instant::from_micros((time::now_ns() / 1000) as i64)
}

impl core::fmt::Debug for Stack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Builds the interface over `nic` with a static address or a DHCP client.
    pub(super) fn new(
        name: &'static str,
        mut nic: Box<dyn Nic>,
        config: &NetConfig,
    ) -> &'static Stack {
        let mac = nic.mac();
        let mtu = nic.mtu();
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        // TCP initial sequence numbers and ephemeral ports come from this seed.
        iface_config.random_seed = crate::arch::rdtsc()
            ^ u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
        let stats = Stats::default();
        let mut port = Port::new(&mut *nic, mtu, &stats);
        let mut iface = Interface::new(iface_config, &mut port, timestamp());
        // The socket table never grows later: a reallocation while the heap is
        // exhausted would end the image. No more TCP sockets can exist than the heap
        // has room for the buffers of, so that many slots (plus UDP and DHCP) suffice.
        let slots = usize::try_from(crate::heap::total_bytes()).unwrap_or(0)
            / (2 * super::socket::TCP_BUFFER)
            + 16;
        let mut sockets = SocketSet::new(Vec::with_capacity(slots));
        let mut dhcp = None;
        match config.ip {
            Some(ip) => {
                set_address(
                    &mut iface,
                    Ipv4Cidr::new(Ipv4Address::from(ip.addr), ip.prefix),
                    config.gateway.map(Ipv4Address::from),
                );
                announce(name, mac, &alloc::format!("{ip} (static)"), config.gateway);
            }
            None => {
                dhcp = Some(sockets.add(dhcpv4::Socket::new()));
                if let Some(gw) = config.gateway {
                    let _ = iface
                        .routes_mut()
                        .add_default_ipv4_route(Ipv4Address::from(gw));
                }
            }
        }
        Box::leak(Box::new(Stack {
            name,
            state: Mutex::new(State {
                nic,
                mtu,
                iface,
                sockets,
                dhcp,
                closing: Vec::new(),
                next_port: FIRST_DYNAMIC_PORT + (crate::arch::rdtsc() % 8192) as u16,
                backlogs: Vec::new(),
                next_backlog_id: 0,
            }),
            wake: WaitQueue::new(),
            pending: AtomicBool::new(true),
            socket_waiters: WaitQueue::new(),
            events: AtomicU64::new(0),
            stats,
        }))
    }

    /// The interface's name (e.g. `eth0`).
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Its counters.
    pub(super) fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// TCP sockets by state (smoltcp's state names), and how many closed sockets wait
    /// for their connection to end.
    pub(super) fn tcp_states(&self) -> (Vec<(&'static str, usize)>, usize) {
        let st = self.state.lock();
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for (_, s) in st.sockets.iter() {
            if let smoltcp::socket::Socket::Tcp(t) = s {
                let name = tcp_state_name(t.state());
                match counts.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((name, 1)),
                }
            }
        }
        (counts, st.closing.len())
    }

    /// Tells the net task to poll soon (an interrupt arrived, or a socket has work).
    ///
    /// Context: any with irqs on, or the NET softirq.
    pub(super) fn kick(&self) {
        self.pending.store(true, Ordering::Release);
        // No forced switch: the net task outranks apps and runs at the next
        // preemption point or when the caller blocks, so a burst of socket calls is
        // handled by one poll (forcing the switch here cost ~3x the requests/s).
        self.wake.wake_one();
    }

    /// Wakes the socket waiters so they re-check (a stream of a listener at its cap
    /// was dropped).
    pub(super) fn notify_waiters(&self) {
        self.events.fetch_add(1, Ordering::Release);
        self.socket_waiters.wake_all();
    }

    /// One round: frames in (at most [`RX_BUDGET`]) and out, DHCP, tending backlogs,
    /// reaping closed sockets, waking socket waiters. Returns nanoseconds until smoltcp
    /// next needs a poll, or `Deferred` if the budget ran out (frames may be left).
    fn poll(&self) -> Next {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let now = timestamp();
        let frames_before = self.stats.rx_frames.load(Ordering::Relaxed)
            + self.stats.tx_frames.load(Ordering::Relaxed);
        let mut port = Port::new(&mut *st.nic, st.mtu, &self.stats);
        port.syn_room = backlog::syn_room(&st.backlogs, &mut st.sockets);
        let changed =
            st.iface.poll(now, &mut port, &mut st.sockets) == PollResult::SocketStateChanged;
        let deferred = port.budget == 0;
        if let Some(h) = st.dhcp {
            self.poll_dhcp(st, h);
        }
        backlog::tend(&mut st.backlogs, &mut st.sockets, time::now_ns());
        reap_closed(st);
        let next = if deferred {
            bump(&self.stats.deferrals, 1);
            Next::Deferred
        } else {
            Next::After(
                st.iface
                    .poll_delay(now, &st.sockets)
                    .map(|d| d.total_micros().saturating_mul(1000)),
            )
        };
        drop(guard);
        let frames_after = self.stats.rx_frames.load(Ordering::Relaxed)
            + self.stats.tx_frames.load(Ordering::Relaxed);
        if changed || frames_after != frames_before {
            self.events.fetch_add(1, Ordering::Release);
            self.socket_waiters.wake_all();
        }
        next
    }

    fn poll_dhcp(&self, st: &mut State, h: SocketHandle) {
        let event = match st.sockets.get_mut::<dhcpv4::Socket<'_>>(h).poll() {
            None => return,
            Some(dhcpv4::Event::Configured(c)) => Some((c.address, c.router)),
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        let mac = st.nic.mac();
        match event {
            Some((address, router)) => {
                set_address(&mut st.iface, address, router);
                let a = address.address().octets();
                let cidr = super::Cidr {
                    addr: a,
                    prefix: address.prefix_len(),
                };
                announce(
                    self.name,
                    mac,
                    &alloc::format!("{cidr} (dhcp)"),
                    router.map(|r| r.octets()),
                );
            }
            // smoltcp reports "deconfigured" once at start; only a lost lease is news.
            None if st.iface.ip_addrs().is_empty() => {}
            None => {
                st.iface.update_ip_addrs(|addrs| addrs.clear());
                st.iface.routes_mut().remove_default_ipv4_route();
                announce(self.name, mac, "deconfigured (dhcp lease lost)", None);
            }
        }
    }

    /// Runs `attempt` on the sockets until it returns `Some`, sleeping until the net
    /// task's next poll that changed something in between; kicks the net task after
    /// the successful attempt (data to send, a window to open).
    ///
    /// Context: task context, irqs on.
    pub(super) fn wait_for<R>(&self, attempt: impl FnMut(&mut State) -> Option<R>) -> R {
        self.wait_for_until(NEVER, attempt)
            .expect("an untimed wait ends only with a result")
    }

    /// [`Stack::wait_for`] until the monotonic `deadline_ns` at most (`NEVER`: no
    /// limit); `None` if it passed first.
    ///
    /// Context: task context, irqs on.
    pub(super) fn wait_for_until<R>(
        &self,
        deadline_ns: u64,
        mut attempt: impl FnMut(&mut State) -> Option<R>,
    ) -> Option<R> {
        loop {
            let seen = self.events.load(Ordering::Acquire);
            let done = attempt(&mut self.state.lock());
            if let Some(r) = done {
                self.kick();
                return Some(r);
            }
            if deadline_ns != NEVER && time::now_ns() >= deadline_ns {
                return None;
            }
            let irqs = IrqGuard::new();
            // Irqs off, and the count re-read once queued: a poll between this check
            // and the sleep is not missed, whichever CPU runs the net task.
            if self.events.load(Ordering::Acquire) == seen {
                sched::block_on_until_unless(
                    &irqs.token(),
                    &self.socket_waiters,
                    deadline_ns,
                    || self.events.load(Ordering::Acquire) != seen,
                );
            }
        }
    }

    /// Runs `f` on the sockets once, then kicks the net task.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.state.lock());
        self.kick();
        r
    }
}

/// The first port of the dynamic range, used for outgoing connections.
const FIRST_DYNAMIC_PORT: u16 = 49152;

impl State {
    /// Whether the interface has an IPv4 address (static, or DHCP done).
    pub(super) fn has_address(&self) -> bool {
        !self.iface.ip_addrs().is_empty()
    }

    /// Adds `socket` connecting to `to` from the next dynamic local port.
    pub(super) fn connect(
        &mut self,
        mut socket: tcp::Socket<'static>,
        to: smoltcp::wire::IpEndpoint,
    ) -> Result<SocketHandle, tcp::ConnectError> {
        let port = self.next_port;
        self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_DYNAMIC_PORT);
        socket.connect(self.iface.context(), to, port)?;
        Ok(self.sockets.add(socket))
    }

    /// Hands a TCP socket the app is done with to the reaper (after `close`).
    pub(super) fn retire(&mut self, h: SocketHandle) {
        self.closing
            .push((h, time::now_ns().saturating_add(CLOSE_TIMEOUT_NS)));
    }
}

/// Removes retired sockets whose connection is over (closed, or in TIME-WAIT: the
/// peer has our FIN and we have its) or past their deadline (a peer that never
/// finishes the close).
fn reap_closed(st: &mut State) {
    let now = time::now_ns();
    let sockets = &mut st.sockets;
    st.closing.retain(|&(h, deadline)| {
        let s = sockets.get_mut::<tcp::Socket<'_>>(h);
        let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
        if done || now >= deadline {
            sockets.remove(h);
            false
        } else {
            true
        }
    });
}

fn tcp_state_name(s: tcp::State) -> &'static str {
    match s {
        tcp::State::Closed => "closed",
        tcp::State::Listen => "listen",
        tcp::State::SynSent => "syn_sent",
        tcp::State::SynReceived => "syn_received",
        tcp::State::Established => "established",
        tcp::State::FinWait1 => "fin_wait1",
        tcp::State::FinWait2 => "fin_wait2",
        tcp::State::CloseWait => "close_wait",
        tcp::State::Closing => "closing",
        tcp::State::LastAck => "last_ack",
        tcp::State::TimeWait => "time_wait",
    }
}

fn set_address(iface: &mut Interface, address: Ipv4Cidr, router: Option<Ipv4Address>) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(address));
    });
    match router {
        Some(r) => {
            let _ = iface.routes_mut().add_default_ipv4_route(r);
        }
        None => {
            iface.routes_mut().remove_default_ipv4_route();
        }
    }
}

fn announce(name: &str, mac: [u8; 6], how: &str, gateway: Option<[u8; 4]>) {
    if crate::boot::loglevel() == LogLevel::Quiet {
        return;
    }
    let [a, b, c, d, e, f] = mac;
    match gateway {
        Some([g0, g1, g2, g3]) => crate::println!(
            "net: {name} {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x} {how} gateway {g0}.{g1}.{g2}.{g3}"
        ),
        None => {
            crate::println!("net: {name} {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x} {how}")
        }
    }
}

/// What the net task does after a poll.
enum Next {
    /// Sleep until news or this many nanoseconds (`None`: until news).
    After(Option<u64>),
    /// The receive budget ran out: give the other tasks [`DEFER_NS`], then poll again.
    Deferred,
}

/// How long the net task leaves the CPU to other tasks after a poll that used its
/// whole budget (the net task outranks apps: yielding alone would pick it again).
const DEFER_NS: u64 = 250_000;

/// Starts the interface's net task.
pub(super) fn start(stack: &'static Stack) {
    // Detached: the task runs as long as the image.
    drop(sched::spawn("net", Priority::High, move || run(stack)));
}

/// The net task.
fn run(stack: &'static Stack) {
    loop {
        stack.pending.store(false, Ordering::Release);
        bump(&stack.stats.wakeups, 1);
        let delay = match stack.poll() {
            Next::After(delay) => delay,
            Next::Deferred => {
                // Budget used up: the rest waits (in the card's ring) while the other
                // tasks, whatever their priority, get the CPU for a while. A plain
                // sleep: the interrupts of a flood must not wake us early.
                sched::sleep_until(time::now_ns().saturating_add(DEFER_NS));
                continue;
            }
        };
        let deadline = delay.map_or(NEVER, |d| time::now_ns().saturating_add(d));
        let irqs = IrqGuard::new();
        // Irqs off: an interrupt's wake-up cannot slip between this check and the sleep.
        if !stack.pending.load(Ordering::Acquire) {
            sched::block_on_until_unless(&irqs.token(), &stack.wake, deadline, || {
                stack.pending.load(Ordering::Acquire)
            });
        }
    }
}

/// The card as smoltcp's `Device`, for the length of one poll.
struct Port<'a> {
    nic: &'a mut dyn Nic,
    mtu: usize,
    stats: &'a Stats,
    /// Frames this poll may still take ([`RX_BUDGET`] at the start).
    budget: usize,
    /// Listening ports and how many more SYNs their backlogs can take this poll.
    syn_room: Vec<(u16, usize)>,
}

impl<'a> Port<'a> {
    fn new(nic: &'a mut dyn Nic, mtu: usize, stats: &'a Stats) -> Self {
        Port {
            nic,
            mtu,
            stats,
            budget: RX_BUDGET,
            syn_room: Vec::new(),
        }
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
        let max = self.mtu + ETHERNET_HEADER;
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
struct Received(Vec<u8>);

impl RxToken for Received {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for one frame to send.
struct Sender<'a> {
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
