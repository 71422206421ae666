//! The UDP socket for apps: a bound port whose calls block the calling task until the
//! net task's polls make progress possible, or until the socket's timeout for that call
//! passes ([`NetError::TimedOut`]). Buffers are allocated fallibly.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;

use super::socket::{Counter, Endpoint, NetError, Timeouts, bump, deadline, timed_out, try_zeroed};
use super::stack::Stack;

/// Datagrams and payload bytes each UDP socket buffers per direction.
const UDP_PACKETS: usize = 32;
const UDP_BUFFER: usize = 64 * 1024;

/// A bound UDP port.
#[derive(Debug)]
pub struct UdpSocket {
    stack: &'static Stack,
    handle: SocketHandle,
    /// Longest `recv_from` and `send_to` wait (`None`: no limit, the default).
    timeouts: Timeouts,
}

impl UdpSocket {
    /// Binds `port` on the default interface.
    pub fn bind(port: u16) -> Result<UdpSocket, NetError> {
        let stack = super::default_interface()?;
        let buffer = || -> Result<udp::PacketBuffer<'static>, NetError> {
            let mut meta = Vec::new();
            if meta.try_reserve_exact(UDP_PACKETS).is_err() {
                bump(Counter::NoMemory);
                return Err(NetError::NoMemory);
            }
            meta.resize(UDP_PACKETS, udp::PacketMetadata::EMPTY);
            Ok(udp::PacketBuffer::new(meta, try_zeroed(UDP_BUFFER)?))
        };
        let mut s = udp::Socket::new(buffer()?, buffer()?);
        s.bind(port).map_err(|_| NetError::BadPort(port))?;
        let handle = stack.with(|st| st.sockets.add(s));
        Ok(UdpSocket {
            stack,
            handle,
            timeouts: Timeouts {
                read: None,
                write: None,
                keep_alive: None,
            },
        })
    }

    /// Sets how long `recv_from` (`read`) and `send_to` (`write`) may wait;
    /// `keep_alive` is ignored.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// Receives one datagram (waiting for one, at most the read timeout: then
    /// [`NetError::TimedOut`]); a datagram longer than `buf` is truncated to it.
    /// Returns (bytes, sender).
    pub fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, Endpoint), NetError> {
        let h = self.handle;
        self.stack
            .wait_for_until(deadline(self.timeouts.read), |st| {
                let s = st.sockets.get_mut::<udp::Socket<'static>>(h);
                let (data, meta) = s.recv().ok()?;
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Some(Ok((n, Endpoint::from_smoltcp(meta.endpoint))))
            })
            .unwrap_or_else(|| Err(timed_out()))
    }

    /// Sends one datagram to `to` (waiting for buffer room, at most the write timeout).
    pub fn send_to(&mut self, data: &[u8], to: Endpoint) -> Result<(), NetError> {
        if data.len() > UDP_BUFFER {
            return Err(NetError::TooLarge(data.len()));
        }
        let h = self.handle;
        self.stack
            .wait_for_until(deadline(self.timeouts.write), |st| {
                let s = st.sockets.get_mut::<udp::Socket<'static>>(h);
                match s.send_slice(data, to.to_smoltcp()) {
                    Ok(()) => Some(Ok(())),
                    Err(udp::SendError::BufferFull) => None,
                    Err(udp::SendError::Unaddressable) => Some(Err(NetError::Closed)),
                }
            })
            .unwrap_or_else(|| Err(timed_out()))
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
