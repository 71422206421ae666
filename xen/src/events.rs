//! Event channels and the event upcall: VIRQ_TIMER drives libos's timer.
//!
//! Xen delivers events by "upcall": it bounces to our event callback like an exception
//! (rcx/r11 on top of an iret frame, events masked). The stub makes it pseudo-vector
//! [`UPCALL_VECTOR`] of the shared trap path, so it goes through the same entry core as
//! every exception: `irqentry_enter` → `run_irq_on_irqstack_cond(upcall)` (the scan,
//! then the bottom halves the handlers raised) → `irqentry_exit`.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use libos::irqflags::{IrqGuard, IrqsOff};
use libos::percpu::{CpuId, MAX_CPUS, PerCpu};
use libos::regs::Regs;

use crate::abi;
use crate::evtchn_demux;
use crate::hypercall::hypercall;
use crate::{shared_info, vcpu};

/// Pseudo-vector of the event upcall in `Regs::vector`.
pub const UPCALL_VECTOR: u64 = 256;
/// Pseudo-vector of Xen's failsafe callback (a bad segment on return): fatal.
pub const FAILSAFE_VECTOR: u64 = 257;

core::arch::global_asm!(
    r#"
    .section .noinstr.text, "ax"
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
/// (xenstore, netfront, VIRQ_DEBUG, a test port per vCPU: 16 leaves room.)
static HANDLERS: spinning_top::Spinlock<[PortHandler; 16]> =
    spinning_top::Spinlock::new([(0, None); 16]);

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
            abi::__HYPERVISOR_event_channel_op,
            u64::from(abi::EVTCHNOP_send),
            (&raw mut arg) as u64,
            0,
            0,
            0,
        )
    };
}

/// The ports bound to one vCPU (0 = not bound; Xen never hands out port 0).
struct CpuPorts {
    /// Its VIRQ_TIMER.
    timer: AtomicU32,
    /// Its reschedule IPI.
    reschedule: AtomicU32,
    /// Its call-function IPI.
    call_function: AtomicU32,
}

/// Ports by vCPU. Written on the boot CPU while binding (before the port is unmasked,
/// and for a secondary vCPU before `VCPUOP_up`); read by that vCPU's upcall and by
/// senders of IPIs (SeqCst: the hypercalls in between order them anyway).
static PORTS: [CpuPorts; MAX_CPUS] = [const {
    CpuPorts {
        timer: AtomicU32::new(0),
        reschedule: AtomicU32::new(0),
        call_function: AtomicU32::new(0),
    }
}; MAX_CPUS];

/// 2-level event channels: 64 words of 64 ports.
const PORT_WORDS: usize = 64;

/// Ports bound to each vCPU ≥ 1, as bitmaps; ports not set for any of them belong to
/// vCPU 0 (Xen notifies vCPU 0 unless a port is bound elsewhere). `evtchn_pending` and
/// `evtchn_mask` are shared by all vCPUs, so each vCPU's scan must leave other vCPUs'
/// ports alone (Linux's per-CPU `cpu_evtchn_mask`). Written by [`bind_to`] (boot CPU,
/// before the port is unmasked), read by the upcall scans.
static BOUND_TO: [[AtomicU64; PORT_WORDS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; PORT_WORDS] }; MAX_CPUS];
/// Union of `BOUND_TO[1..]`: ports vCPU 0 must skip.
static BOUND_ELSEWHERE: [AtomicU64; PORT_WORDS] = [const { AtomicU64::new(0) }; PORT_WORDS];

/// Records that `port` notifies vCPU `cpu`. Context: before `port` is unmasked.
fn bind_to(cpu: CpuId, port: u32) {
    let (w, bit) = (port as usize / 64, 1u64 << (port % 64));
    if cpu != 0 && w < PORT_WORDS {
        BOUND_TO[cpu as usize][w].fetch_or(bit, SeqCst);
        BOUND_ELSEWHERE[w].fetch_or(bit, SeqCst);
    }
}

/// The ports of word `w` that notify vCPU `cpu`.
fn ports_of(cpu: CpuId, w: usize) -> u64 {
    if cpu == 0 {
        !BOUND_ELSEWHERE[w].load(SeqCst)
    } else {
        BOUND_TO[cpu as usize][w].load(SeqCst)
    }
}
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
            abi::__HYPERVISOR_set_callbacks,
            xen_upcall_entry as *const () as u64,
            xen_failsafe_entry as *const () as u64,
            0,
            0,
            0,
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// The event and failsafe callbacks' addresses (a secondary vCPU's initial context
/// names them, as `init` does for the boot vCPU).
pub fn callbacks() -> (u64, u64) {
    (
        xen_upcall_entry as *const () as u64,
        xen_failsafe_entry as *const () as u64,
    )
}

