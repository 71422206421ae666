//! Starting the application processors. On QEMU (PVH path): the CPU list from ACPI's
//! MADT, then INIT/SIPI/SIPI to each with the real-mode trampoline, one at a time. On
//! uhyve: every CPU is already running, waiting in `uhyve_ap_wait`; each is released
//! in turn with the same parameters the trampoline gets.
//!
//! Each AP gets, from the heap, a boot stack (with a guard page) that becomes its idle
//! task's stack, its own GDT/TSS with IST stacks, the shared IDT, its local APIC in the
//! BSP's mode with the BSP's timer calibration, and then enters libos's idle loop
//! (`libos::smp::secondary_main`).

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release};

use libos::percpu::{self, CpuId, MAX_CPUS};
use libos::println;
use libos::smp::Ipi;

use crate::apic::{self, Delivery};
use crate::boot::BootMem;
use crate::madt;
use crate::{boot, gdt, idt, trampoline};

/// Bytes of an AP's boot stack (its idle task runs on it, and so do bottom halves'
/// callers before they switch to the irq stack).
const AP_STACK_SIZE: usize = 32 * 1024;
/// How long an AP may take to come online (TCG with many vCPUs on few host cores is
/// slow; a real AP takes microseconds).
const ONLINE_TIMEOUT_NS: u64 = 3_000_000_000;

/// Local APIC IDs by libos CPU index, from the MADT (index 0 = the boot CPU once
/// `start` sorted it there). Written on the boot CPU before any AP starts.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// CPUs the MADT listed (capped at MAX_CPUS); 0 = unknown (one CPU).
static LISTED: AtomicUsize = AtomicUsize::new(0);

/// Reads the CPU list while boot memory is still intact (the heap will reuse it).
///
/// Context: boot CPU, irqs off, boot identity map active.
pub fn discover(rsdp_paddr: u64) {
    let mut ids = [0u32; MAX_CPUS];
    match madt::cpus(&BootMem, rsdp_paddr, &mut ids) {
        Ok(cpus) => {
            for (slot, &id) in APIC_IDS.iter().zip(&ids[..cpus.count]) {
                slot.store(id, Relaxed);
            }
            LISTED.store(cpus.count, Relaxed);
            if cpus.dropped > 0 {
                println!(
                    "upcall: SMP: {} more CPUs than the {MAX_CPUS} supported stay halted",
                    cpus.dropped
                );
            }
        }
        Err(e) => println!("upcall: SMP: {e}; running on 1 CPU"),
    }
}

/// Starts up to `max` APs; returns how many came online.
///
/// Context: boot CPU, irqs off, once, after libos set up its scheduler.
pub fn start(max: u32) -> u32 {
    let listed = LISTED.load(Relaxed);
    if listed <= 1 {
        return 0;
    }
    // The APs reuse the BSP's calibration and APIC mode.
    libos::time::ensure_init();
    let bsp = apic::id();
    APIC_IDS_BY_CPU[0].store(bsp, Relaxed);
    let cr3 = current_cr3();
    let mut next: CpuId = 1;
    for slot in APIC_IDS.iter().take(listed) {
        let apic_id = slot.load(Relaxed);
        if apic_id == bsp {
            continue;
        }
        if next > max {
            break;
        }
        let params = ap_params(cr3, next, kvm_ap_main);
        APIC_IDS_BY_CPU[next as usize].store(apic_id, Relaxed);
        // SAFETY: the trampoline page is low memory outside the heap; the previous AP
        // is online, so it left the trampoline long ago.
        unsafe { trampoline::install(params) };
        if !wake(apic_id, next) {
            println!(
                "upcall: SMP: CPU {next} (APIC {apic_id}) did not come online; stopping there"
            );
            break;
        }
        next += 1;
    }
    next - 1
}

/// Local APIC IDs by libos CPU index (what `send_ipi` needs). Index 0 is the BSP.
static APIC_IDS_BY_CPU: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// INIT, then up to two SIPIs (the architecture's sequence); waits until `cpu` is
/// online.
fn wake(apic_id: u32, cpu: CpuId) -> bool {
    let online = || percpu::cpu(cpu).is_some_and(percpu::PerCpu::is_online);
    apic::send_ipi(apic_id, Delivery::Init);
    spin_ns(10_000_000);
    let vector = (trampoline::PADDR >> 12) as u8;
    for _ in 0..2 {
        apic::send_ipi(apic_id, Delivery::Startup(vector));
        spin_ns(200_000);
        if online() {
            return true;
        }
    }
    wait_online(cpu)
}

