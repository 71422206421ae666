//! The socket API for apps: TCP listener and stream, UDP socket. Calls block the
//! calling task (never the CPU) until the net task's polls make progress possible, or
//! until the socket's timeout for that call passes ([`NetError::TimedOut`]).
//!
//! Limits (see [`ListenOptions`] and [`Timeouts`]): a listener keeps a bounded backlog
//! whose half-open entries time out; it hands out at most `max_connections` streams at
//! once (default derived from the heap size); accepted streams get read, write and
//! keep-alive timeouts. Socket memory is allocated fallibly: a short heap fails one
//! call with [`NetError::NoMemory`] instead of ending the image.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use core::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};

use super::backlog::Backlog;
use super::stack::{Stack, State};
use crate::time::{self, NEVER};

/// Bytes of each TCP socket's receive and transmit buffers.
pub const TCP_BUFFER: usize = 32 * 1024;
/// Default listening sockets a [`TcpListener`] keeps ready: connection requests (SYNs)
/// beyond this many half-open or not-yet-accepted ones are dropped (the client retries).
pub const DEFAULT_BACKLOG: usize = 32;
/// Default time a handshake may take before its backlog slot listens again.
pub const DEFAULT_HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an established connection waits in the backlog while the listener is
/// at its cap, before it is reset.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default read timeout of accepted streams (an idle peer is dropped after it).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Default write timeout of accepted streams (a peer that stops reading).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Heap bytes one connection of a typical server costs: the two socket buffers, a task
/// stack with its guard page, and slack for the task and socket bookkeeping.
pub const CONNECTION_COST: usize = 2 * TCP_BUFFER + crate::sched::TASK_STACK_SIZE + 2 * 4096;

/// An IPv4 address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub addr: [u8; 4],
    /// The port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

impl Endpoint {
    pub(super) fn from_smoltcp(e: IpEndpoint) -> Self {
        let addr = match e.addr {
            IpAddress::Ipv4(a) => a.octets(),
        };
        Endpoint { addr, port: e.port }
    }

    pub(super) fn to_smoltcp(self) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(self.addr)), self.port)
    }
}

/// What a socket call can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// No network card was found (QEMU: add one, e.g. `cargo xtask run --forward`).
    NoInterface,
    /// The port is 0 or already bound.
    BadPort(u16),
    /// The connection is closed for sending (we closed it, or it was reset).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// A datagram larger than the socket's buffer.
    TooLarge(usize),
    /// An outgoing connection was refused or timed out.
    Refused(Endpoint),
    /// An outgoing connection cannot be addressed (no address yet, bad endpoint).
    Unaddressable(Endpoint),
    /// The call's timeout passed (read, write, connect); the connection is unusable.
    TimedOut,
    /// The heap cannot hold the socket's buffers.
    NoMemory,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoInterface => write!(f, "no network interface (no network card found)"),
            NetError::BadPort(p) => write!(f, "cannot bind port {p} (0 or in use)"),
            NetError::Closed => write!(f, "connection closed"),
            NetError::Reset => write!(f, "connection reset by peer"),
            NetError::TooLarge(n) => write!(f, "datagram of {n} bytes is too large"),
            NetError::Refused(to) => write!(f, "connection to {to} refused or timed out"),
            NetError::TimedOut => write!(f, "timed out"),
            NetError::NoMemory => write!(f, "out of memory for socket buffers"),
            NetError::Unaddressable(to) => {
                write!(
                    f,
                    "cannot connect to {to} (no address yet, or a bad endpoint)"
                )
            }
        }
    }
}

/// Counters of the TCP layer, summed over every listener and stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Streams open now (accepted or connected, not yet dropped).
    pub open: u64,
    /// Connections accepted since boot.
    pub accepted: u64,
    /// Connections reset because the listener stayed at its cap (queue timeout), or
    /// because the heap could not hold them.
    pub refused: u64,
    /// Read, write and connect calls that timed out.
    pub timed_out: u64,
    /// Handshakes that never completed (half-open timeout) or were reset before accept.
    pub half_open_dropped: u64,
    /// Socket buffers the heap could not provide.
    pub no_memory: u64,
}

/// The TCP counters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Counter {
    Open,
    Accepted,
    Refused,
    TimedOut,
    HalfOpenDropped,
    NoMemory,
}