/// Binds `VIRQ_DEBUG` (raised for every domain by Xen's debug key `q`, e.g. `xl
/// debug-keys q`) to vCPU 0: it prints the scheduler's dump, so a domain that hangs
/// with every vCPU idle shows which task waits (the test bed's dom0 asks for it before
/// destroying a domain that did not end).
///
/// Context: boot CPU, after [`init`].
pub fn bind_debug() -> Result<(), i64> {
    let port = bind_virq(abi::VIRQ_DEBUG, 0)?;
    if register(port, debug_dump) {
        Ok(())
    } else {
        Err(-1)
    }
}

fn debug_dump() {
    let irqs = IrqGuard::new();
    libos::sched::dump(&irqs.token());
}

/// Binds `virq` of vCPU `cpu`; returns its port, still masked.
fn bind_virq(virq: u32, cpu: CpuId) -> Result<u32, i64> {
    let mut arg = abi::evtchn_bind_virq {
        virq,
        vcpu: cpu,
        port: 0,
    };
    // SAFETY: EVTCHNOP_bind_virq reads virq/vcpu and writes port in `arg`.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_event_channel_op,
            u64::from(abi::EVTCHNOP_bind_virq),
            (&raw mut arg) as u64,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(rc);
    }
    bind_to(cpu, arg.port);
    Ok(arg.port)
}

/// Binds VIRQ_TIMER of vCPU `cpu` and unmasks its port (`set_timer_op` on that vCPU
/// then raises it there). Stops the vCPU's periodic timer first, so that only the
/// one-shot timer libos arms raises it.
///
/// Context: boot CPU (for a secondary vCPU: before it is up).
pub fn bind_timer(cpu: CpuId) -> Result<u32, i64> {
    let rc = vcpu::stop_periodic_timer(cpu);
    if rc != 0 {
        return Err(rc);
    }
    let port = bind_virq(abi::VIRQ_TIMER, cpu)?;
    PORTS[cpu as usize].timer.store(port, SeqCst);
    unmask_port(port);
    Ok(port)
}

fn bind_ipi(cpu: CpuId) -> Result<u32, i64> {
    let port = bind_ipi_masked(cpu)?;
    unmask_port(port);
    Ok(port)
}

/// Binds an IPI channel to vCPU `cpu`, leaving it masked.
fn bind_ipi_masked(cpu: CpuId) -> Result<u32, i64> {
    let mut arg = abi::evtchn_bind_ipi { vcpu: cpu, port: 0 };
    // SAFETY: EVTCHNOP_bind_ipi reads vcpu and writes port in `arg`.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_event_channel_op,
            u64::from(abi::EVTCHNOP_bind_ipi),
            (&raw mut arg) as u64,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(rc);
    }
    bind_to(cpu, arg.port);
    Ok(arg.port)
}

/// Binds vCPU `cpu`'s IPI ports (reschedule, call-function) and unmasks them. Halt-all
/// needs no port: it is `VCPUOP_down`, which stops a vCPU even with events masked.
///
/// Context: boot CPU (for a secondary vCPU: before it is up).
pub fn bind_ipis(cpu: CpuId) -> Result<(), i64> {
    let ports = &PORTS[cpu as usize];
    ports.reschedule.store(bind_ipi(cpu)?, SeqCst);
    ports.call_function.store(bind_ipi(cpu)?, SeqCst);
    Ok(())
}

/// Sends vCPU `cpu` its reschedule (`call_function` false) or call-function IPI.
/// Returns false if its port is not bound.
pub fn send_ipi(cpu: CpuId, call_function: bool) -> bool {
    let Some(ports) = PORTS.get(cpu as usize) else {
        return false;
    };
    let port = if call_function {
        ports.call_function.load(SeqCst)
    } else {
        ports.reschedule.load(SeqCst)
    };
    if port == 0 {
        return false;
    }
    notify(port);
    true
}

