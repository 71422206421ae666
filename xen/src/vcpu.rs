//! Each vCPU's `vcpu_info` (event mask, pending flags, cr2, time record), registered
//! with `VCPUOP_register_vcpu_info` inside the vCPU's own libos per-CPU area
//! ([`libos::percpu::PerCpu::backend`]), and the other `VCPUOP`s.
//!
//! Why there: the event mask is the PV "interrupt flag", and a task with events on may
//! be preempted and migrated at any instruction. "Find this vCPU's `vcpu_info`, then
//! write its mask" as two steps could mask the CPU the task just left (and leave the new
//! one unmasked). With `vcpu_info` at a fixed offset of the area the GS base points at,
//! the write is one `mov byte ptr gs:[..]`, which cannot be split (Linux gets the same
//! from its per-CPU `xen_vcpu_info`).
//!
//! Who touches what: Xen writes `evtchn_upcall_pending`, `evtchn_pending_sel`, `cr2` and
//! the time record of vCPU N's `vcpu_info`; only vCPU N itself writes its mask and
//! clears its pending flags (in the upcall, events masked). Before
//! [`register`] ran for vCPU N, Xen uses the shared-info page's slot instead, so nothing
//! on vCPU N may rely on these accessors until then (vCPU 0: boot registers it before
//! `libos::start`; others: registered before `VCPUOP_up`).

use core::mem::offset_of;

use crate::abi::{self, vcpu_info};
use crate::hypercall::hypercall;
use libos::percpu::{self, BACKEND_AREA_OFFSET, BackendArea, CpuId};

/// The `vcpu_info` fits the backend area (both 64 bytes on x86-64), and being 64-byte
/// aligned in its page, it never crosses a page boundary (Xen's requirement).
const _: () = assert!(size_of::<vcpu_info>() <= size_of::<BackendArea>());
const _: () = assert!(align_of::<BackendArea>() >= 64 && 4096 % size_of::<BackendArea>() == 0);

const MASK: usize = BACKEND_AREA_OFFSET + offset_of!(vcpu_info, evtchn_upcall_mask);
const PENDING: usize = BACKEND_AREA_OFFSET + offset_of!(vcpu_info, evtchn_upcall_pending);

/// `VCPUOP_*` commands (Xen's `public/vcpu.h`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum VcpuOp {
    /// Sets a down vCPU's context (`vcpu_guest_context`).
    Initialise = abi::VCPUOP_initialise,
    /// Starts an initialised vCPU.
    Up = abi::VCPUOP_up,
    /// Stops a vCPU (any vCPU of the domain; the last one shuts the domain down).
    Down = abi::VCPUOP_down,
    /// 1 if up, 0 if down, `-ENOENT` past the domain's vCPUs.
    IsUp = abi::VCPUOP_is_up,
    /// Stops the vCPU's periodic VIRQ_TIMER (Xen gives every PV vCPU a 100 Hz one).
    StopPeriodicTimer = abi::VCPUOP_stop_periodic_timer,
    /// Moves the vCPU's `vcpu_info` (`struct vcpu_register_vcpu_info`).
    RegisterVcpuInfo = abi::VCPUOP_register_vcpu_info,
}

/// `HYPERVISOR_vcpu_op(op, vcpu, arg)`; returns Xen's result.
///
/// # Safety
/// `arg` must point to what `op` expects (or be 0 where it takes nothing), valid for Xen
/// to read for the duration of the call.
pub unsafe fn vcpu_op(op: VcpuOp, vcpu: CpuId, arg: u64) -> i64 {
    // SAFETY: the caller vouches for `arg`; the other arguments are plain values.
    unsafe {
        hypercall(
            abi::__HYPERVISOR_vcpu_op,
            u64::from(op as u32),
            u64::from(vcpu),
            arg,
            0,
            0,
        )
    }
}

/// Whether vCPU `vcpu` exists in this domain (up or down).
pub fn exists(vcpu: CpuId) -> bool {
    // SAFETY: VCPUOP_is_up takes no argument.
    unsafe { vcpu_op(VcpuOp::IsUp, vcpu, 0) >= 0 }
}

/// Stops vCPU `vcpu` (it may be spinning with events masked: Xen deschedules it).
pub fn down(vcpu: CpuId) -> i64 {
    // SAFETY: VCPUOP_down takes no argument.
    unsafe { vcpu_op(VcpuOp::Down, vcpu, 0) }
}

