//! Event channels and the event upcall: VIRQ_TIMER drives libos's timer.
//!
//! Xen delivers events by "upcall": it bounces to our event callback like an exception
//! (rcx/r11 on top of an iret frame, events masked). The stub makes it pseudo-vector
//! [`UPCALL_VECTOR`] of the shared trap path, so it goes through the same entry core as
//! every exception: `irqentry_enter` → `run_on_irqstack_cond(upcall)` → `irqentry_exit`.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use libos::regs::Regs;

use crate::evtchn_demux;
use crate::hypercall::hypercall;
use crate::pv;

/// Pseudo-vector of the event upcall in `Regs::vector`.
pub const UPCALL_VECTOR: u64 = 256;
/// Pseudo-vector of Xen's failsafe callback (a bad segment on return): fatal.
pub const FAILSAFE_VECTOR: u64 = 257;

core::arch::global_asm!(
    r#"
    .section .text.xen_callbacks, "ax"
    .global xen_upcall_entry
    .type xen_upcall_entry, @function
xen_upcall_entry:
    pop rcx
    pop r11
    push 0                  /* error code */
    push 256                /* UPCALL_VECTOR */
    jmp xen_trap_common

    .global xen_failsafe_entry
    .type xen_failsafe_entry, @function
xen_failsafe_entry:
    pop rcx
    pop r11
    add rsp, 32             /* ds, es, fs, gs */
    push 0
    push 257                /* FAILSAFE_VECTOR */
    jmp xen_trap_common
"#
);

unsafe extern "C" {
    fn xen_upcall_entry();
    fn xen_failsafe_entry();
}

/// Handlers of other ports (interdomain channels such as xenstore's): (port, handler).
static HANDLERS: spinning_top::Spinlock<[PortHandler; 8]> =
    spinning_top::Spinlock::new([(0, None); 8]);

/// A port and the function its events run.
type PortHandler = (u32, Option<fn()>);

/// Routes events on `port` to `handler` (run in the upcall, on the irq stack, events
/// masked: it must only wake tasks) and unmasks the port.
pub fn register(port: u32, handler: fn()) -> bool {
    let _irqs = libos::irqflags::IrqGuard::new();
    let mut table = HANDLERS.lock();
    let Some(slot) = table.iter_mut().find(|(_, h)| h.is_none()) else {
        return false;
    };
    *slot = (port, Some(handler));
    drop(table);
    unmask_port(port);
    true
}

/// Notifies the other end of `port`.
pub fn notify(port: u32) {
    let mut arg = port;
    // SAFETY: EVTCHNOP_send reads `struct evtchn_send { u32 port }`.
    unsafe {
        hypercall(
            xen_sys::__HYPERVISOR_event_channel_op,
            u64::from(xen_sys::EVTCHNOP_send),
            (&raw mut arg) as u64,
            0,
            0,
            0,
        )
    };
}