static COUNTERS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

pub(super) fn bump(c: Counter) {
    COUNTERS[c as usize].fetch_add(1, Relaxed);
}

fn unbump(c: Counter) {
    COUNTERS[c as usize].fetch_sub(1, Relaxed);
}

/// The TCP counters now.
pub fn tcp_counters() -> TcpCounters {
    let r = |c: Counter| COUNTERS[c as usize].load(Relaxed);
    TcpCounters {
        open: r(Counter::Open),
        accepted: r(Counter::Accepted),
        refused: r(Counter::Refused),
        timed_out: r(Counter::TimedOut),
        half_open_dropped: r(Counter::HalfOpenDropped),
        no_memory: r(Counter::NoMemory),
    }
}

/// `n` zero bytes, or `NoMemory` (counted) if the heap cannot hold them.
pub(super) fn try_zeroed(n: usize) -> Result<Vec<u8>, NetError> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        bump(Counter::NoMemory);
        return Err(NetError::NoMemory);
    }
    v.resize(n, 0);
    Ok(v)
}

/// A TCP socket with fresh buffers, allocated fallibly.
pub(super) fn try_new_tcp_socket() -> Result<tcp::Socket<'static>, NetError> {
    let rx = tcp::SocketBuffer::new(try_zeroed(TCP_BUFFER)?);
    let tx = tcp::SocketBuffer::new(try_zeroed(TCP_BUFFER)?);
    Ok(tcp::Socket::new(rx, tx))
}

/// The default cap on a listener's open connections: half the heap divided by
/// [`CONNECTION_COST`] (at least 4), so the connections of one listener cannot take
/// the heap the rest of the image needs.
pub fn default_max_connections() -> usize {
    let heap = usize::try_from(crate::heap::total_bytes()).unwrap_or(usize::MAX);
    (heap / 2 / CONNECTION_COST).max(4)
}

/// Per-stream timeouts; `None` waits forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest a `read` waits for data (the idle timeout of a server waiting for the
    /// next request).
    pub read: Option<Duration>,
    /// Longest a `write` waits for room (a peer that stops reading).
    pub write: Option<Duration>,
    /// TCP keep-alive interval: an idle connection is probed this often and aborted if
    /// the peer does not answer within three intervals (smoltcp's keep-alive and timeout).
    pub keep_alive: Option<Duration>,
}

impl Default for Timeouts {
    /// Read [`DEFAULT_READ_TIMEOUT`], write [`DEFAULT_WRITE_TIMEOUT`], no keep-alive.
    fn default() -> Self {
        Timeouts {
            read: Some(DEFAULT_READ_TIMEOUT),
            write: Some(DEFAULT_WRITE_TIMEOUT),
            keep_alive: None,
        }
    }
}

/// How a [`TcpListener`] limits its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Listening sockets kept ready (half-open plus established-not-accepted); SYNs
    /// beyond them are dropped and counted (the client's TCP retries).
    pub backlog: usize,
    /// A handshake not completed within this is dropped and its slot listens again
    /// (an established connection waiting for `accept` no longer has this timeout).
    pub half_open_timeout: Duration,
    /// Most accepted streams open at once; `accept` waits while the listener is there.
    pub max_connections: usize,
    /// An established connection waiting in the backlog this long while the listener
    /// is at its cap is reset (counted as refused).
    pub queue_timeout: Duration,
    /// Timeouts every accepted stream starts with.
    pub stream: Timeouts,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: DEFAULT_BACKLOG,
            half_open_timeout: DEFAULT_HALF_OPEN_TIMEOUT,
            max_connections: default_max_connections(),
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            stream: Timeouts::default(),
        }
    }
}

