//! The one contract between libos and a backend.
//!
//! A backend (`upcall-kvm`, `upcall-xen`) implements [`Platform`] on a zero-sized
//! `static` and hands `&'static dyn Platform` to [`crate::start`]. libos calls these
//! methods and nothing else of the backend.

/// What libos needs from a hypervisor backend.
pub trait Platform: Sync {
    /// The platform's short name as apps print it, e.g. `"kvm"` or `"xen"`.
    ///
    /// Context: any.
    fn name(&self) -> &'static str;

    /// Writes raw bytes to the console, synchronously and without allocating.
    ///
    /// Context: any, including exception and panic paths; must not take locks that a
    /// normal path could hold (libos serializes whole lines above this).
    fn console_write(&self, bytes: &[u8]);

    /// Ends the image with `code` as its exit status (0 = success, non-zero = failure).
    ///
    /// Context: any; never returns. Backends whose hypervisor cannot carry the full
    /// range encode it as best they can (see the backend's docs).
    fn exit(&self, code: i32) -> !;

    /// Whether the CPU takes interrupts/events now (RFLAGS.IF on KVM, the inverse of
    /// `evtchn_upcall_mask` on Xen).
    ///
    /// Context: any.
    fn irqs_enabled(&self) -> bool;

    /// Lets interrupts in. Raw: libos's `irqflags` wraps it and reports the change to
    /// irq-state tracing; nothing else may call it.
    ///
    /// Context: any; a pending interrupt may be taken before this returns.
    fn irqs_enable(&self);

    /// Blocks interrupts. Raw, like [`Platform::irqs_enable`].
    ///
    /// Context: any.
    fn irqs_disable(&self);

    /// Waits for the next interrupt with interrupts enabled, atomically with respect to
    /// the check that led here (`sti; hlt` on KVM, `SCHEDOP_block` on Xen), and returns
    /// with interrupts disabled again, after the handler ran.
    ///
    /// Context: irqs off, idle task only.
    fn idle_wait(&self);

    /// Points this CPU's GS base at `base`, its `libos::percpu::PerCpu` area (`wrmsr
    /// IA32_GS_BASE` on KVM, `HYPERVISOR_set_segment_base(SEGBASE_GS_KERNEL)` on Xen PV).
    /// libos reads per-CPU data as `gs:[...]` from then on, so nothing may load the GS
    /// selector afterwards (that would reset the base).
    ///
    /// Context: the CPU concerned, irqs off, once per CPU, before anything on it
    /// touches per-CPU data (for the boot CPU: inside `register_platform`).
    fn set_percpu_base(&self, base: u64);

    /// Monotonic nanoseconds since an arbitrary point at boot.
    ///
    /// Context: any; only meaningful after [`Platform::timer_init`].
    fn now_ns(&self) -> u64;

    /// Prepares the clock and the one-shot timer. Called once, lazily, the first time
    /// libos needs time (images that never sleep or spawn never pay for calibration).
    ///
    /// Context: irqs off.
    fn timer_init(&self);

    /// Arms the one-shot timer to interrupt at `deadline_ns` (as [`Platform::now_ns`]
    /// counts), replacing any earlier setting; a deadline in the past fires at once;
    /// `libos::time::NEVER` (`u64::MAX`) disarms the timer.
    /// The interrupt must be routed into the entry core with
    /// `libos::time::timer_interrupt` as handler.
    ///
    /// Context: irqs off.
    fn set_timer(&self, deadline_ns: u64);

    /// Makes the 4 KiB page at `addr` inaccessible (`protect`) or accessible again, for
    /// stack guard pages. Returns false if the platform cannot (then there is no guard).
    ///
    /// Context: irqs off or task context; `addr` is page-aligned heap memory.
    /// Writes which clock and timer hardware is in use (for diagnostics and tests).
    ///
    /// Context: task context, after [`Platform::timer_init`].
    fn describe_timer(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        out.write_str("unspecified")
    }

