//! Local APIC: one-shot timer (TSC-deadline where the CPU has it), EOI, and the TSC
//! clock: its frequency as the hypervisor or CPUID states it (`tsc_freq`), calibrated
//! against the APIC timer only where nothing is stated.
//!
//! x2APIC (MSR access) is used when CPUID offers it, otherwise xAPIC (MMIO at the base
//! from `IA32_APIC_BASE`, mapped uncached by `paging`). The APIC timer of QEMU's and
//! KVM's emulated APIC counts at 1 GHz with divide-by-1 (their bus clock is defined as
//! 1 ns per cycle), so one count is one nanosecond; where calibration is needed, the TSC
//! is measured against it.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

use x86_64::registers::model_specific::Msr;

/// The timer's interrupt vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// The spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The reschedule IPI's vector.
pub const RESCHEDULE_VECTOR: u8 = 0xf0;
/// The call-function IPI's vector.
pub const CALL_FUNCTION_VECTOR: u8 = 0xf1;

/// Default xAPIC MMIO base.
pub const XAPIC_DEFAULT_BASE: u64 = 0xfee0_0000;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

/// APIC registers, by xAPIC MMIO offset (x2APIC MSR = 0x800 + offset / 16).
#[derive(Clone, Copy)]
#[repr(u32)]
enum Reg {
    Id = 0x20,
    TaskPriority = 0x80,
    Eoi = 0xb0,
    SpuriousVector = 0xf0,
    LvtTimer = 0x320,
    InitialCount = 0x380,
    CurrentCount = 0x390,
    DivideConfig = 0x3e0,
    /// Interrupt command, low half (xAPIC; writing it sends). x2APIC: one 64-bit MSR.
    IcrLow = 0x300,
    /// Interrupt command, high half: destination in bits 24..32 (xAPIC only).
    IcrHigh = 0x310,
}

/// How an IPI is delivered (ICR bits 8..11, plus level-assert).
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    /// A normal interrupt at `vector`.
    Fixed(u8),
    /// A non-maskable interrupt (the halt-all IPI: it stops a CPU spinning with irqs off).
    Nmi,
    /// INIT (resets the AP into wait-for-SIPI).
    Init,
    /// Start-up: the AP begins in real mode at `page << 12`.
    Startup(u8),
}

const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

const LVT_MASKED: u32 = 1 << 16;
const LVT_TSC_DEADLINE: u32 = 2 << 17;
const SVR_ENABLE: u32 = 1 << 8;
const DIVIDE_BY_1: u32 = 0b1011;

static X2APIC: AtomicBool = AtomicBool::new(false);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
static MMIO_BASE: AtomicU64 = AtomicU64::new(XAPIC_DEFAULT_BASE);
/// ns = (tsc - TSC_BASE) * NS_PER_TSC_FP >> 32.
static NS_PER_TSC_FP: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// `tsc_freq::Source as u8` of TSC_HZ.
static TSC_SOURCE: AtomicU8 = AtomicU8::new(0);

fn write(reg: Reg, value: u32) {
    if X2APIC.load(Relaxed) {
        // SAFETY: x2APIC mode is enabled, so MSR 0x800 + reg/16 is that APIC register.
        unsafe { Msr::new(0x800 + reg as u32 / 16).write(u64::from(value)) };
    } else {
        let addr = MMIO_BASE.load(Relaxed) + reg as u64;
        // SAFETY: the xAPIC page is mapped uncached by `paging`; registers are 32-bit.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
    }
}

fn read(reg: Reg) -> u32 {
    if X2APIC.load(Relaxed) {
        // SAFETY: as in `write`.
        unsafe { Msr::new(0x800 + reg as u32 / 16).read() as u32 }
    } else {
        let addr = MMIO_BASE.load(Relaxed) + reg as u64;
        // SAFETY: as in `write`.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
}

/// CPUID.1: (x2APIC, TSC-deadline).
fn features() -> (bool, bool) {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    (ecx & (1 << 21) != 0, ecx & (1 << 24) != 0)
}

/// The xAPIC MMIO base the CPU reports (for `paging` to map).
pub fn mmio_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; reading it has no side effects.
    let base = unsafe { Msr::new(IA32_APIC_BASE).read() } & 0x000f_ffff_ffff_f000;
    MMIO_BASE.store(base, Relaxed);
    base
}

/// Enables the APIC, sets the TSC frequency (stated by the platform, else calibrated)
/// and prepares the one-shot timer. `kvmclock` is kvmclock's scale where it is in use.
///
/// Context: boot CPU, irqs off, once.
pub fn init(kvmclock: Option<(u32, i8)>) {
    let (x2apic, tsc_deadline) = features();
    enable_local(x2apic);
    let offers = crate::tsc_freq::Offers::from_cpuid(
        |leaf| {
            let r = core::arch::x86_64::__cpuid(leaf);
            [r.eax, r.ebx, r.ecx, r.edx]
        },
        kvmclock,
    );
    match crate::tsc_freq::pick(&offers) {
        Some((source, hz)) => set_tsc_hz(hz, libos::arch::rdtsc(), source),
        None => calibrate_tsc(),
    }
    TSC_DEADLINE.store(tsc_deadline, Relaxed);
    program_lvt_timer();
}

/// Enables an application processor's APIC in the mode the BSP chose and prepares its
/// one-shot timer (the calibration is the BSP's: every CPU's TSC and APIC timer run at
/// the same rate).
///
/// Context: the AP, irqs off, once, after the BSP's [`init`].
pub fn init_ap() {
    enable_local(X2APIC.load(Relaxed));
    program_lvt_timer();
}

