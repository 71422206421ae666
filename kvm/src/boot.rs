//! The QEMU (PVH) boot path, from `pvh_start64` to `libos::start`.

use core::fmt;

use libos::memory::Region;
use libos::{BootInfo, Platform, println};

use crate::start_info::{self, HEADER_LEN, MEMMAP_ENTRY_LEN};
use crate::{apic, exit, gdt, idt, kvmclock, paging, pvh, serial, stacks};

/// The KVM platform as libos sees it.
struct Kvm;

impl Platform for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn console_write(&self, bytes: &[u8]) {
        serial::write(bytes);
    }

    fn exit(&self, code: i32) -> ! {
        exit::exit(code)
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

    fn now_ns(&self) -> u64 {
        if kvmclock::active() {
            kvmclock::now_ns()
        } else {
            apic::now_ns()
        }
    }

    fn timer_init(&self) {
        apic::init();
        kvmclock::init();
    }

    fn set_timer(&self, deadline_ns: u64) {
        let delta =
            (deadline_ns != libos::time::NEVER).then(|| deadline_ns.saturating_sub(self.now_ns()));
        apic::set_timer_in(delta);
    }

    fn describe_timer(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let (deadline, x2apic) = apic::modes();
        write!(
            out,
            "clock {}, timer {} on {}",
            if kvmclock::active() {
                "kvmclock"
            } else {
                "tsc (calibrated against the APIC timer)"
            },
            if deadline {
                "tsc-deadline"
            } else {
                "apic one-shot"
            },
            if x2apic { "x2apic" } else { "xapic" }
        )
    }

    fn guard_page(&self, addr: u64, protect: bool) -> bool {
        paging::set_present(addr, !protect)
    }
}

/// Masks both legacy 8259 PICs: on `-M pc` the firmware leaves them programmed at
/// vectors 8-15, which would alias CPU exceptions once interrupts are enabled.
fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: writing 0xff to the PICs' data ports masks every IRQ line; absent PICs
    // (microvm) ignore the writes.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}

static KVM: Kvm = Kvm;

/// Exit status when boot information is unusable.
const BOOT_FAILURE: i32 = 3;
/// Most RAM ranges taken from the memory map.
const MAX_RAM_REGIONS: usize = 16;
/// The command line is copied here before the heap may reuse its memory.
const CMDLINE_MAX: usize = 4096;

static mut CMDLINE: [u8; CMDLINE_MAX] = [0; CMDLINE_MAX];

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

fn fail(what: impl fmt::Display) -> ! {
    println!("upcall: boot failed: {what}");
    exit::exit(BOOT_FAILURE)
}

/// Reads `len` bytes of physical memory below 4 GiB (identity-mapped by the trampoline).
fn phys_slice(paddr: u64, len: usize) -> &'static [u8] {
    if paddr == 0 || paddr.saturating_add(len as u64) > 1 << 32 {
        fail(format_args!(
            "boot data at {paddr:#x} (+{len}) is outside the first 4 GiB"
        ));
    }
    // SAFETY: the trampoline identity-maps the first 4 GiB and nothing writes boot data
    // while we read it (the heap does not exist yet).
    unsafe { core::slice::from_raw_parts(paddr as *const u8, len) }
}

/// Entered from `pvh_start64` on the boot stack with the `hvm_start_info` address.
///
/// Context: boot CPU, irqs off, long mode with the trampoline's 4 GiB identity map.
#[unsafe(no_mangle)]
extern "C" fn kvm_pvh_main(start_info_paddr: u64) -> ! {
    serial::init();
    libos::boot::register_platform(&KVM);
    mask_legacy_pic();
    let code = gdt::init();
    idt::init(code);

    let info =
        start_info::parse(phys_slice(start_info_paddr, HEADER_LEN)).unwrap_or_else(|e| fail(e));
    let map_len = info.memmap_entries as usize * MEMMAP_ENTRY_LEN;
    let mut ram = [Region::default(); MAX_RAM_REGIONS];
    let n = start_info::ram_regions(phys_slice(info.memmap_paddr, map_len), &mut ram)
        .unwrap_or_else(|e| fail(e));
    let ram = &ram[..n];

    let buf = &raw mut CMDLINE;
    // SAFETY: CMDLINE is only touched here, once, on the boot CPU.
    let buf = unsafe { &mut *buf };
    let cmdline = match info.cmdline_paddr {
        0 => "",
        pa => {
            let avail = ((1u64 << 32) - pa).min(CMDLINE_MAX as u64) as usize;
            start_info::cmdline_text(phys_slice(pa, avail), buf)
        }
    };

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
        // Low memory (firmware, boot structures) and the image stay out of the heap.
        reserved: &[
            Region {
                start: 0,
                end: 0x10_0000,
            },
            image,
        ],
        // SAFETY: written by the trampoline before any Rust code ran; only read now.
        entry_tsc: unsafe { pvh::kvm_entry_tsc },
    };
    // SAFETY: `ram` is identity-mapped and writable; everything in use is in `reserved`.
    unsafe { libos::start(&boot) }
}
