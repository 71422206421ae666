//! What both KVM boot paths share: the platform libos sees, and the common part of
//! boot (descriptor tables, page tables, hand-off to `libos::start`). The VMM-specific
//! entries are `pvh` (QEMU) and `uhyve`.

use core::fmt;

use libos::memory::Region;
use libos::{BootInfo, Platform, println};

use crate::mmio_devices::{self, MmioDevice};
use crate::{
    apic, devirq, exit, gdt, idt, kvmclock, paging, pvh, serial, shootdown, smp, stacks, uhyve,
};

/// The VMM the image was booted by (it decides the console and the exit path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// QEMU, through the PVH entry: 16550 console, isa-debug-exit.
    Qemu,
    /// uhyve, through the hermit-entry protocol: its port-I/O hypercalls.
    Uhyve,
}

/// The KVM platform as libos sees it.
pub struct Kvm {
    vmm: Vmm,
}

/// The platform when booted by QEMU.
pub static QEMU: Kvm = Kvm { vmm: Vmm::Qemu };
/// The platform when booted by uhyve.
pub static UHYVE: Kvm = Kvm { vmm: Vmm::Uhyve };

impl Platform for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn console_write(&self, bytes: &[u8]) {
        match self.vmm {
            Vmm::Qemu => serial::write(bytes),
            Vmm::Uhyve => uhyve::console_write(bytes),
        }
    }

    fn exit(&self, code: i32) -> ! {
        match self.vmm {
            Vmm::Qemu => exit::exit(code),
            Vmm::Uhyve => uhyve::exit(code),
        }
    }

    fn irqs_enabled(&self) -> bool {
        x86_64::instructions::interrupts::are_enabled()
    }

    fn irqs_enable(&self) {
        x86_64::instructions::interrupts::enable();
    }

    fn irqs_disable(&self) {
        x86_64::instructions::interrupts::disable();
    }

    fn idle_wait(&self) {
        // `sti; hlt` is atomic: sti's interrupt shadow covers hlt, so an interrupt that
        // became pending after the caller's last check still wakes the hlt.
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }

    fn set_percpu_base(&self, base: u64) {
        const IA32_GS_BASE: u32 = 0xc000_0101;
        // SAFETY: IA32_GS_BASE only sets the GS segment base; libos passes the address
        // of this CPU's per-CPU area, which lives forever (a static).
        unsafe { x86_64::registers::model_specific::Msr::new(IA32_GS_BASE).write(base) };
    }

    fn start_secondary_cpus(&self, max: u32) -> u32 {
        match self.vmm {
            Vmm::Qemu => smp::start(max),
            // uhyve started them all at its entry; they wait to be released.
            Vmm::Uhyve => smp::start_uhyve(max),
        }
    }

    fn send_ipi(&self, cpu: libos::percpu::CpuId, ipi: libos::smp::Ipi) {
        smp::send_ipi(cpu, ipi);
    }

    fn halt_cpu(&self) -> ! {
        loop {
            // `cli; hlt`: only an NMI or INIT gets past, and the halt-all NMI's handler
            // comes back here.
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    }

    fn now_ns(&self) -> u64 {
        if kvmclock::active() {
            kvmclock::now_ns()
        } else {
            apic::now_ns()
        }
    }

    fn timer_init(&self) {
        // kvmclock first: its scale is one of the TSC-frequency sources.
        kvmclock::init();
        apic::init(kvmclock::scale());
    }

    fn set_timer(&self, deadline_ns: u64) {
        let delta =
            (deadline_ns != libos::time::NEVER).then(|| deadline_ns.saturating_sub(self.now_ns()));
        apic::set_timer_in(delta);
    }

    fn describe_timer(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let (deadline, x2apic) = apic::modes();
        let (tsc_hz, tsc_source) = apic::tsc_frequency();
        write!(
            out,
            "clock {}, tsc {} MHz ({}), timer {} on {}",
            if kvmclock::active() {
                "kvmclock"
            } else {
                "tsc"
            },
            tsc_hz / 1_000_000,
            tsc_source.name(),
            if deadline {
                "tsc-deadline"
            } else {
                "apic one-shot"
            },
            if x2apic { "x2apic" } else { "xapic" }
        )
    }

    fn guard_page(&self, addr: u64, protect: bool) -> bool {
        // Pinned from the local flush (in `set_present`) to the end of the shootdown: a
        // task migrated in between would skip the CPU it moved to, which may still hold
        // the page's old (present) translation, and an overflow there would write into
        // the heap instead of faulting.
        let pinned = libos::preempt::preempt_disable();
        let ok = paging::set_present(addr, !protect);
        libos::testing::hooks::after_local_guard_flush();
        if ok && protect {
            shootdown::flush_others(&pinned);
        }
        ok
    }

    fn send_test_event(&self) -> bool {
        devirq::send_test_event()
    }

    fn start_services(&self) {
        // Without the driver (an app that declares it does not use the network), the
        // transports stay unprobed.
        #[cfg(feature = "virtio-net")]
        if self.vmm == Vmm::Qemu {
            let (list, n) = {
                // Spin locks in task context are taken with irqs off.
                let _irqs = libos::irqflags::IrqGuard::new();
                *MMIO_DEVICES.lock()
            };
            crate::virtio::probe_all(&list[..n]);
        }
    }
}

/// Most virtio-mmio devices taken from the command line.
const MAX_MMIO_DEVICES: usize = 8;

