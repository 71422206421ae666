//! Secondary vCPUs of a PV domain: `VCPUOP_initialise` + `VCPUOP_up`, and IPIs over
//! event channels.
//!
//! How many: the vCPUs the domain has (dom0: Xen's `dom0_max_vcpus`; a domU: xl's
//! `vcpus`), found by probing `VCPUOP_is_up` (`-ENOENT` past the last one). libos CPU
//! index N is Xen vCPU N; they come up in order, one at a time, and the first that
//! fails to come online ends the bring-up there.
//!
//! For each vCPU N, the boot vCPU (events masked) first: moves N's `vcpu_info` into N's
//! per-CPU area (`vcpu::register`, while N is down), binds N's VIRQ_TIMER and its IPI
//! ports (`events::bind_timer`, `events::bind_ipis`), and builds N's initial context:
//! our page tables (cr3), the trap table, the event and failsafe callbacks, a heap stack
//! (that becomes N's idle task's stack), GS base = N's per-CPU area, events masked.
//! N then starts in `xen_ap_start` and ends in `libos::smp::secondary_main`.
//!
//! IPIs: reschedule and call-function are per-vCPU IPI event channels, delivered by the
//! upcall through the entry core; halt-all is `VCPUOP_down` on the target, which stops
//! it even while it spins with events masked (what the NMI does on KVM).

use alloc::boxed::Box;

use libos::percpu::{self, CpuId, PerCpu};
use libos::println;
use libos::smp::Ipi;

use crate::abi;
use crate::vcpu::{self, VcpuOp};
use crate::{events, memory, traps};

/// Bytes of a secondary vCPU's boot stack (its idle task runs on it).
const AP_STACK_SIZE: usize = 32 * 1024;
/// How long a vCPU may take to come online (Xen inside TCG is slow).
const ONLINE_TIMEOUT_NS: u64 = 5_000_000_000;

core::arch::global_asm!(
    r#"
    .section .text.xen_ap_start, "ax"
    .global xen_ap_start
    .type xen_ap_start, @function
/* A secondary vCPU's first instruction: kernel mode, events masked, rsp = its stack's
   (16-byte aligned) top, rdi = its CPU index, GS base = its per-CPU area. */
xen_ap_start:
    cld
    xor ebp, ebp
    call xen_ap_main
    ud2
"#
);

unsafe extern "C" {
    fn xen_ap_start();
}

/// Starts up to `max` secondary vCPUs; returns how many came online.
///
/// Context: boot CPU, events masked, once, scheduler initialized.
pub fn start(max: u32) -> u32 {
    let available = (1..=max).take_while(|&n| vcpu::exists(n)).count() as u32;
    if available == 0 {
        // One vCPU: leave the timer unbound until libos needs time, as before SMP.
        return 0;
    }
    // The boot vCPU's timer port first (secondary vCPUs bind theirs below), and its
    // IPI ports: the others send it wake-ups too.
    libos::time::ensure_init();
    if let Err(rc) = events::bind_ipis(0) {
        println!("upcall: SMP: binding vCPU 0's IPIs failed ({rc}); running on 1 vCPU");
        return 0;
    }
    let mut online = 0;
    for cpu in 1..=available {
        if let Err(e) = start_one(cpu) {
            println!("upcall: SMP: vCPU {cpu} {e}; stopping there");
            break;
        }
        online += 1;
    }
    online
}

/// Why a vCPU did not come up.
#[derive(Debug)]
enum StartError {
    /// A hypercall of the preparation failed: (what, Xen's result).
    Hypercall(&'static str, i64),
    /// It was started but did not reach `secondary_main` in time.
    NotOnline,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Hypercall(what, rc) => write!(f, "{what} failed ({rc})"),
            StartError::NotOnline => write!(f, "did not come online"),
        }
    }
}