    /// Gives the `pages` pages at `addr` (heap memory libos holds out) back to the
    /// hypervisor, as one operation issued as `issue` says (normally preemptible); on
    /// failure nothing is given back.
    ///
    /// Context: task context, irqs on.
    fn balloon_out(
        &self,
        addr: u64,
        pages: usize,
        issue: crate::balloon::Issue,
    ) -> Result<(), crate::balloon::Error> {
        let _ = (addr, pages, issue);
        Err(crate::balloon::Error::Unsupported)
    }

    /// Takes back the pages `balloon_out` gave away at `addr` and maps them again.
    ///
    /// Context: task context, irqs on.
    fn balloon_in(
        &self,
        addr: u64,
        pages: usize,
        issue: crate::balloon::Issue,
    ) -> Result<(), crate::balloon::Error> {
        let _ = (addr, pages, issue);
        Err(crate::balloon::Error::Unsupported)
    }

    /// Starts the other CPUs (at most `max` of them): each runs the backend's own
    /// bring-up, then [`crate::percpu::init_cpu`] first thing and
    /// [`crate::smp::secondary_main`] last. Returns how many came online; 0 (the
    /// default) keeps the image on the boot CPU.
    ///
    /// Context: boot CPU, irqs off, once, scheduler and timer initialized.
    fn start_secondary_cpus(&self, max: u32) -> u32 {
        let _ = max;
        0
    }

    /// Sends `ipi` to CPU `cpu` (never the sender; only to CPUs online).
    ///
    /// Context: irqs off, any CPU.
    fn send_ipi(&self, cpu: crate::percpu::CpuId, ipi: crate::smp::Ipi) {
        let _ = (cpu, ipi);
    }

    /// Stops this CPU for good (the halt-all IPI's end, or a second CPU panicking).
    ///
    /// Context: any; never returns. The default spins with irqs off.
    fn halt_cpu(&self) -> ! {
        self.irqs_disable();
        loop {
            core::hint::spin_loop();
        }
    }

    /// Starts the backend's own tasks (for example Xen's xenstore client and its
    /// `control/shutdown` watch).
    ///
    /// Context: the main task, irqs on, scheduler running, just before the app's `main`.
    fn start_services(&self) {}

    /// Makes the 4 KiB page at virtual address `addr` a guard page (`protect`: any
    /// access faults) or ordinary memory again (`!protect`); returns whether the backend
    /// did it. A backend that returns `false` (the default) leaves the page mapped, and
    /// task stacks then go without a guard page. When it protects a page with irqs on,
    /// the backend also removes the old translation from every CPU's TLB.
    ///
    /// Context: task context, irqs on (task stacks) or off (boot, AP bring-up); `addr`
    /// is page-aligned and lies in memory libos owns.
    fn guard_page(&self, addr: u64, protect: bool) -> bool {
        let _ = (addr, protect);
        false
    }

    /// Test support: sends this CPU a real asynchronous event through the platform's
    /// event path (Xen: an event channel bound as an IPI to this vCPU; KVM: a self-IPI
    /// on a device vector), whose handler calls [`crate::test_event::interrupt`].
    /// Returns false if the platform has no such event.
    ///
    /// Context: any; irqs off delays the delivery until they are on again.
    fn send_test_event(&self) -> bool {
        false
    }

    /// Test support: masks (`true`) or unmasks the test event's source, as drivers mask
    /// and unmask their event channels; an event sent while masked must be delivered on
    /// unmask. Returns false if the platform cannot mask it.
    ///
    /// Context: task context, irqs on.
    fn mask_test_event(&self, masked: bool) -> bool {
        let _ = masked;
        false
    }

    /// Test support: the backend's own in-guest checks (the `selftest` app runs them
    /// through [`crate::testing::platform_checks`]), each reported as `check(name, ok,
    /// detail)`. The default has none.
    ///
    /// Context: task context, irqs on, after [`Platform::start_services`].
    fn self_checks(&self, check: &mut dyn FnMut(&str, bool, core::fmt::Arguments<'_>)) {
        let _ = check;
    }
}