/// The virtio-mmio devices QEMU announced (written once at boot, read by
/// `start_services`).
static MMIO_DEVICES: spinning_top::Spinlock<([MmioDevice; MAX_MMIO_DEVICES], usize)> =
    spinning_top::Spinlock::new((
        [MmioDevice {
            base: 0,
            size: 0,
            irq: 0,
        }; MAX_MMIO_DEVICES],
        0,
    ));

/// Takes QEMU's trailing `virtio_mmio.device=` words off the command line and keeps
/// the devices for the network driver; returns the rest.
///
/// Context: boot CPU, irqs off, once.
pub fn take_mmio_devices(cmdline: &'static str) -> &'static str {
    let mut devices = MMIO_DEVICES.lock();
    let (rest, n) = mmio_devices::split(cmdline, &mut devices.0);
    devices.1 = n;
    rest
}

/// Masks both legacy 8259 PICs: on `-M pc` the firmware leaves them programmed at
/// vectors 8-15, which would alias CPU exceptions once interrupts are enabled.
pub fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: writing 0xff to the PICs' data ports masks every IRQ line; absent PICs
    // (microvm) ignore the writes.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Exit status when boot information is unusable.
const BOOT_FAILURE: i32 = 3;
/// The command line is copied here before the heap may reuse its memory.
const CMDLINE_MAX: usize = 4096;

// Only the bytes `keep_cmdline` copies are ever read, so boot need not zero it (.noinit,
// the linker script).
#[unsafe(link_section = ".bss.noinit.cmdline")]
static mut CMDLINE: [u8; CMDLINE_MAX] = [0; CMDLINE_MAX];

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Reports an unusable boot and exits (the platform is registered by then).
pub fn fail(what: impl fmt::Display) -> ! {
    println!("upcall: boot failed: {what}");
    match libos::console::platform() {
        Some(p) => p.exit(BOOT_FAILURE),
        None => exit::exit(BOOT_FAILURE),
    }
}

/// Reads `len` bytes of boot memory below 4 GiB, mapped by the boot page tables.
pub fn phys_slice(paddr: u64, len: usize) -> &'static [u8] {
    if paddr == 0 || paddr.saturating_add(len as u64) > 1 << 32 {
        fail(format_args!(
            "boot data at {paddr:#x} (+{len}) is outside the first 4 GiB"
        ));
    }
    // SAFETY: both boot paths start with the first GiBs identity-mapped and nothing writes
    // boot data while we read it (the heap does not exist yet).
    unsafe { core::slice::from_raw_parts(paddr as *const u8, len) }
}

/// Copies the command line (bytes up to a NUL; non-ASCII becomes `?`) into the image,
/// so the heap may reuse the boot memory it came from.
pub fn keep_cmdline(raw: &[u8]) -> &'static str {
    let buf = &raw mut CMDLINE;
    // SAFETY: called once per boot, on the boot CPU, before anything else reads CMDLINE.
    let buf = unsafe { &mut *buf };
    libos::cmdline::copy_text(raw, buf)
}

/// The most bytes of command line kept.
pub const fn cmdline_max() -> usize {
    CMDLINE_MAX
}

/// Registers the platform and installs the descriptor tables: the first thing each
/// entry does, so that anything going wrong later is reported.
///
/// Context: boot CPU, irqs off, once.
pub fn early_init(platform: &'static Kvm) {
    libos::boot::register_platform(platform);
    mask_legacy_pic();
    let code = gdt::init();
    idt::init(code);
}

/// The common rest of boot: own page tables over `ram`, then `libos::start`.
///
/// Context: boot CPU, irqs off, on the boot stack, after [`early_init`]; boot data
/// (memory map, device tree) is no longer needed.
pub fn finish(ram: &[Region], cmdline: &'static str) -> ! {
    let image = Region {
        start: &raw const __image_start as u64,
        end: &raw const __image_end as u64,
    };
    let guards = stacks::ist_stacks().map(stacks::guard);
    let unmapped = [
        0,
        &raw const pvh::__boot_stack_guard as u64,
        guards[0],
        guards[1],
        guards[2],
    ];
    // SAFETY: once, boot CPU, irqs off; the image (code, stacks, CMDLINE) is RAM and only
    // its guard pages are unmapped; boot data is not read after this point.
    unsafe { paging::init(ram, &unmapped, &[apic::mmio_base()]) }.unwrap_or_else(|e| fail(e));
    let boot = BootInfo {
        cmdline,
        ram,
        // Low memory (firmware, the VMM's boot structures) and the image stay out of
        // the heap.
        reserved: &[
            Region {
                start: 0,
                end: 0x10_0000,
            },
            image,
        ],
        // SAFETY: written by the entry trampoline before any Rust code ran.
        entry_tsc: unsafe { pvh::kvm_entry_tsc },
    };
    // SAFETY: `ram` is identity-mapped and writable; everything in use is in `reserved`.
    unsafe { libos::start(&boot) }
}

/// The boot identity map (first 4 GiB) as the ACPI parsers (`madt`, `acpi_sleep`) read
/// it: only while boot memory is intact (the heap later reuses it).
pub(crate) struct BootMem;

impl crate::madt::PhysMem for BootMem {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        let end = paddr.checked_add(len as u64)?;
        if paddr < 0x1000 || end > 1 << 32 {
            return None;
        }
        Some(phys_slice(paddr, len))
    }
}
