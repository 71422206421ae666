//! Networking: one smoltcp interface per network card, driven by the card's interrupts.
//!
//! ```text
//! driver irq handler ──interrupt(id)──▶ softirq NET ──▶ wakes the card's net task
//! net task: poll smoltcp (frames in and out, timers) ─▶ wakes socket waiters
//!           blocks until the next interrupt, a socket kick, or smoltcp's poll_delay
//! app tasks: TcpListener / TcpStream / UdpSocket block on socket events, not the CPU
//! ```
//!
//! Drivers implement [`Nic`] and call [`register_nic`] (backends do this in
//! `Platform::start_services`). The address comes from `ip=`/`mask=`/`gw=` on the
//! command line, otherwise from DHCP. Sockets use the first registered interface.
#![forbid(unsafe_code)]

mod backlog;
pub mod config;
mod nic;
mod port;
mod socket;
mod stack;
pub mod tso;
mod udp;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub use config::{Cidr, NetConfig};
pub use nic::{Nic, NicError, OffloadCounters, Offloads};
pub use socket::{
    CONNECTION_COST, DEFAULT_BACKLOG, DEFAULT_HALF_OPEN_TIMEOUT, DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT, Endpoint, ListenOptions, NetError, TCP_BUFFER,
    TcpCounters, TcpListener, TcpStream, Timeouts, default_max_connections, tcp_counters,
};
pub use stack::StatsSnapshot;
pub use udp::UdpSocket;

use crate::irqflags::IrqGuard;

/// Most network cards.
pub const MAX_NICS: usize = 8;

/// A registered network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicId(usize);

/// A registered card: waiting for the first socket call, or running its interface.
enum Slot {
    /// Registered; no interface yet.
    Waiting(&'static str, Box<dyn Nic>),
    /// Taken by [`start_interfaces`], being brought up.
    Starting,
    /// Its interface and net task run.
    Running(&'static stack::Stack),
}

/// The cards, in registration order (index = `NicId`).
static SLOTS: spinning_top::Spinlock<Vec<Slot>> = spinning_top::Spinlock::new(Vec::new());
/// Cards whose interrupt arrived since the softirq last ran (bit = `NicId`).
static PENDING: AtomicU32 = AtomicU32::new(0);
static CONFIG: spinning_top::Spinlock<NetConfig> = spinning_top::Spinlock::new(NetConfig::new());

/// Records the command line's network options (boot, before any card registers).
pub(crate) fn configure(config: NetConfig) {
    let _irqs = IrqGuard::new();
    *CONFIG.lock() = config;
}

/// Whether drivers may use the card's offloads (checksums, segmentation, multi-slot
/// frames): `offload=off` on the command line turns them off, for comparison and for
/// backends that mishandle them.
pub fn offloads_enabled() -> bool {
    config().offload
}

fn config() -> NetConfig {
    let _irqs = IrqGuard::new();
    *CONFIG.lock()
}

/// Hands a card to the net layer; `None` if [`MAX_NICS`] cards are registered already.
///
/// The interface (smoltcp, DHCP, the net task) starts when the app first uses a
/// socket, so images that never touch the network neither link the stack nor send a
/// frame. Until then the card's interrupts are acknowledged and ignored.
///
/// Context: task context, irqs on.
pub fn register_nic(name: &'static str, nic: Box<dyn Nic>) -> Option<NicId> {
    let _irqs = IrqGuard::new();
    let mut slots = SLOTS.lock();
    if slots.len() >= MAX_NICS {
        return None;
    }
    slots.push(Slot::Waiting(name, nic));
    Some(NicId(slots.len() - 1))
}

/// Brings up the interfaces of the cards registered so far (first socket call).
fn start_interfaces() {
    let waiting: Vec<(usize, &'static str, Box<dyn Nic>)> = {
        let _irqs = IrqGuard::new();
        let mut slots = SLOTS.lock();
        let mut taken = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            if matches!(slot, Slot::Waiting(..))
                && let Slot::Waiting(name, nic) = core::mem::replace(slot, Slot::Starting)
            {
                taken.push((i, name, nic));
            }
        }
        taken
    };
    let config = config();
    for (i, name, nic) in waiting {
        // Built outside the lock: it allocates, prints and calibrates the clock.
        let stack = stack::Stack::new(name, nic, &config);
        {
            let _irqs = IrqGuard::new();
            SLOTS.lock()[i] = Slot::Running(stack);
        }
        stack::start(stack);
    }
}

/// A driver's interrupt handler reports news from card `id` (received frames, freed
/// transmit buffers); the card's net task runs soon after.
///
/// Context: irq (irqs off, on the irq stack), or any.
pub fn interrupt(id: NicId) {
    PENDING.fetch_or(1 << id.0, Relaxed);
    crate::softirq::raise(crate::softirq::NET);
}

/// The NET bottom half: wakes the net tasks of the cards that interrupted.
///
/// Context: softirq (irqs on, on the irq stack).
pub(crate) fn run_softirq() {
    let mut bits = PENDING.swap(0, Relaxed);
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if let Some(s) = interface(i) {
            s.kick();
        }
    }
}

fn interface(i: usize) -> Option<&'static stack::Stack> {
    let _irqs = IrqGuard::new();
    match SLOTS.lock().get(i) {
        Some(Slot::Running(s)) => Some(*s),
        _ => None,
    }
}

/// The interface sockets use (the first card's), started on first use.
fn default_interface() -> Result<&'static stack::Stack, NetError> {
    if interface(0).is_none() {
        start_interfaces();
    }
    interface(0).ok_or(NetError::NoInterface)
}

/// Cards registered so far.
pub fn card_count() -> usize {
    let _irqs = IrqGuard::new();
    SLOTS.lock().len()
}

/// One interface's TCP sockets.
#[derive(Debug, Clone)]
pub struct TcpSummary {
    /// The interface.
    pub interface: &'static str,
    /// Sockets per state (smoltcp's state names, e.g. `established`).
    pub states: Vec<(&'static str, usize)>,
    /// Sockets the app closed whose connection has not ended yet.
    pub closing: usize,
}

/// The TCP sockets of every running interface.
pub fn tcp_states() -> Vec<TcpSummary> {
    running()
        .into_iter()
        .map(|s| {
            let (states, closing) = s.tcp_states();
            TcpSummary {
                interface: s.name(),
                states,
                closing,
            }
        })
        .collect()
}

fn running() -> Vec<&'static stack::Stack> {
    let _irqs = IrqGuard::new();
    SLOTS
        .lock()
        .iter()
        .filter_map(|s| match s {
            Slot::Running(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// Counters of every running interface, in registration order (name, counters).
pub fn stats() -> Vec<(&'static str, StatsSnapshot)> {
    running()
        .into_iter()
        .map(|s| (s.name(), s.stats()))
        .collect()
}