/// Waits up to [`ONLINE_TIMEOUT_NS`] for `cpu` to come online.
fn wait_online(cpu: CpuId) -> bool {
    let online = || percpu::cpu(cpu).is_some_and(percpu::PerCpu::is_online);
    let deadline = libos::time::now_ns() + ONLINE_TIMEOUT_NS;
    while !online() {
        if libos::time::now_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The boot CPU's page tables (physical address of the PML4), which every AP loads.
fn current_cr3() -> u64 {
    x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64()
}

/// What AP `cpu` starts with: our page tables, a fresh boot stack (with a guard page;
/// its idle task lives on it for as long as the image runs, so it is never freed) and
/// `entry`.
fn ap_params(cr3: u64, cpu: CpuId, entry: extern "C" fn(u64) -> !) -> trampoline::Params {
    let stack = libos::sched::Stack::new(AP_STACK_SIZE);
    let params = trampoline::Params {
        cr3,
        stack_top: stack.top(),
        cpu: u64::from(cpu),
        entry: entry as *const () as u64,
    };
    core::mem::forget(stack);
    params
}

/// CPUs uhyve started (its boot info's `num_cpus`): CPU 0 boots, the others wait in
/// `uhyve_ap_wait` (see `uhyve.rs`) for [`start_uhyve`]. 0 until the uhyve entry
/// records it.
static UHYVE_CPUS: AtomicU64 = AtomicU64::new(0);

/// Which uhyve CPU may leave `uhyve_ap_wait` (0 = none: CPU 0 never waits). Read by
/// the waiting CPUs' assembly with plain loads; written only by [`start_uhyve`] on the
/// boot CPU, after [`KVM_UHYVE_AP_PARAMS`] (x86 keeps stores in order).
// no_mangle: `uhyve_ap_wait` names it; the name is unique in the image.
#[unsafe(no_mangle)]
static KVM_UHYVE_AP_RELEASE: AtomicU64 = AtomicU64::new(0);

/// The released CPU's [`trampoline::Params`] (`cr3`, `stack_top`, `cpu`, `entry`, in
/// that order: `uhyve_ap_wait` reads them at offsets 0, 8, 16, 24). Written by
/// [`start_uhyve`] before the release, read by the one released CPU before it comes
/// online; the next CPU is released only after that.
// no_mangle: as for KVM_UHYVE_AP_RELEASE.
#[unsafe(no_mangle)]
static KVM_UHYVE_AP_PARAMS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Records how many CPUs uhyve started (they are waiting).
///
/// Context: boot CPU, from the uhyve entry, before libos starts.
pub fn uhyve_cpus_waiting(count: u64) {
    UHYVE_CPUS.store(count, Relaxed);
}

/// Releases up to `max` of the CPUs uhyve started, one at a time, each with its own
/// stack onto our page tables; returns how many came online.
///
/// Context: boot CPU, irqs off, once, after libos set up its scheduler.
pub fn start_uhyve(max: u32) -> u32 {
    let started = UHYVE_CPUS.load(Relaxed);
    if started <= 1 {
        return 0;
    }
    if started > MAX_CPUS as u64 {
        println!(
            "upcall: SMP: uhyve started {started} CPUs; the {} beyond the {MAX_CPUS} supported keep waiting",
            started - MAX_CPUS as u64
        );
    }
    libos::time::ensure_init();
    APIC_IDS_BY_CPU[0].store(apic::id(), Relaxed);
    let cr3 = current_cr3();
    let last = (started - 1).min(MAX_CPUS as u64 - 1).min(u64::from(max)) as CpuId;
    for cpu in 1..=last {
        let params = ap_params(cr3, cpu, kvm_uhyve_ap_main);
        let words = [params.cr3, params.stack_top, params.cpu, params.entry];
        for (slot, word) in KVM_UHYVE_AP_PARAMS.iter().zip(words) {
            slot.store(word, Relaxed);
        }
        // Release: the parameters are visible before the CPU sees its number.
        KVM_UHYVE_AP_RELEASE.store(u64::from(cpu), Release);
        if !wait_online(cpu) {
            println!("upcall: SMP: uhyve CPU {cpu} did not come online; stopping there");
            return cpu - 1;
        }
    }
    last
}

fn spin_ns(ns: u64) {
    let end = libos::time::now_ns() + ns;
    while libos::time::now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Sends `ipi` to libos CPU `cpu`.
///
/// Context: irqs off.
/// Sends CPU `cpu` an NMI (taken even while it runs with irqs off).
pub fn send_nmi(cpu: CpuId) {
    if let Some(id) = APIC_IDS_BY_CPU.get(cpu as usize) {
        apic::send_ipi(id.load(Relaxed), Delivery::Nmi);
    }
}

pub fn send_ipi(cpu: CpuId, ipi: Ipi) {
    let Some(id) = APIC_IDS_BY_CPU.get(cpu as usize) else {
        return;
    };
    let how = match ipi {
        Ipi::Reschedule => Delivery::Fixed(apic::RESCHEDULE_VECTOR),
        Ipi::CallFunction => Delivery::Fixed(apic::CALL_FUNCTION_VECTOR),
        Ipi::HaltAll => Delivery::Nmi,
    };
    apic::send_ipi(id.load(Relaxed), how);
}

/// Where the trampoline lands (QEMU).
///
/// Context: the AP, irqs off, long mode on the BSP's page tables, on its boot stack.
extern "C" fn kvm_ap_main(cpu: u64) -> ! {
    ap_main(cpu as CpuId, &boot::QEMU)
}

/// Where `uhyve_ap_wait` lands (uhyve).
///
/// Context: as [`kvm_ap_main`].
extern "C" fn kvm_uhyve_ap_main(cpu: u64) -> ! {
    ap_main(cpu as CpuId, &boot::UHYVE)
}

/// An AP's own setup, then libos: the same on every VMM.
///
/// Context: the AP, irqs off, long mode on the BSP's page tables, on its boot stack.
fn ap_main(cpu: CpuId, platform: &'static boot::Kvm) -> ! {
    // Per-CPU data first: the heap's lock (GDT/TSS allocation) traces into it.
    percpu::init_cpu(cpu, platform);
    gdt::init_ap();
    idt::load();
    apic::init_ap();
    // Where IPIs reach this CPU (the QEMU path knew it from the MADT already; uhyve's
    // CPUs report theirs here, before they come online and can be sent any).
    APIC_IDS_BY_CPU[cpu as usize].store(apic::id(), Relaxed);
    libos::smp::secondary_main()
}
