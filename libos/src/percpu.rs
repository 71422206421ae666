//! Per-CPU state, reached through the GS base.
//!
//! Each CPU owns one [`PerCpu`] area in a static array of [`MAX_CPUS`]. Its first word
//! points at the area itself, and the backend makes the CPU's GS base point at it
//! ([`crate::Platform::set_percpu_base`]: `wrmsr IA32_GS_BASE` on KVM,
//! `HYPERVISOR_set_segment_base(SEGBASE_GS_KERNEL)` on Xen PV), so [`this_cpu`] is one
//! `mov rax, gs:[0]`.
//!
//! The hazard of per-CPU data (Bilse, "Updates to Xen hypercall preemption",
//! xen-devel, 2023-06-21) is a task that reads "its" CPU, is preempted
//! and migrated, and then keeps using the old CPU's area. So:
//! - [`PerCpu::get`] ties the reference to a guard that keeps the task on this CPU
//!   (a [`crate::preempt::PreemptGuard`], an [`crate::irqflags::IrqGuard`] or an
//!   [`crate::irqflags::IrqsOff`] token): the borrow checker refuses a use after the
//!   guard is gone.
//! - `this_cpu` (no guard) is libos's own, for the entry core and the scheduler, which
//!   run with irqs off; each field's doc says who writes it and with what irq state.
//! - The preemption count is changed with single `gs:`-relative instructions, so the
//!   read-modify-write cannot be split by a migration.
//!
//! Every field is an atomic so other CPUs may read (and for `need_resched`, write) it
//! without a lock; memory ordering is given where a field is shared across CPUs.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::platform::Platform;

/// Most CPUs libos manages; CPUs beyond are left halted by the backend.
pub const MAX_CPUS: usize = 16;

/// A CPU's index, `0..MAX_CPUS`; 0 is the boot CPU.
pub type CpuId = u32;

/// One CPU's state. `repr(C)`: `self_ptr` must be the first word (read as `gs:[0]`) and
/// `preempt_count` is updated at its fixed offset.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct PerCpu {
    /// This area's own address (`gs:[0]`). Written once by [`init_cpu`] on this CPU
    /// before its GS base is set.
    self_ptr: AtomicU64,
    /// This CPU's index. Written once by [`init_cpu`].
    id: AtomicU32,
    /// The CPU finished bring-up and runs the scheduler. Written once by
    /// [`mark_online`] (Release); other CPUs read it (Acquire) before sending it IPIs.
    online: AtomicBool,
    /// Initial stack pointer of the irq stack (its top); 0 until allocated at boot.
    /// Written once by `entry::init_cpu` on this CPU.
    pub irq_stack_top: AtomicU64,
    /// Lowest address of the irq stack (for the unwinder). Written once by
    /// `entry::init_cpu`.
    pub irq_stack_bottom: AtomicU64,
    /// How many `run_on_irqstack_cond` calls are active: 0 = not on the irq stack.
    /// Written by `run_on_irqstack_cond` with irqs off, on this CPU only.
    pub irq_nesting: AtomicU32,
    /// Preemption-disable depth (guards, hardirq and softirq sections). Written by the
    /// guards of `preempt` (single `gs:`-relative instructions) and by the entry core,
    /// on this CPU only.
    pub preempt_count: AtomicU32,
    /// A reschedule is wanted. Set by wake-ups on any CPU (followed by a reschedule
    /// IPI when set from another CPU) and by the tick; cleared by the scheduler on this
    /// CPU with irqs off.
    pub need_resched: AtomicBool,
    /// The idle task is waiting in `Platform::idle_wait`. Written by the idle loop with
    /// irqs off; read by `irqentry_enter` (our `exit_rcu`) and by wake-ups on other CPUs
    /// choosing a CPU to kick.
    pub in_idle: AtomicBool,
    /// The running task is inside a preemptible section (a long hypercall or long
    /// in-kernel work, see `preempt::preemptible`). Written by that task with irqs off
    /// and by the entry core around its forced reschedule; saved on switch-out and
    /// restored on switch-in by the scheduler, on whichever CPU, so it follows the task
    /// (Bilse, "Updates to Xen hypercall preemption", xen-devel, 2023-06-21).
    pub in_preemptible: AtomicBool,
    /// Irq-state tracing: whether libos believes irqs are enabled. Written only by the
    /// `irqflags` functions and the entry core, on this CPU.
    pub traced_irqs_on: AtomicBool,
    /// Interrupts taken (all vectors), for statistics and tests.
    pub interrupts: AtomicU64,
    /// Context switches on this CPU (statistics, tests).
    pub task_switches: AtomicU64,
    /// Pending bottom halves (`softirq`): raised and run on this CPU.
    pub softirq_pending: AtomicU32,
    /// 64 bytes the backend owns, at [`BACKEND_AREA_OFFSET`] (so reachable as
    /// `gs:[BACKEND_AREA_OFFSET + n]` in one instruction) and 64-byte aligned (Xen PV
    /// registers this CPU's `vcpu_info` here: its event mask can then be written
    /// without a migration splitting "which CPU" from "write"). Who writes what is the
    /// backend's to document; libos never touches it.
    pub backend: BackendArea,
}

