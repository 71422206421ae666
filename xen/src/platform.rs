//! The Xen PV platform libos sees: console, exit, the event mask as the interrupt flag,
//! clock and timer, balloon, SMP, guard pages and the services started after boot.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use libos::balloon::{Error as BalloonError, Issue};
use libos::{Platform, println};

use crate::{abi, console, hypercall, vcpu};

/// Whether this is dom0 (set once by boot).
static DOM0: AtomicBool = AtomicBool::new(false);
/// The xenstore ring's pfn and event channel (domU; 0 = none).
static STORE_PFN: AtomicU64 = AtomicU64::new(0);
static STORE_PORT: AtomicU64 = AtomicU64::new(0);

/// Records what boot learnt from `start_info`: whether this is dom0, and the xenstore
/// ring's pfn and event channel (pfn 0: none).
///
/// Context: boot, once, before `libos::start`.
pub fn set_boot_facts(dom0: bool, store_pfn: u64, store_port: u32) {
    DOM0.store(dom0, Relaxed);
    STORE_PFN.store(store_pfn, Relaxed);
    STORE_PORT.store(u64::from(store_port), Relaxed);
}

/// Stops the domain as the toolstack asked (`xl shutdown`/`xl reboot`): a clean stop,
/// so it reports exit status 0 first.
pub fn shutdown_now(reason: u32) -> ! {
    let _ = writeln!(libos::console::emergency_writer(), "upcall: exit status 0");
    console::drain();
    loop {
        hypercall::shutdown(reason);
    }
}

/// Sets this vCPU's event mask (the PV "interrupt flag"), migration-safe: see
/// [`vcpu::set_mask`].
pub fn set_mask(masked: bool) {
    vcpu::set_mask(masked);
}

/// Unmasks event delivery, then has Xen deliver what arrived while masked.
///
/// The unmask-versus-return race: Xen only notices a cleared mask on its next exit to
/// the guest, so an event that became pending while we were masked would wait for an
/// unrelated one. After unmasking we therefore check `evtchn_upcall_pending` and, if set,
/// make a no-op hypercall: Xen delivers the upcall as it returns, here, on the current
/// stack, through the entry core like any other. (This replaces Mini-OS's critical-
/// region fix-up: the window between this unmask and the stub's `iretq` can take a
/// nested upcall, which is a normal entry; nesting needs a new event to arrive inside
/// that window of a few instructions each time, so it stays shallow.)
pub fn unmask_events() {
    set_mask(false);
    // Events are on: the task may move to another vCPU right here. Then it checks the
    // new vCPU's flag, which is the one that matters for where it runs now (the old
    // vCPU took the upcall that preempted it).
    if vcpu::upcall_pending() {
        crate::events::force_callback();
    }
}

/// The Xen PV platform.
pub(crate) struct Xen;