/// Stops vCPU `vcpu`'s periodic timer: Xen starts every PV vCPU with a 100 Hz
/// VIRQ_TIMER on top of the one-shot timer (`set_timer_op`). libos is tickless and arms
/// the one-shot itself, so the periodic ticks would only be spurious timer interrupts
/// (and wake-ups of idle vCPUs). Linux stops it too. Any vCPU of the domain, up or down.
pub fn stop_periodic_timer(vcpu: CpuId) -> i64 {
    // SAFETY: VCPUOP_stop_periodic_timer takes no argument.
    unsafe { vcpu_op(VcpuOp::StopPeriodicTimer, vcpu, 0) }
}

/// Moves vCPU `cpu`'s `vcpu_info` into its per-CPU area (libos CPU index == Xen vCPU
/// id). Xen copies the old contents there and marks all events pending, so none is
/// lost; the mask stays set if it was.
///
/// Context: boot CPU, events masked; `cpu` is the boot vCPU itself or a vCPU that is
/// down (Xen refuses to move the `vcpu_info` of another running vCPU). Needs
/// `memory::init` (the p2m list).
pub fn register(cpu: CpuId) -> Result<(), i64> {
    // -EINVAL: there is no per-CPU area with that index.
    let area = percpu::cpu(cpu).ok_or(-22)?;
    let va = core::ptr::from_ref(&area.backend) as u64;
    let mut arg = abi::vcpu_register_vcpu_info {
        mfn: crate::memory::mfn_of_addr(va),
        offset: (va & 0xfff) as u32,
        rsvd: 0,
    };
    // SAFETY: `arg` names a 64-byte-aligned, 64-byte area of our image's writable data
    // (a `static`), which stays allocated forever and that nothing else in libos uses.
    let rc = unsafe { vcpu_op(VcpuOp::RegisterVcpuInfo, cpu, (&raw mut arg) as u64) };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// Vcpu `cpu`'s `vcpu_info` (after [`register`]).
pub fn of(cpu: CpuId) -> *mut vcpu_info {
    let area = percpu::cpu(cpu).expect("vCPU index past MAX_CPUS");
    core::ptr::from_ref(&area.backend).cast_mut().cast()
}

/// The running vCPU's `vcpu_info`. A snapshot unless the caller is pinned (events
/// masked, or preemption off): see the module doc.
pub fn this() -> *mut vcpu_info {
    of(percpu::cpu_id())
}

/// Sets the running vCPU's event mask in one instruction (see the module doc).
#[inline(always)]
pub fn set_mask(masked: bool) {
    // SAFETY: gs:[MASK] is the mask byte of this vCPU's registered vcpu_info (the GS
    // base is this CPU's per-CPU area); only this vCPU writes it. Not `nomem`: it
    // orders against the critical section it opens or closes.
    unsafe {
        core::arch::asm!(
            "mov byte ptr gs:[{off}], {v}",
            off = const MASK,
            v = in(reg_byte) u8::from(masked),
            options(nostack, preserves_flags),
        );
    }
}

/// Whether the running vCPU's events are masked.
#[inline(always)]
pub fn masked() -> bool {
    gs_byte::<MASK>() != 0
}

/// Whether Xen has an upcall pending for the running vCPU.
#[inline(always)]
pub fn upcall_pending() -> bool {
    gs_byte::<PENDING>() != 0
}

#[inline(always)]
fn gs_byte<const OFF: usize>() -> u8 {
    let v: u8;
    // SAFETY: gs:[OFF] is a byte of this vCPU's registered vcpu_info (see `set_mask`);
    // a read only.
    unsafe {
        core::arch::asm!(
            "mov {v}, byte ptr gs:[{off}]",
            off = const OFF,
            v = out(reg_byte) v,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// The page-fault address Xen saved for the current exception.
///
/// Context: events masked (the exception entry masks them), so the vCPU stays put.
pub fn fault_address() -> u64 {
    // SAFETY: this vCPU's registered vcpu_info; Xen wrote arch.cr2 before bouncing the
    // #PF to us.
    unsafe { (&raw const (*this()).arch.cr2).read_volatile() }
}