/// Allocates a port that domain `remote` may bind to (a frontend's channel to its
/// backend); returns the port, still masked until [`register`]ed.
pub fn alloc_unbound(remote: u16) -> Result<u32, i64> {
    let mut arg = abi::evtchn_alloc_unbound {
        dom: abi::DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    // SAFETY: EVTCHNOP_alloc_unbound reads dom/remote_dom and writes port in `arg`.
    let rc = unsafe {
        hypercall(
            abi::__HYPERVISOR_event_channel_op,
            u64::from(abi::EVTCHNOP_alloc_unbound),
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

/// Unmasks `port`, delivering an event that arrived while it was masked.
///
/// Xen sets a port's selector bit (and raises the upcall) only when the port is pending
/// *and unmasked*: an event sent while masked sits in `evtchn_pending` with no selector
/// bit, and clearing the mask alone would leave it there until some other event of the
/// same word happened to set the bit. So if the port is pending once unmasked, mask it
/// again and let `EVTCHNOP_unmask` clear it: Xen then re-raises the pending port on the
/// vCPU it is bound to, this one or another (Linux's `unmask_evtchn` does the same for
/// ports it cannot re-raise locally).
///
/// Context: any; with events masked a re-raised event is delivered when they are
/// unmasked.
fn unmask_port(port: u32) {
    let si = shared_info::get();
    // SAFETY: field addresses of the mapped shared-info page.
    let (mask, pending) = unsafe {
        (
            (&raw mut (*si).evtchn_mask).cast::<u64>(),
            (&raw mut (*si).evtchn_pending).cast::<u64>(),
        )
    };
    let (w, bit) = (port as usize / 64 % PORT_WORDS, 1u64 << (port % 64));
    shared_word(mask, w).fetch_and(!bit, SeqCst);
    if shared_word(pending, w).load(SeqCst) & bit != 0 {
        shared_word(mask, w).fetch_or(bit, SeqCst);
        let mut arg = abi::evtchn_unmask { port };
        // SAFETY: EVTCHNOP_unmask reads `struct evtchn_unmask { u32 port }`.
        unsafe {
            hypercall(
                abi::__HYPERVISOR_event_channel_op,
                u64::from(abi::EVTCHNOP_unmask),
                (&raw mut arg) as u64,
                0,
                0,
                0,
            )
        };
    }
}

/// Masks `port`: its events stay pending until [`unmask_port`].
fn mask_port(port: u32) {
    let si = shared_info::get();
    // SAFETY: field address of the mapped shared-info page.
    let mask = unsafe { (&raw mut (*si).evtchn_mask).cast::<u64>() };
    shared_word(mask, port as usize / 64 % PORT_WORDS).fetch_or(1u64 << (port % 64), SeqCst);
}

/// Each vCPU's test-event port (`libos::test_event`), bound on first use (0: not yet).
static TEST_PORTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// This vCPU's test-event port: an IPI channel bound to it, routed through the handler
/// table like a driver's port. `None` if binding failed.
///
/// Context: irqs off (pinned to this vCPU).
fn test_port(irqs_off: &IrqsOff<'_>) -> Option<u32> {
    let cpu = PerCpu::get(irqs_off).id();
    let slot = &TEST_PORTS[cpu as usize];
    match slot.load(SeqCst) {
        0 => {
            let port = bind_ipi_masked(cpu).ok()?;
            slot.store(port, SeqCst);
            register(port, libos::test_event::interrupt).then_some(port)
        }
        port => Some(port),
    }
}

/// Sends this vCPU its test event (`Platform::send_test_event`).
pub fn send_test_event() -> bool {
    let irqs = IrqGuard::new();
    match test_port(&irqs.token()) {
        Some(port) => {
            notify(port);
            true
        }
        None => false,
    }
}

/// Masks or unmasks this vCPU's test-event port (`Platform::mask_test_event`).
pub fn mask_test_event(masked: bool) -> bool {
    let irqs = IrqGuard::new();
    let Some(port) = test_port(&irqs.token()) else {
        return false;
    };
    if masked {
        mask_port(port);
    } else {
        unmask_port(port);
    }
    true
}

/// The upcall handler: the 2-level scan, then each port's handler, repeated while
/// events keep arriving, at most [`MAX_SCANS`] times.
///
/// Context: events masked, on the irq stack (via `run_irq_on_irqstack_cond`, which
/// runs the bottom halves the handlers raised once the scan is done).
pub extern "C" fn upcall(regs: &mut Regs) {
    let si = shared_info::get();
    // SAFETY: Xen enters the upcall with events masked (the PV interrupt flag), and
    // they stay masked until it returns.
    let irqs_off = unsafe { IrqsOff::assume() };
    // Events masked: this vCPU stays put while the upcall runs.
    let cpu = PerCpu::get(&irqs_off).id();
    let vcpu = vcpu::of(cpu);
    // SAFETY: field addresses in the mapped shared-info page and in this vCPU's
    // registered vcpu_info; Xen writes these fields with atomic operations, so we access
    // them as atomics.
    let (pending_flag, sel, pending, mask) = unsafe {
        (
            AtomicU8::from_ptr(&raw mut (*vcpu).evtchn_upcall_pending),
            AtomicU64::from_ptr(&raw mut (*vcpu).evtchn_pending_sel),
            (&raw mut (*si).evtchn_pending).cast::<u64>(),
            (&raw mut (*si).evtchn_mask).cast::<u64>(),
        )
    };
    let ports = &PORTS[cpu as usize];
    let (timer, resched, call) = (
        ports.timer.load(SeqCst),
        ports.reschedule.load(SeqCst),
        ports.call_function.load(SeqCst),
    );
    // Re-check: events raised while we scan set the flag again (Linux's loop), at most
    // MAX_SCANS times.
    let stopped = libos::budget::bounded(MAX_SCANS, || {
        if pending_flag.swap(0, SeqCst) == 0 {
            return false;
        }
        let selector = sel.swap(0, SeqCst);
        evtchn_demux::scan(
            selector,
            |w| shared_word(pending, w).load(SeqCst),
            // Other vCPUs' ports count as masked here: they stay pending for their vCPU.
            |w| shared_word(mask, w).load(SeqCst) | !ports_of(cpu, w),
            |w, bits| {
                shared_word(pending, w).fetch_and(!bits, SeqCst);
            },
            |port| {
                if port == 0 {
                    SPURIOUS.fetch_add(1, SeqCst);
                } else if port == timer {
                    libos::time::timer_interrupt(regs);
                } else if port == resched {
                    libos::smp::reschedule_interrupt(regs);
                } else if port == call {
                    libos::smp::call_function_interrupt(regs);
                } else {
                    // Look the handler up, then call it with the table unlocked (a
                    // handler may register a port itself).
                    let handler = HANDLERS
                        .lock()
                        .iter()
                        .find(|(p, _)| *p == port)
                        .and_then(|(_, h)| *h);
                    match handler {
                        Some(h) => h(),
                        None => {
                            SPURIOUS.fetch_add(1, SeqCst);
                        }
                    }
                }
            },
        );
        true
    });
    if stopped && pending_flag.load(SeqCst) != 0 {
        // Left set: Xen delivers the upcall again as soon as the return unmasks events
        // (HYPERVISOR_iret), after the exit work ran the bottom halves and the
        // reschedule that a storm of events would otherwise hold off.
        libos::budget::deferred(libos::budget::Loop::EventScan);
    }
}

/// Scans one upcall makes before it returns with events still pending (Linux's
/// `xen_evtchn_do_upcall` loops for as long as the flag is set again; a backend or
/// peer that keeps notifying would hold this vCPU in the upcall). Each scan handles
/// every port pending when it began, so a scan is bounded by the 4096 ports.
const MAX_SCANS: u32 = 8;

/// Arms Xen's one-shot timer for `deadline_ns` (Xen system time); `u64::MAX` cancels.
pub fn set_timer(deadline_ns: u64) {
    let arg = if deadline_ns == libos::time::NEVER {
        0
    } else {
        deadline_ns.max(1)
    };
    // SAFETY: set_timer_op takes an absolute system time in ns (0 = cancel).
    unsafe { hypercall(abi::__HYPERVISOR_set_timer_op, arg, 0, 0, 0, 0) };
}

/// Blocks until an event is pending. Xen's `SCHEDOP_block` unmasks events and checks for
/// pending ones atomically (the `sti; hlt` of PV), so an event that arrived after the
/// caller's last check still wakes it; the upcall runs as the hypercall returns. Events
/// are masked again before returning.
pub fn block() {
    // SAFETY: SCHEDOP_block takes no argument.
    unsafe {
        hypercall(
            abi::__HYPERVISOR_sched_op,
            u64::from(abi::SCHEDOP_block),
            0,
            0,
            0,
            0,
        )
    };
    vcpu::set_mask(true);
}

/// Makes Xen deliver events that became pending while masked: any hypercall returns to
/// the guest through Xen's event check (Linux's `xen_force_evtchn_callback`).
pub fn force_callback() {
    // SAFETY: xen_version(XENVER_version, NULL) has no side effects.
    unsafe { hypercall(abi::__HYPERVISOR_xen_version, 0, 0, 0, 0, 0) };
}