impl Platform for Xen {
    fn name(&self) -> &'static str {
        "xen"
    }

    fn console_write(&self, bytes: &[u8]) {
        console::write(bytes);
    }

    fn exit(&self, code: i32) -> ! {
        let _ = writeln!(
            libos::console::emergency_writer(),
            "upcall: exit status {code}"
        );
        console::drain();
        if DOM0.load(Relaxed) && hypercall::set_iopl(1) {
            // dom0 may drive the machine's ports: QEMU's isa-debug-exit ends the whole
            // test bed with status (code << 1) | 1, as on KVM.
            let v = u32::try_from(code)
                .ok()
                .filter(|&c| c <= 127)
                .unwrap_or(127);
            // SAFETY: with IOPL granted, Xen emulates the `out` to port 0xf4 (the
            // isa-debug-exit device) for dom0; no memory is touched.
            unsafe {
                core::arch::asm!("out dx, eax", in("dx") 0xf4u16, in("eax") v, options(nomem, nostack))
            };
        }
        let reason = if code == 0 {
            abi::SHUTDOWN_poweroff
        } else {
            abi::SHUTDOWN_crash
        };
        loop {
            hypercall::shutdown(reason);
        }
    }

    fn irqs_enabled(&self) -> bool {
        !vcpu::masked()
    }

    fn irqs_enable(&self) {
        unmask_events();
    }

    fn irqs_disable(&self) {
        set_mask(true);
    }

    fn idle_wait(&self) {
        crate::events::block();
    }

    fn set_percpu_base(&self, base: u64) {
        // (A PV kernel cannot write IA32_GS_BASE; Xen keeps the kernel-mode base.)
        if hypercall::set_gs_kernel_base(base) != 0 {
            // Nothing can print yet (the console needs per-CPU data): crash the domain,
            // which `xl` and the test bed report.
            hypercall::shutdown(abi::SHUTDOWN_crash);
        }
    }

    fn now_ns(&self) -> u64 {
        // A task may move to another vCPU while it reads: then it reads that vCPU's
        // record, equally valid (Xen's system time is one clock for the domain).
        // SAFETY: vcpu_info.time is Xen's pvclock record for a vCPU of ours (same
        // layout as `PvclockRecord`: 32 bytes, same fields), kept updated by Xen, and
        // `pvclock::read` retries on a torn read (version check).
        unsafe {
            libos::pvclock::read(
                (&raw const (*vcpu::this()).time).cast::<libos::pvclock::PvclockRecord>(),
            )
        }
    }

    fn timer_init(&self) {
        if let Err(rc) = crate::events::bind_timer(0) {
            panic!("Xen backend: binding VIRQ_TIMER failed ({rc})");
        }
    }

    fn set_timer(&self, deadline_ns: u64) {
        crate::events::set_timer(deadline_ns);
    }

    // The whole operation (thousands of PTE updates around the big hypercall) is long
    // in-kernel work: all of it is preemptible, not just the hypercall.
    fn balloon_out(&self, addr: u64, pages: usize, issue: Issue) -> Result<(), BalloonError> {
        crate::memory::issued(issue, || crate::memory::balloon_out(addr, pages, issue))
    }

    fn balloon_in(&self, addr: u64, pages: usize, issue: Issue) -> Result<(), BalloonError> {
        crate::memory::issued(issue, || crate::memory::balloon_in(addr, pages, issue))
    }

    fn start_secondary_cpus(&self, max: u32) -> u32 {
        crate::smp::start(max)
    }

    fn send_ipi(&self, cpu: libos::percpu::CpuId, ipi: libos::smp::Ipi) {
        crate::smp::send_ipi(cpu, ipi);
    }

    fn halt_cpu(&self) -> ! {
        crate::smp::halt_this_cpu()
    }

    fn start_services(&self) {
        if let Err(rc) = crate::events::bind_debug() {
            println!("upcall: binding VIRQ_DEBUG failed ({rc}); no scheduler dump");
        }
        if let Err(e) = crate::gnttab::init() {
            println!("upcall: grant table unavailable: {e}");
        }
        let (ring_pfn, port) = (STORE_PFN.load(Relaxed), STORE_PORT.load(Relaxed) as u32);
        if ring_pfn != 0 {
            crate::xenstore::start(ring_pfn * 4096, port);
            crate::netfront::start();
        }
    }

    fn guard_page(&self, addr: u64, protect: bool) -> bool {
        crate::memory::set_guard(addr, protect)
    }

    fn send_test_event(&self) -> bool {
        crate::events::send_test_event()
    }

    fn mask_test_event(&self, masked: bool) -> bool {
        crate::events::mask_test_event(masked)
    }

    fn self_checks(&self, check: &mut dyn FnMut(&str, bool, core::fmt::Arguments<'_>)) {
        crate::gnttab::self_check(check);
        crate::xs_check::self_check(check);
    }

    fn describe_timer(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        write!(
            out,
            "clock vcpu_time_info (pvclock), timer VIRQ_TIMER + set_timer_op"
        )
    }
}

pub(crate) static XEN: Xen = Xen;

/// The platform, for secondary vCPUs' `percpu::init_cpu`.
pub(crate) fn platform() -> &'static dyn Platform {
    &XEN
}

// `now_ns` reads Xen's vcpu_time_info through libos's shared pvclock record type.
const _: () =
    assert!(size_of::<libos::pvclock::PvclockRecord>() == size_of::<abi::vcpu_time_info>());
