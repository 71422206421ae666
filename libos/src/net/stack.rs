//! One interface: the card, its smoltcp `Interface` and sockets, and the net task that
//! drives them.
//!
//! The net task polls smoltcp (received frames in, queued segments out, DHCP and TCP
//! timers), wakes the socket waiters when something changed, then blocks on its wait
//! queue until the card interrupts, a socket operation kicks it, or smoltcp's
//! `poll_delay` says a timer is due. An idle interface costs nothing.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

use super::backlog::{self, Backlog};
use super::config::NetConfig;
use super::nic::Nic;
pub use super::port::StatsSnapshot;
use super::port::{Port, Stats, bump};
use crate::cmdline::LogLevel;
use crate::irqflags::IrqGuard;
use crate::sched::{self, Priority, WaitQueue};
use crate::sync::Mutex;
use crate::time::{self, NEVER};

/// How long a closed TCP socket may linger (FIN handshake, lost ACKs) before it is
/// aborted and its memory freed.
const CLOSE_TIMEOUT_NS: u64 = 10_000_000_000;
/// Extra egress passes one poll makes while segments go out (a 64 KiB GSO frame is 45
/// segments).
const TX_BUDGET: usize = 64;
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

    /// One round: frames in (at most [`RX_BUDGET`](super::port::RX_BUDGET)) and out, DHCP, tending backlogs,
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
        let mut changed =
            st.iface.poll(now, &mut port, &mut st.sockets) == PollResult::SocketStateChanged;
        // smoltcp's egress sends at most one segment per socket and pass: keep passing
        // while segments go out (up to TX_BUDGET), so a bulk transfer leaves as a train
        // the card can batch (one notification, one GSO frame) instead of one segment
        // per wake-up of the net task.
        for _ in 0..TX_BUDGET {
            let sent = self.stats.tx_frames.load(Ordering::Relaxed);
            changed |= st.iface.poll_egress(now, &mut port, &mut st.sockets)
                == PollResult::SocketStateChanged;
            if self.stats.tx_frames.load(Ordering::Relaxed) == sent {
                break;
            }
        }
        port.flush();
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
