//! The socket API for apps: TCP listener and stream, UDP socket. Calls block the
//! calling task (never the CPU) until the net task's polls make progress possible.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};

use super::stack::{Stack, State};

/// Bytes of each TCP socket's receive and transmit buffers.
const TCP_BUFFER: usize = 32 * 1024;
/// Listening sockets a [`TcpListener`] keeps ready: connection attempts beyond this
/// many not-yet-accepted ones are refused.
const BACKLOG: usize = 32;
/// Datagrams and payload bytes each UDP socket buffers per direction.
const UDP_PACKETS: usize = 32;
const UDP_BUFFER: usize = 64 * 1024;

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
    fn from_smoltcp(e: IpEndpoint) -> Self {
        let addr = match e.addr {
            IpAddress::Ipv4(a) => a.octets(),
        };
        Endpoint { addr, port: e.port }
    }

    fn to_smoltcp(self) -> IpEndpoint {
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
            NetError::Unaddressable(to) => {
                write!(
                    f,
                    "cannot connect to {to} (no address yet, or a bad endpoint)"
                )
            }
        }
    }
}

fn new_tcp_socket() -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]);
    let tx = tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]);
    tcp::Socket::new(rx, tx)
}

fn listening_socket(st: &mut State, port: u16) -> Result<SocketHandle, NetError> {
    let mut s = new_tcp_socket();
    s.listen(port).map_err(|_| NetError::BadPort(port))?;
    Ok(st.sockets.add(s))
}

/// A TCP port accepting connections.
#[derive(Debug)]
pub struct TcpListener {
    stack: &'static Stack,
    port: u16,
    /// Listening sockets; one turns into a connection when a client's SYN arrives.
    backlog: Vec<SocketHandle>,
}

impl TcpListener {
    /// Listens on `port` of the default interface.
    pub fn bind(port: u16) -> Result<TcpListener, NetError> {
        let stack = super::default_interface()?;
        let taken = stack.with(|st| {
            st.sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => {
                    t.listen_endpoint().port == port && t.state() == tcp::State::Listen
                }
                _ => false,
            })
        });
        if port == 0 || taken {
            return Err(NetError::BadPort(port));
        }
        let backlog = stack.with(|st| {
            (0..BACKLOG)
                .map(|_| listening_socket(st, port))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(TcpListener {
            stack,
            port,
            backlog,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the next connection.
    pub fn accept(&mut self) -> Result<TcpStream, NetError> {
        let port = self.port;
        let backlog = &mut self.backlog;
        self.stack
            .wait_for(|st| {
                for slot in backlog.iter_mut() {
                    let s = st.sockets.get_mut::<tcp::Socket<'_>>(*slot);
                    match s.state() {
                        tcp::State::Listen | tcp::State::SynReceived => continue,
                        // A handshake that was reset: listen again with this socket.
                        tcp::State::Closed => {
                            if s.listen(port).is_err() {
                                return Some(Err(NetError::BadPort(port)));
                            }
                            continue;
                        }
                        _ => {}
                    }
                    let fresh = match listening_socket(st, port) {
                        Ok(h) => h,
                        Err(e) => return Some(Err(e)),
                    };
                    let conn = core::mem::replace(slot, fresh);
                    return Some(Ok(conn));
                }
                None
            })
            .map(|handle| TcpStream {
                stack: self.stack,
                handle,
            })
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let backlog = core::mem::take(&mut self.backlog);
        self.stack.with(|st| {
            for h in backlog {
                st.sockets.get_mut::<tcp::Socket<'_>>(h).abort();
                st.sockets.remove(h);
            }
        });
    }
}

/// An established TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    stack: &'static Stack,
    handle: SocketHandle,
}

/// How long an outgoing connection may take to be established.
const CONNECT_TIMEOUT_S: u64 = 10;

impl TcpStream {
    /// Connects to `to` from the default interface: waits until the interface has an
    /// address (DHCP may still be running), then until the connection is established
    /// (at most 10 s).
    pub fn connect(to: Endpoint) -> Result<TcpStream, NetError> {
        let stack = super::default_interface()?;
        stack.wait_for(|st| st.has_address().then_some(()));
        let handle = stack.with(|st| {
            let mut s = new_tcp_socket();
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(CONNECT_TIMEOUT_S)));
            st.connect(s, to.to_smoltcp())
                .map_err(|_| NetError::Unaddressable(to))
        })?;
        let established = stack.wait_for(|st| match Self::socket(st, handle).state() {
            tcp::State::SynSent | tcp::State::SynReceived => None,
            tcp::State::Closed => Some(false),
            _ => Some(true),
        });
        let stream = TcpStream { stack, handle };
        if established {
            stream
                .stack
                .with(|st| Self::socket(st, handle).set_timeout(None));
            Ok(stream)
        } else {
            Err(NetError::Refused(to))
        }
    }

    fn socket(st: &mut State, h: SocketHandle) -> &mut tcp::Socket<'static> {
        st.sockets.get_mut::<tcp::Socket<'static>>(h)
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

    /// Reads what has arrived (at least one byte, waiting if none); `Ok(0)` once the
    /// peer closed its side and everything was read.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        self.stack.wait_for(|st| {
            let s = Self::socket(st, h);
            if s.can_recv() {
                return Some(s.recv_slice(buf).map_err(|_| NetError::Reset));
            }
            if !s.may_recv() {
                // The peer sent FIN (a clean end) or the connection died: end of stream.
                return Some(Ok(0));
            }
            None
        })
    }

    /// Writes as much of `buf` as fits (at least one byte, waiting for room).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        self.stack.wait_for(|st| {
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
        })
    }

    /// Writes all of `buf`.
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
        let h = self.handle;
        self.stack.with(|st| {
            Self::socket(st, h).close();
            st.retire(h);
        });
    }
}

/// A bound UDP port.
#[derive(Debug)]
pub struct UdpSocket {
    stack: &'static Stack,
    handle: SocketHandle,
}

impl UdpSocket {
    /// Binds `port` on the default interface.
    pub fn bind(port: u16) -> Result<UdpSocket, NetError> {
        let stack = super::default_interface()?;
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_BUFFER],
            )
        };
        let mut s = udp::Socket::new(buffer(), buffer());
        s.bind(port).map_err(|_| NetError::BadPort(port))?;
        let handle = stack.with(|st| st.sockets.add(s));
        Ok(UdpSocket { stack, handle })
    }

    /// Receives one datagram (waiting for one); a datagram longer than `buf` is
    /// truncated to it. Returns (bytes, sender).
    pub fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, Endpoint), NetError> {
        let h = self.handle;
        self.stack.wait_for(|st| {
            let s = st.sockets.get_mut::<udp::Socket<'static>>(h);
            let (data, meta) = s.recv().ok()?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            Some(Ok((n, Endpoint::from_smoltcp(meta.endpoint))))
        })
    }

    /// Sends one datagram to `to` (waiting for buffer room).
    pub fn send_to(&mut self, data: &[u8], to: Endpoint) -> Result<(), NetError> {
        if data.len() > UDP_BUFFER {
            return Err(NetError::TooLarge(data.len()));
        }
        let h = self.handle;
        self.stack.wait_for(|st| {
            let s = st.sockets.get_mut::<udp::Socket<'static>>(h);
            match s.send_slice(data, to.to_smoltcp()) {
                Ok(()) => Some(Ok(())),
                Err(udp::SendError::BufferFull) => None,
                Err(udp::SendError::Unaddressable) => Some(Err(NetError::Closed)),
            }
        })
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let h = self.handle;
        self.stack.with(|st| {
            st.sockets.remove(h);
        });
    }
}