fn program_lvt_timer() {
    let mode = if TSC_DEADLINE.load(Relaxed) {
        LVT_TSC_DEADLINE
    } else {
        0
    };
    write(Reg::LvtTimer, mode | u32::from(TIMER_VECTOR));
}

/// This CPU's local APIC ID.
pub fn id() -> u32 {
    let raw = read(Reg::Id);
    if X2APIC.load(Relaxed) { raw } else { raw >> 24 }
}

/// Sends an IPI to the CPU with local APIC ID `apic_id` and waits until the APIC
/// accepted it.
///
/// Context: irqs off (the ICR is one register pair per CPU; an interrupt handler
/// sending its own IPI in between would mix the halves), APIC enabled.
pub fn send_ipi(apic_id: u32, how: Delivery) {
    let low = match how {
        Delivery::Fixed(v) => ICR_LEVEL_ASSERT | u32::from(v),
        Delivery::Nmi => ICR_LEVEL_ASSERT | (0b100 << 8),
        Delivery::Init => ICR_LEVEL_ASSERT | (0b101 << 8),
        Delivery::Startup(page) => ICR_LEVEL_ASSERT | (0b110 << 8) | u32::from(page),
    };
    if X2APIC.load(Relaxed) {
        // SAFETY: x2APIC mode: MSR 0x830 is the 64-bit ICR; writing it sends the IPI.
        unsafe { Msr::new(0x830).write((u64::from(apic_id) << 32) | u64::from(low)) };
    } else {
        write(Reg::IcrHigh, apic_id << 24);
        write(Reg::IcrLow, low);
        while read(Reg::IcrLow) & ICR_DELIVERY_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Turns this CPU's APIC on (in x2APIC mode if `x2apic`) and accepts all priorities.
fn enable_local(x2apic: bool) {
    let mut msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: enabling the APIC (and x2APIC mode where CPUID offers it) in its base MSR
    // is how the architecture says to turn it on; the base address is kept.
    unsafe {
        let base = msr.read() | APIC_BASE_ENABLE;
        msr.write(if x2apic {
            base | APIC_BASE_X2APIC
        } else {
            base
        });
    }
    X2APIC.store(x2apic, Relaxed);
    write(Reg::SpuriousVector, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(Reg::TaskPriority, 0);
    write(Reg::DivideConfig, DIVIDE_BY_1);
}

/// Measures the TSC rate against the APIC timer's 1 GHz count over 500 µs.
fn calibrate_tsc() {
    const SPAN: u32 = 500_000;
    write(Reg::LvtTimer, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(Reg::InitialCount, u32::MAX);
    let c0 = read(Reg::CurrentCount);
    let t0 = libos::arch::rdtsc();
    let mut c1 = c0;
    while c0 - c1 < SPAN {
        core::hint::spin_loop();
        c1 = read(Reg::CurrentCount);
    }
    let t1 = libos::arch::rdtsc();
    write(Reg::InitialCount, 0);
    let elapsed_ns = u64::from(c0 - c1);
    let tsc_hz = (t1 - t0) * 1_000_000_000 / elapsed_ns;
    set_tsc_hz(tsc_hz, t0, crate::tsc_freq::Source::Calibrated);
}

fn set_tsc_hz(tsc_hz: u64, base: u64, source: crate::tsc_freq::Source) {
    TSC_HZ.store(tsc_hz, Relaxed);
    NS_PER_TSC_FP.store(
        (1_000_000_000u128 << 32).div_ceil(u128::from(tsc_hz.max(1))) as u64,
        Relaxed,
    );
    TSC_BASE.store(base, Relaxed);
    TSC_SOURCE.store(source as u8, Relaxed);
}

/// The TSC frequency in Hz and where it came from.
pub fn tsc_frequency() -> (u64, crate::tsc_freq::Source) {
    use crate::tsc_freq::Source;
    let source = [
        Source::HypervisorLeaf,
        Source::Kvmclock,
        Source::Cpuid15,
        Source::Cpuid16,
        Source::Calibrated,
    ]
    .into_iter()
    .find(|&s| s as u8 == TSC_SOURCE.load(Relaxed))
    .unwrap_or(Source::Calibrated);
    (TSC_HZ.load(Relaxed), source)
}

/// (TSC-deadline mode in use, x2APIC mode in use).
pub fn modes() -> (bool, bool) {
    (TSC_DEADLINE.load(Relaxed), X2APIC.load(Relaxed))
}

/// Monotonic nanoseconds since calibration.
pub fn now_ns() -> u64 {
    let delta = libos::arch::rdtsc().saturating_sub(TSC_BASE.load(Relaxed));
    ((u128::from(delta) * u128::from(NS_PER_TSC_FP.load(Relaxed))) >> 32) as u64
}

/// Arms the one-shot timer to fire `delta_ns` from now; `None` disarms it. (Relative, so
/// it works whichever clock the caller reads: TSC here or kvmclock.)
pub fn set_timer_in(delta_ns: Option<u64>) {
    if TSC_DEADLINE.load(Relaxed) {
        let tsc = delta_ns.map_or(0, |d| {
            let ticks = u128::from(d) * u128::from(TSC_HZ.load(Relaxed)) / 1_000_000_000;
            libos::arch::rdtsc().saturating_add(ticks as u64).max(1)
        });
        // SAFETY: the LVT timer is in TSC-deadline mode; writing the MSR arms (or with
        // 0 disarms) it.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(tsc) };
    } else {
        // One count per nanosecond; a delay beyond 4.29 s fires early and the timer
        // softirq re-arms it. 0 stops the timer.
        let count = delta_ns.map_or(0, |d| d.clamp(1, u64::from(u32::MAX)) as u32);
        write(Reg::InitialCount, count);
    }
}

/// Acknowledges the interrupt being handled.
pub fn eoi() {
    write(Reg::Eoi, 0);
}