/// The backend's bytes in a [`PerCpu`] area (see [`PerCpu::backend`]).
#[derive(Debug)]
#[repr(C, align(64))]
pub struct BackendArea(pub [AtomicU64; 8]);

/// Offset of [`PerCpu::backend`] in the area (for `gs:`-relative accesses).
pub const BACKEND_AREA_OFFSET: usize = core::mem::offset_of!(PerCpu, backend);

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            self_ptr: AtomicU64::new(0),
            id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            irq_stack_top: AtomicU64::new(0),
            irq_stack_bottom: AtomicU64::new(0),
            irq_nesting: AtomicU32::new(0),
            preempt_count: AtomicU32::new(0),
            need_resched: AtomicBool::new(false),
            in_idle: AtomicBool::new(false),
            in_preemptible: AtomicBool::new(false),
            traced_irqs_on: AtomicBool::new(false),
            interrupts: AtomicU64::new(0),
            task_switches: AtomicU64::new(0),
            softirq_pending: AtomicU32::new(0),
            backend: BackendArea([const { AtomicU64::new(0) }; 8]),
        }
    }

    /// This CPU's area for as long as `pin` keeps the caller on this CPU: the only way
    /// to it outside libos (its unpinned `this_cpu` is private).
    ///
    /// ```no_run
    /// use libos::percpu::PerCpu;
    /// let pin = libos::preempt::preempt_disable();
    /// let _nesting = PerCpu::get(&pin).irq_nesting.load(core::sync::atomic::Ordering::Relaxed);
    /// ```
    ///
    /// ```compile_fail,E0603
    /// let _cpu = libos::percpu::this_cpu(); // no guard, no per-CPU area
    /// ```
    pub fn get(pin: &impl Pinned) -> &PerCpu {
        let _ = pin;
        this_cpu()
    }

    /// The CPU's index. Always inlined, like [`this_cpu`].
    #[inline(always)]
    pub fn id(&self) -> CpuId {
        self.id.load(Relaxed)
    }

    /// Whether the CPU finished bring-up (Acquire: its area is initialized).
    pub fn is_online(&self) -> bool {
        self.online.load(core::sync::atomic::Ordering::Acquire)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Something that keeps the running code on its CPU while it lives: preemption or
/// interrupts disabled. Sealed: only libos's guards implement it.
pub trait Pinned: sealed::Sealed {}

impl sealed::Sealed for crate::preempt::PreemptGuard {}
impl Pinned for crate::preempt::PreemptGuard {}
impl sealed::Sealed for crate::irqflags::IrqGuard {}
impl Pinned for crate::irqflags::IrqGuard {}
impl sealed::Sealed for crate::irqflags::IrqsOff<'_> {}
impl Pinned for crate::irqflags::IrqsOff<'_> {}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// CPU `id`'s area, for reading its shared fields (online, idle, need_resched) from
/// another CPU. `None` past [`MAX_CPUS`].
pub fn cpu(id: CpuId) -> Option<&'static PerCpu> {
    CPUS.get(id as usize)
}

