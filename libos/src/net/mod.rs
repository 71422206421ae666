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

pub mod config;
mod nic;
mod socket;
mod stack;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub use config::{Cidr, NetConfig};
pub use nic::{Nic, NicError};
pub use socket::{Endpoint, NetError, TcpListener, TcpStream, UdpSocket};
pub use stack::StatsSnapshot;

use crate::irqflags::IrqGuard;

/// Most network cards.
pub const MAX_NICS: usize = 8;

/// A registered network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicId(usize);

/// The interfaces, in registration order.
static STACKS: spinning_top::Spinlock<Vec<&'static stack::Stack>> =
    spinning_top::Spinlock::new(Vec::new());
/// Cards whose interrupt arrived since the softirq last ran (bit = `NicId`).
static PENDING: AtomicU32 = AtomicU32::new(0);
static CONFIG: spinning_top::Spinlock<NetConfig> = spinning_top::Spinlock::new(NetConfig::new());

/// Records the command line's network options (boot, before any card registers).
pub(crate) fn configure(config: NetConfig) {
    let _irqs = IrqGuard::new();
    *CONFIG.lock() = config;
}

fn config() -> NetConfig {
    let _irqs = IrqGuard::new();
    *CONFIG.lock()
}

/// Brings up an interface on `nic` and starts its net task; `None` if [`MAX_NICS`]
/// cards are registered already.
///
/// Context: task context, irqs on (the scheduler is running).
pub fn register_nic(name: &'static str, nic: Box<dyn Nic>) -> Option<NicId> {
    let id = {
        let _irqs = IrqGuard::new();
        let mut stacks = STACKS.lock();
        if stacks.len() >= MAX_NICS {
            return None;
        }
        let id = NicId(stacks.len());
        stacks.push(stack::Stack::new(name, nic, &config()));
        id
    };
    stack::start(interface(id.0).expect("just registered"));
    Some(id)
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
    STACKS.lock().get(i).copied()
}

/// The interface sockets use.
fn default_interface() -> Result<&'static stack::Stack, NetError> {
    interface(0).ok_or(NetError::NoInterface)
}

/// Counters of every interface, in registration order (name, counters).
pub fn stats() -> Vec<(&'static str, StatsSnapshot)> {
    let all: Vec<&'static stack::Stack> = {
        let _irqs = IrqGuard::new();
        STACKS.lock().clone()
    };
    all.into_iter().map(|s| (s.name(), s.stats())).collect()
}
