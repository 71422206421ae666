//! Console output: `console_io` for dom0 (to Xen's serial console), the PV console ring
//! for a domU (Xen refuses a domU's `console_io` on release builds). Its output lands
//! in xenconsoled in dom0.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::hypercall::{SCHED_OP, hypercall};
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
    unsafe { hypercall(SCHED_OP, u64::from(xen_sys::SCHEDOP_yield), 0, 0, 0, 0) };
}

/// Writes console output.
pub fn write(bytes: &[u8]) {
    let ring_va = RING.load(Ordering::SeqCst);
    if ring_va == 0 {
        // SAFETY: CONSOLEIO_write reads `len` bytes at `ptr`, which `bytes` provides.
        unsafe {
            hypercall(
                xen_sys::__HYPERVISOR_console_io,
                u64::from(xen_sys::CONSOLEIO_write),
                bytes.len() as u64,
                bytes.as_ptr() as u64,
                0,
                0,
            );
        }
        return;
    }
    // SAFETY: `out` of the mapped ring page; only we produce into it.
    let out = unsafe {
        core::slice::from_raw_parts_mut(
            (ring_va as usize + ring::OUT_OFFSET) as *mut u8,
            ring::OUT_SIZE as usize,
        )
    };
    let (cons, prod) = (
        index(ring_va, ring::OUT_CONS_OFFSET),
        index(ring_va, ring::OUT_PROD_OFFSET),
    );
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok((p, n)) = ring::produce(
            out,
            prod.load(Ordering::Acquire),
            cons.load(Ordering::Acquire),
            rest,
        ) else {
            // A backend that corrupts the indices gets no more output (and no crash).
            return;
        };
        prod.store(p, Ordering::Release);
        notify();
        rest = &rest[n..];
        if n == 0 {
            yield_cpu(); // ring full: let xenconsoled drain it
        }
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