/// Prepares CPU `id`'s area and points this CPU's GS base at it.
///
/// Context: the CPU being brought up, irqs off, once, before anything on it touches
/// per-CPU data.
///
/// # Panics
/// If `id` is not below [`MAX_CPUS`].
pub fn init_cpu(id: CpuId, platform: &dyn Platform) {
    let area = &CPUS[id as usize];
    area.id.store(id, Relaxed);
    area.self_ptr
        .store(core::ptr::from_ref(area) as u64, Relaxed);
    platform.set_percpu_base(core::ptr::from_ref(area) as u64);
}

/// Marks this CPU online (Release: everything it set up is visible to a CPU that sees
/// it online).
pub(crate) fn mark_online(cpu: &PerCpu) {
    cpu.online
        .store(true, core::sync::atomic::Ordering::Release);
    ONLINE.fetch_or(1 << cpu.id(), core::sync::atomic::Ordering::Release);
}

/// Bit `c` set: CPU `c` is online. Set by [`mark_online`] (Release) after the CPU's own
/// flag; one load for whoever needs every CPU's state (the scheduler's placement).
static ONLINE: AtomicU32 = AtomicU32::new(0);
const _: () = assert!(MAX_CPUS <= 32, "the online mask is a u32");

/// The online CPUs as a bit mask (a snapshot; Acquire, as [`PerCpu::is_online`]).
pub fn online_mask() -> u32 {
    ONLINE.load(core::sync::atomic::Ordering::Acquire)
}

/// CPUs online now (a snapshot).
pub fn online_cpus() -> u32 {
    online_mask().count_ones()
}

/// This CPU's state, without proof that the caller stays on it. Always inlined (used by
/// non-instrumentable entry code).
///
/// Without a guard the answer may be stale by the time it is used: the caller can be
/// migrated. So it is libos's own, for the entry core and the scheduler, which call it
/// with irqs off; everyone else uses [`PerCpu::get`], whose answer lives only as long
/// as the guard that pins the caller.
#[inline(always)]
pub(crate) fn this_cpu() -> &'static PerCpu {
    #[cfg(not(test))]
    {
        let p: u64;
        // SAFETY: `init_cpu` ran on this CPU before anything used per-CPU data, so
        // gs:[0] is the `self_ptr` of this CPU's area in `CPUS` (a static). Reads only.
        unsafe {
            core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags));
            &*(p as *const PerCpu)
        }
    }
    #[cfg(test)]
    {
        // Host unit tests have no GS base of ours: one CPU.
        &CPUS[0]
    }
}

/// The running CPU's index (a snapshot unless the caller is pinned). Always inlined,
/// like `this_cpu`.
#[inline(always)]
pub fn cpu_id() -> CpuId {
    this_cpu().id()
}

/// Adds `delta` (wrapping) to this CPU's preemption count in one instruction, so a
/// migration cannot split the read-modify-write. Returns (borrow: the count was 0 and
/// `delta` is -1, zero: the count is now 0).
#[inline(always)]
pub(crate) fn preempt_count_add(delta: i32) -> (bool, bool) {
    #[cfg(not(test))]
    {
        let (borrow, zero): (u8, u8);
        // SAFETY: gs:[OFFSET] is this CPU's `preempt_count` (see `this_cpu`); only this
        // CPU writes it, and a single `add` cannot be interrupted halfway.
        unsafe {
            core::arch::asm!(
                "add dword ptr gs:[{off}], {d:e}",
                "setc {b}",
                "setz {z}",
                off = const core::mem::offset_of!(PerCpu, preempt_count),
                d = in(reg) delta,
                b = out(reg_byte) borrow,
                z = out(reg_byte) zero,
                options(nostack),
            );
        }
        // `add` of -1 (0xffff_ffff) sets CF unless the count was 0.
        let underflow = if delta < 0 { borrow == 0 } else { false };
        (underflow, zero != 0)
    }
    #[cfg(test)]
    {
        let before = CPUS[0].preempt_count.fetch_add(delta as u32, Relaxed);
        (
            delta < 0 && before == 0,
            before.wrapping_add(delta as u32) == 0,
        )
    }
}

/// Whether a reschedule has been requested on this CPU.
pub fn need_resched() -> bool {
    this_cpu().need_resched.load(Relaxed)
}

/// Requests a reschedule on this CPU at the next opportunity the model allows.
pub fn set_need_resched() {
    this_cpu().need_resched.store(true, Relaxed);
}
