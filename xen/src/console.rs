//! Console output: `console_io` for dom0 (to Xen's serial console), the PV console ring
//! for a domU (Xen refuses a domU's `console_io` on release builds). Its output lands
//! in xenconsoled in dom0.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::abi;
use crate::hypercall::hypercall;
use crate::ring;

/// Virtual address of the console ring page (0: use `console_io`).
static RING: AtomicU64 = AtomicU64::new(0);
static EVTCHN: AtomicU32 = AtomicU32::new(0);

/// Switches output to the domU console ring at `ring_va` with event channel `evtchn`.
pub fn use_ring(ring_va: u64, evtchn: u32) {
    EVTCHN.store(evtchn, Ordering::SeqCst);
    RING.store(ring_va, Ordering::SeqCst);
}

fn index(ring_va: u64, offset: usize) -> &'static core::sync::atomic::AtomicU32 {
    // SAFETY: the ring page is mapped for the domain's lifetime; the indices are
    // naturally aligned u32s shared with the backend, accessed atomically.
    unsafe { core::sync::atomic::AtomicU32::from_ptr((ring_va as usize + offset) as *mut u32) }
}

fn notify() {
    crate::events::notify(EVTCHN.load(Ordering::SeqCst));
}

fn yield_cpu() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe {
        hypercall(
            abi::__HYPERVISOR_sched_op,
            u64::from(abi::SCHEDOP_yield),
            0,
            0,
            0,
            0,
        )
    };
}

/// Writes console output.
pub fn write(bytes: &[u8]) {
    let ring_va = RING.load(Ordering::SeqCst);
    if ring_va == 0 {
        // SAFETY: CONSOLEIO_write reads `len` bytes at `ptr`, which `bytes` provides.
        unsafe {
            hypercall(
                abi::__HYPERVISOR_console_io,
                u64::from(abi::CONSOLEIO_write),
                bytes.len() as u64,
                bytes.as_ptr() as u64,
                0,
                0,
            );
        }
        return;
    }
    let mut port = RingPort {
        ring_va,
        cons: index(ring_va, ring::OUT_CONS_OFFSET),
        prod: index(ring_va, ring::OUT_PROD_OFFSET),
    };
    // After one stall, later writes do not wait at all until the backend moves again
    // (`ring::stall_budget`): a panic report reaches the crash status.
    let raw = STALLED.load(Ordering::Relaxed);
    let stalled_at = u32::try_from(raw).ok();
    let budget = ring::stall_budget(stalled_at, port.cons.load(Ordering::Acquire), MAX_STALLS);
    let end = ring::write_bounded(&mut port, bytes, budget);
    let after = ring::stalled_at_after(end, stalled_at, port.cons.load(Ordering::Acquire));
    STALLED.store(after.map_or(NOT_STALLED, u64::from), Ordering::Relaxed);
}

/// Yields in a row without the backend taking a byte before a write gives up (each
/// yield lets dom0 run; 10 000 of them are far more than xenconsoled needs to drain).
const MAX_STALLS: u32 = 10_000;
/// `out_cons` as it was when a write last gave up, or [`NOT_STALLED`].
static STALLED: AtomicU64 = AtomicU64::new(NOT_STALLED);
const NOT_STALLED: u64 = u64::MAX;

/// The console ring as a [`ring::Producer`].
struct RingPort {
    ring_va: u64,
    cons: &'static AtomicU32,
    prod: &'static AtomicU32,
}

impl ring::Producer for RingPort {
    fn indices(&self) -> (u32, u32) {
        (
            self.prod.load(Ordering::Acquire),
            self.cons.load(Ordering::Acquire),
        )
    }

    fn ring(&mut self) -> &mut [u8] {
        // SAFETY: `out` of the mapped ring page; only we produce into it (callers
        // serialize console output).
        unsafe {
            core::slice::from_raw_parts_mut(
                (self.ring_va as usize + ring::OUT_OFFSET) as *mut u8,
                ring::OUT_SIZE as usize,
            )
        }
    }

    fn publish(&mut self, prod: u32) {
        self.prod.store(prod, Ordering::Release);
        notify();
    }

    fn wait(&mut self) {
        yield_cpu(); // ring full: let xenconsoled drain it
    }
}

/// Waits (boundedly) until the backend consumed everything, so output written just
/// before the domain shuts down is not lost.
pub fn drain() {
    let ring_va = RING.load(Ordering::SeqCst);
    if ring_va == 0 {
        return;
    }
    let (cons, prod) = (
        index(ring_va, ring::OUT_CONS_OFFSET),
        index(ring_va, ring::OUT_PROD_OFFSET),
    );
    for _ in 0..100_000 {
        if cons.load(Ordering::Acquire) == prod.load(Ordering::Acquire) {
            return;
        }
        notify();
        yield_cpu();
    }
}