fn start_one(cpu: CpuId) -> Result<(), StartError> {
    let hc = |what, r: Result<(), i64>| r.map_err(|rc| StartError::Hypercall(what, rc));
    hc("VCPUOP_register_vcpu_info", vcpu::register(cpu))?;
    // Xen copied the vCPU's old vcpu_info there; keep it masked whatever that said (only
    // this CPU touches it until the vCPU is up).
    // SAFETY: `cpu`'s registered vcpu_info; the vCPU is down, so nobody else writes the
    // mask byte.
    unsafe { (&raw mut (*vcpu::of(cpu)).evtchn_upcall_mask).write_volatile(1) };
    hc("binding VIRQ_TIMER", events::bind_timer(cpu).map(|_| ()))?;
    hc("binding its IPIs", events::bind_ipis(cpu))?;

    let stack = libos::sched::Stack::new(AP_STACK_SIZE);
    let ctx = initial_context(cpu, stack.top());
    // The vCPU's idle task lives on this stack for as long as the image runs.
    core::mem::forget(stack);
    // SAFETY: `ctx` is a complete `vcpu_guest_context` (Xen copies it); the vCPU is down.
    let rc = unsafe { vcpu::vcpu_op(VcpuOp::Initialise, cpu, (&raw const *ctx) as u64) };
    hc("VCPUOP_initialise", if rc == 0 { Ok(()) } else { Err(rc) })?;
    // SAFETY: VCPUOP_up takes no argument; the vCPU was just initialised.
    let rc = unsafe { vcpu::vcpu_op(VcpuOp::Up, cpu, 0) };
    hc("VCPUOP_up", if rc == 0 { Ok(()) } else { Err(rc) })?;

    let online = || percpu::cpu(cpu).is_some_and(PerCpu::is_online);
    let deadline = libos::time::now_ns() + ONLINE_TIMEOUT_NS;
    while !online() {
        if libos::time::now_ns() > deadline {
            return Err(StartError::NotOnline);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// `VGCF_in_kernel`: the vCPU starts in (PV) kernel mode.
const VGCF_IN_KERNEL: u64 = abi::VGCF_in_kernel as u64;
/// RFLAGS with only the always-one bit (Xen sets IF itself; events are masked through
/// `vcpu_info`).
const RFLAGS_RESERVED: u64 = 0x2;

/// vCPU `cpu`'s initial register and table state (what Linux's
/// `cpu_initialize_context` fills for a 64-bit PV vCPU).
fn initial_context(cpu: CpuId, stack_top: u64) -> Box<abi::vcpu_guest_context> {
    // SAFETY: `vcpu_guest_context` is plain integers, arrays and unions of integers, for
    // which all-zero is valid (and means "none" for every field we do not set: no LDT,
    // no GDT frames of ours, no syscall callback, FPU state left to Xen).
    let mut ctx: Box<abi::vcpu_guest_context> = Box::new(unsafe { core::mem::zeroed() });
    ctx.flags = VGCF_IN_KERNEL;
    let regs = &mut ctx.user_regs;
    regs.__bindgen_anon_8.rip = xen_ap_start as *const () as u64;
    regs.__bindgen_anon_10.rsp = stack_top;
    regs.__bindgen_anon_7.rdi = u64::from(cpu);
    regs.__bindgen_anon_9.rflags = RFLAGS_RESERVED;
    regs.cs = abi::FLAT_KERNEL_CS as u16;
    regs.ss = abi::FLAT_KERNEL_SS as u16;
    let table = traps::table();
    ctx.trap_ctxt[..traps::EXCEPTIONS].copy_from_slice(&table[..traps::EXCEPTIONS]);
    ctx.kernel_ss = u64::from(abi::FLAT_KERNEL_SS);
    ctx.kernel_sp = stack_top;
    // x86-64 PV: cr3 holds the top-level table's machine frame number << 12.
    ctx.ctrlreg[3] = memory::top_table_mfn() << 12;
    (ctx.event_callback_eip, ctx.failsafe_callback_eip) = events::callbacks();
    let area = percpu::cpu(cpu).expect("vCPU index past MAX_CPUS");
    ctx.gs_base_kernel = core::ptr::from_ref(area) as u64;
    ctx
}

/// Where a secondary vCPU lands (from `xen_ap_start`).
///
/// Context: the new vCPU, events masked, on its boot stack.
#[unsafe(no_mangle)]
extern "C" fn xen_ap_main(cpu: u64) -> ! {
    // Sets the GS base again (the context already did) and fills in the area's self
    // pointer and id: first, since everything after reads per-CPU data.
    percpu::init_cpu(cpu as CpuId, crate::platform::platform());
    libos::smp::secondary_main()
}

/// Sends `ipi` to vCPU `cpu`.
///
/// Context: irqs off, any vCPU.
pub fn send_ipi(cpu: CpuId, ipi: Ipi) {
    match ipi {
        Ipi::Reschedule => {
            events::send_ipi(cpu, false);
        }
        Ipi::CallFunction => {
            events::send_ipi(cpu, true);
        }
        Ipi::HaltAll => {
            vcpu::down(cpu);
        }
    }
}

/// Stops this vCPU for good (`VCPUOP_down` on itself; Xen shuts the domain down if it
/// was the last one up, which only happens once the reporting vCPU is gone too).
pub fn halt_this_cpu() -> ! {
    vcpu::set_mask(true);
    let me = percpu::cpu_id();
    loop {
        vcpu::down(me);
        core::hint::spin_loop();
    }
}
