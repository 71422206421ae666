//! Starting the application processors on QEMU (PVH path): the CPU list from ACPI's
//! MADT, then INIT/SIPI/SIPI to each with the real-mode trampoline, one at a time.
//!
//! Each AP gets, from the heap, a boot stack (with a guard page) that becomes its idle
//! task's stack, its own GDT/TSS with IST stacks, the shared IDT, its local APIC in the
//! BSP's mode with the BSP's timer calibration, and then enters libos's idle loop
//! (`libos::smp::secondary_main`).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use libos::percpu::{self, CpuId, MAX_CPUS};
use libos::println;
use libos::smp::Ipi;

use crate::apic::{self, Delivery};
use crate::madt::{self, PhysMem};
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

/// The boot identity map (first 4 GiB) as `madt` reads it.
struct BootMem;

impl PhysMem for BootMem {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        let end = paddr.checked_add(len as u64)?;
        if paddr < 0x1000 || end > 1 << 32 {
            return None;
        }
        Some(boot::phys_slice(paddr, len))
    }
}

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
    let cr3 = x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64();
    let mut next: CpuId = 1;
    for slot in APIC_IDS.iter().take(listed) {
        let apic_id = slot.load(Relaxed);
        if apic_id == bsp {
            continue;
        }
        if next > max {
            break;
        }
        let stack = libos::sched::Stack::new(AP_STACK_SIZE);
        let params = trampoline::Params {
            cr3,
            stack_top: stack.top(),
            cpu: u64::from(next),
            entry: kvm_ap_main as *const () as u64,
        };
        // The AP's idle task lives on this stack for as long as the image runs.
        core::mem::forget(stack);
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
    let deadline = libos::time::now_ns() + ONLINE_TIMEOUT_NS;
    while !online() {
        if libos::time::now_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
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

/// Where the trampoline lands: the AP's own setup, then libos.
///
/// Context: the AP, irqs off, long mode on the BSP's page tables, on its boot stack.
extern "C" fn kvm_ap_main(cpu: u64) -> ! {
    // Per-CPU data first: the heap's lock (GDT/TSS allocation) traces into it.
    percpu::init_cpu(cpu as CpuId, &boot::QEMU);
    gdt::init_ap();
    idt::load();
    apic::init_ap();
    libos::smp::secondary_main()
}