/// The port VIRQ_TIMER is bound to (0 = not bound).
static TIMER_PORT: AtomicU32 = AtomicU32::new(0);
/// Events delivered to a port nobody handles (kept for debugging with a debugger).
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Registers the event and failsafe callbacks.
///
/// Context: boot, events masked.
pub fn init() -> Result<(), i64> {
    // SAFETY: x86-64 set_callbacks(event, failsafe, syscall): two entry points of ours
    // that expect Xen's bounce frames; no syscall entry (0).
    let rc = unsafe {
        hypercall(
            xen_sys::__HYPERVISOR_set_callbacks,
            xen_upcall_entry as *const () as u64,
            xen_failsafe_entry as *const () as u64,
            0,
            0,
            0,
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// `struct evtchn_bind_virq`.
#[repr(C)]
struct BindVirq {
    virq: u32,
    vcpu: u32,
    port: u32,
}

/// Binds VIRQ_TIMER of vCPU 0 and unmasks its port.
pub fn bind_timer() -> Result<u32, i64> {
    let mut arg = BindVirq {
        virq: xen_sys::VIRQ_TIMER,
        vcpu: 0,
        port: 0,
    };
    // SAFETY: EVTCHNOP_bind_virq reads virq/vcpu and writes port in `arg`.
    let rc = unsafe {
        hypercall(
            xen_sys::__HYPERVISOR_event_channel_op,
            u64::from(xen_sys::EVTCHNOP_bind_virq),
            (&raw mut arg) as u64,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(rc);
    }
    TIMER_PORT.store(arg.port, SeqCst);
    unmask_port(arg.port);
    Ok(arg.port)
}

/// Allocates a port that domain `remote` may bind to (a frontend's channel to its
/// backend); returns the port, still masked until [`register`]ed.
pub fn alloc_unbound(remote: u16) -> Result<u32, i64> {
    let mut arg = xen_sys::evtchn_alloc_unbound {
        dom: 0x7ff0, // DOMID_SELF
        remote_dom: remote,
        port: 0,
    };
    // SAFETY: EVTCHNOP_alloc_unbound reads dom/remote_dom and writes port in `arg`.
    let rc = unsafe {
        hypercall(
            xen_sys::__HYPERVISOR_event_channel_op,
            u64::from(xen_sys::EVTCHNOP_alloc_unbound),
            (&raw mut arg) as u64,
            0,
            0,
            0,
        )
    };
    if rc == 0 { Ok(arg.port) } else { Err(rc) }
}

fn shared_word(array: *mut u64, word: usize) -> &'static AtomicU64 {
    // SAFETY: `array` is evtchn_pending or evtchn_mask of the mapped shared-info page
    // (64 words); callers pass word < 64. Xen updates these words with atomic ops too.
    unsafe { AtomicU64::from_ptr(array.add(word)) }
}

fn unmask_port(port: u32) {
    let si = pv::shared_info();
    // SAFETY: field address of the mapped shared-info page.
    let mask = unsafe { (&raw mut (*si).evtchn_mask).cast::<u64>() };
    shared_word(mask, port as usize / 64).fetch_and(!(1u64 << (port % 64)), SeqCst);
}

/// The upcall handler: the 2-level scan, then each port's handler.
///
/// Context: events masked, on the irq stack (via `run_on_irqstack_cond`).
pub extern "C" fn upcall(regs: &mut Regs) {
    let si = pv::shared_info();
    let vcpu = pv::vcpu0();
    // SAFETY: field addresses in the mapped shared-info page; Xen writes these fields
    // with atomic operations, so we access them as atomics.
    let (pending_flag, sel, pending, mask) = unsafe {
        (
            AtomicU8::from_ptr(&raw mut (*vcpu).evtchn_upcall_pending),
            AtomicU64::from_ptr(&raw mut (*vcpu).evtchn_pending_sel),
            (&raw mut (*si).evtchn_pending).cast::<u64>(),
            (&raw mut (*si).evtchn_mask).cast::<u64>(),
        )
    };
    let timer = TIMER_PORT.load(SeqCst);
    // Re-check: events raised while we scan set the flag again (Linux's loop).
    while pending_flag.swap(0, SeqCst) != 0 {
        let selector = sel.swap(0, SeqCst);
        evtchn_demux::scan(
            selector,
            |w| shared_word(pending, w).load(SeqCst),
            |w| shared_word(mask, w).load(SeqCst),
            |w, bits| {
                shared_word(pending, w).fetch_and(!bits, SeqCst);
            },
            |port| {
                if port == timer && timer != 0 {
                    libos::time::timer_interrupt(regs);
                } else if let Some(h) = HANDLERS
                    .lock()
                    .iter()
                    .find(|(p, _)| *p == port)
                    .and_then(|(_, h)| *h)
                {
                    h();
                } else {
                    SPURIOUS.fetch_add(1, SeqCst);
                }
            },
        );
    }
}

/// Arms Xen's one-shot timer for `deadline_ns` (Xen system time); `u64::MAX` cancels.
pub fn set_timer(deadline_ns: u64) {
    let arg = if deadline_ns == libos::time::NEVER {
        0
    } else {
        deadline_ns.max(1)
    };
    // SAFETY: set_timer_op takes an absolute system time in ns (0 = cancel).
    unsafe { hypercall(xen_sys::__HYPERVISOR_set_timer_op, arg, 0, 0, 0, 0) };
}

/// Blocks until an event is pending. Xen's `SCHEDOP_block` unmasks events and checks for
/// pending ones atomically (the `sti; hlt` of PV), so an event that arrived after the
/// caller's last check still wakes it; the upcall runs as the hypercall returns. Events
/// are masked again before returning.
pub fn block() {
    // SAFETY: SCHEDOP_block takes no argument.
    unsafe {
        hypercall(
            xen_sys::__HYPERVISOR_sched_op,
            u64::from(xen_sys::SCHEDOP_block),
            0,
            0,
            0,
            0,
        )
    };
    pv::set_mask(true);
}

/// Makes Xen deliver events that became pending while masked: any hypercall returns to
/// the guest through Xen's event check (Linux's `xen_force_evtchn_callback`).
pub fn force_callback() {
    // SAFETY: xen_version(XENVER_version, NULL) has no side effects.
    unsafe { hypercall(xen_sys::__HYPERVISOR_xen_version, 0, 0, 0, 0, 0) };
}
