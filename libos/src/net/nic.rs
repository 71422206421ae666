//! The contract between a network driver and the net layer.
//!
//! A driver (virtio-net on KVM, later netfront on Xen) implements [`Nic`] and hands it
//! to [`super::register_nic`]; its interrupt handler calls [`super::interrupt`] with the
//! id it got back. The net task owns the `Nic` and calls it only from task context.
#![forbid(unsafe_code)]

use alloc::string::String;
use core::fmt;

/// Why a driver refused or dropped a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicError {
    /// No room to transmit now; the driver raises an interrupt when there is.
    Busy,
    /// A received frame was malformed (bad length, bad header) and was dropped.
    Malformed(&'static str),
    /// The device broke its side of the protocol; the message says how.
    Device(String),
}

impl fmt::Display for NicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicError::Busy => write!(f, "transmit queue full"),
            NicError::Malformed(what) => write!(f, "malformed frame dropped: {what}"),
            NicError::Device(what) => write!(f, "device error: {what}"),
        }
    }
}

/// Checksum work a card (with its driver) does itself, so the stack skips it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Sent TCP segments get their checksum from the card: the stack leaves it zero.
    pub tx_tcp_checksum: bool,
    /// Received TCP segments were verified by the card or the driver (a bad one never
    /// reaches the stack): the stack does not verify them again.
    pub rx_tcp_checksum: bool,
}

/// What a card's segmentation and scatter-gather offloads did (for `/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadCounters {
    /// Frames sent as one large TCP segment that the card (or its backend) cuts up.
    pub tx_gso_frames: u64,
    /// The segments those frames carried.
    pub tx_gso_segments: u64,
    /// Frames sent or received in more than one buffer (scatter-gather).
    pub multi_buffer_frames: u64,
    /// Large TCP segments received whole (the backend did not cut them up).
    pub rx_gso_frames: u64,
}

/// An Ethernet network interface card, as a driver presents it.
///
/// Context: every method is called from the interface's net task (irqs on).
pub trait Nic: Send {
    /// The card's MAC address.
    fn mac(&self) -> [u8; 6];

    /// The largest IP packet (Ethernet payload) the card carries, usually 1500.
    fn mtu(&self) -> usize;

    /// The largest frame [`Nic::receive`] may deliver (a card that takes large
    /// segments from its backend delivers more than an MTU's worth).
    fn max_rx_frame(&self) -> usize {
        self.mtu() + 14
    }

    /// The checksum offloads in use (none unless the driver negotiated some).
    fn offloads(&self) -> Offloads {
        Offloads::default()
    }

    /// What the offloads did so far.
    fn offload_counters(&self) -> OffloadCounters {
        OffloadCounters::default()
    }

    /// Whether [`Nic::transmit`] would accept a frame now (also reclaims sent buffers).
    fn can_transmit(&mut self) -> bool;

    /// Queues one Ethernet frame (without FCS) for sending.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError>;

    /// Sends whatever [`Nic::transmit`] held back (a batch being merged, requests not
    /// yet announced to the device). The net task calls it after every poll.
    fn flush(&mut self) {}

    /// Passes the next received Ethernet frame to `deliver`. `Ok(false)` when no frame
    /// is waiting; an error means one frame was dropped (the next call may succeed).
    fn receive(&mut self, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, NicError>;
}