fn smol(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The monotonic deadline `timeout` from now (`NEVER` for `None`).
pub(super) fn deadline(timeout: Option<Duration>) -> u64 {
    match timeout {
        None => NEVER,
        Some(d) => time::now_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// A wait that ran out: counted, and the error for the caller.
pub(super) fn timed_out() -> NetError {
    bump(Counter::TimedOut);
    NetError::TimedOut
}

/// A TCP port accepting connections.
#[derive(Debug)]
pub struct TcpListener {
    stack: &'static Stack,
    port: u16,
    /// The backlog's id in the interface state (the net task tends it there).
    id: u64,
    stream: Timeouts,
}

impl TcpListener {
    /// Listens on `port` of the default interface with [`ListenOptions::default`].
    pub fn bind(port: u16) -> Result<TcpListener, NetError> {
        Self::bind_with(port, ListenOptions::default())
    }

    /// Listens on `port` of the default interface with `options`.
    pub fn bind_with(port: u16, options: ListenOptions) -> Result<TcpListener, NetError> {
        let stack = super::default_interface()?;
        let taken = stack.with(|st| st.backlogs.iter().any(|b| b.port == port));
        if port == 0 || taken {
            return Err(NetError::BadPort(port));
        }
        let id = stack.with(|st| {
            let id = st.next_backlog_id;
            st.next_backlog_id += 1;
            let mut b = Backlog {
                id,
                port,
                slots: Vec::new(),
                size: options.backlog.max(1),
                half_open_timeout: smol(options.half_open_timeout),
                queue_timeout_ns: u64::try_from(options.queue_timeout.as_nanos())
                    .unwrap_or(u64::MAX),
                open: 0,
                cap: options.max_connections.max(1),
            };
            for _ in 0..b.size {
                if let Err(e) = b.add_slot(&mut st.sockets) {
                    for slot in b.slots.drain(..) {
                        st.sockets.remove(slot.handle);
                    }
                    return Err(e);
                }
            }
            st.backlogs.push(b);
            Ok(id)
        })?;
        Ok(TcpListener {
            stack,
            port,
            id,
            stream: options.stream,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the next connection (while the listener is at its connection cap,
    /// until one of its streams is dropped). The stream starts with the listener's
    /// [`Timeouts`].
    pub fn accept(&mut self) -> Result<TcpStream, NetError> {
        let id = self.id;
        let handle = self.stack.wait_for(|st| {
            let st = &mut *st;
            let b = st.backlogs.iter_mut().find(|b| b.id == id)?;
            if b.open >= b.cap {
                return None;
            }
            let i = b.ready(&mut st.sockets)?;
            let conn = b.slots.swap_remove(i).handle;
            // The slot listens again with a fresh socket; if the heap is short now,
            // the net task refills it later (`backlog::tend`).
            let _ = b.add_slot(&mut st.sockets);
            b.open += 1;
            Some(conn)
        });
        bump(Counter::Accepted);
        bump(Counter::Open);
        let mut stream = TcpStream {
            stack: self.stack,
            handle,
            listener: Some(id),
            timeouts: Timeouts {
                read: None,
                write: None,
                keep_alive: None,
            },
            broken: false,
        };
        stream.set_timeouts(self.stream);
        Ok(stream)
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let id = self.id;
        self.stack.with(|st| {
            if let Some(i) = st.backlogs.iter().position(|b| b.id == id) {
                let b = st.backlogs.swap_remove(i);
                for slot in b.slots {
                    st.sockets.get_mut::<tcp::Socket<'_>>(slot.handle).abort();
                    st.retire(slot.handle);
                }
            }
        });
    }
}

/// An established TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    stack: &'static Stack,
    handle: SocketHandle,
    /// The listener's backlog id, for its open count (accepted streams).
    listener: Option<u64>,
    timeouts: Timeouts,
    /// A write timed out or failed (or the connect did not complete): dropping aborts
    /// (RST) instead of a graceful close that would wait on a peer that does not read.
    broken: bool,
}

/// How long an outgoing connection may take to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl TcpStream {
    /// Connects to `to` from the default interface: waits until the interface has an
    /// address (DHCP may still be running), then until the connection is established
    /// (at most 10 s). The stream starts with [`Timeouts::default`].
    pub fn connect(to: Endpoint) -> Result<TcpStream, NetError> {
        let stack = super::default_interface()?;
        let until = deadline(Some(CONNECT_TIMEOUT));
        stack
            .wait_for_until(until, |st| st.has_address().then_some(()))
            .ok_or_else(|| {
                bump(Counter::TimedOut);
                NetError::Unaddressable(to)
            })?;
        let mut s = try_new_tcp_socket()?;
        s.set_timeout(Some(smol(CONNECT_TIMEOUT)));
        let handle = stack.with(|st| {
            st.connect(s, to.to_smoltcp())
                .map_err(|_| NetError::Unaddressable(to))
        })?;
        bump(Counter::Open);
        let mut stream = TcpStream {
            stack,
            handle,
            listener: None,
            timeouts: Timeouts {
                read: None,
                write: None,
                keep_alive: None,
            },
            broken: true,
        };
        let established =
            stack.wait_for_until(until, |st| match Self::socket(st, handle).state() {
                tcp::State::SynSent | tcp::State::SynReceived => None,
                tcp::State::Closed => Some(false),
                _ => Some(true),
            });
        match established {
            Some(true) => {
                stream.broken = false;
                stream.set_timeouts(Timeouts::default());
                Ok(stream)
            }
            Some(false) => Err(NetError::Refused(to)),
            None => {
                bump(Counter::TimedOut);
                Err(NetError::TimedOut)
            }
        }
    }

    fn socket(st: &mut State, h: SocketHandle) -> &mut tcp::Socket<'static> {
        st.sockets.get_mut::<tcp::Socket<'static>>(h)
    }

    /// The stream's timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sets the stream's timeouts (they apply to calls made afterwards).
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
        let h = self.handle;
        self.stack.with(|st| {
            let s = Self::socket(st, h);
            s.set_keep_alive(t.keep_alive.map(smol));
            // smoltcp aborts a connection whose peer is silent this long while data
            // or a keep-alive probe waits for its ACK.
            s.set_timeout(t.keep_alive.map(|k| smol(k.saturating_mul(3))));
        });
    }

    /// Sets only the read timeout.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.timeouts.read = t;
    }

    /// Sets only the write timeout.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.timeouts.write = t;
    }

    /// The peer's address.
    pub fn peer(&self) -> Option<Endpoint> {
        let h = self.handle;
        self.stack.with(|st| {
            Self::socket(st, h)
                .remote_endpoint()
                .map(Endpoint::from_smoltcp)
        })
    }

    /// Reads what has arrived (at least one byte, waiting if none, at most the read
    /// timeout: then [`NetError::TimedOut`]); `Ok(0)` once the peer closed its side
    /// and everything was read.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        let r = self
            .stack
            .wait_for_until(deadline(self.timeouts.read), |st| {
                let s = Self::socket(st, h);
                if s.can_recv() {
                    return Some(s.recv_slice(buf).map_err(|_| NetError::Reset));
                }
                if !s.may_recv() {
                    // The peer sent FIN (a clean end) or the connection died: end of stream.
                    return Some(Ok(0));
                }
                None
            });
        r.unwrap_or_else(|| Err(timed_out()))
    }

    /// Writes as much of `buf` as fits (at least one byte, waiting for room at most
    /// the write timeout: then [`NetError::TimedOut`]).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        let r = self
            .stack
            .wait_for_until(deadline(self.timeouts.write), |st| {
                let s = Self::socket(st, h);
                if !s.may_send() {
                    return Some(Err(if s.state() == tcp::State::Closed {
                        NetError::Reset
                    } else {
                        NetError::Closed
                    }));
                }
                if s.can_send() {
                    return Some(s.send_slice(buf).map_err(|_| NetError::Closed));
                }
                None
            });
        let r = r.unwrap_or_else(|| Err(timed_out()));
        if r.is_err() {
            // Unsent data to a peer that does not read: a graceful close would wait
            // on it, so the drop aborts instead.
            self.broken = true;
        }
        r
    }

    /// Writes all of `buf`; the write timeout applies to each wait for room (a peer
    /// that reads slowly but steadily is served).
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), NetError> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Closes our side (FIN after what was written); reading may continue.
    pub fn close(&mut self) {
        let h = self.handle;
        self.stack.with(|st| Self::socket(st, h).close());
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let (h, listener, broken) = (self.handle, self.listener, self.broken);
        self.stack.with(|st| {
            let s = Self::socket(st, h);
            if broken {
                s.abort();
            } else {
                s.close();
            }
            st.retire(h);
            if let Some(id) = listener
                && let Some(b) = st.backlogs.iter_mut().find(|b| b.id == id)
            {
                b.open -= 1;
            }
        });
        unbump(Counter::Open);
        // A listener at its cap may accept again.
        self.stack.notify_waiters();
    }
}
