//! The PV boot path: ELF notes, `xen_start`, the platform libos sees.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::Relaxed};

use libos::balloon::{Error as BalloonError, Issue};
use libos::memory::Region;
use libos::{BootInfo, Platform, println};

use crate::abi::{self, shared_info};
use crate::start_info::{self, StartInfo};
use crate::{console, hypercall, traps, vcpu};

core::arch::global_asm!(
    r#"
    .macro XEN_NOTE type, payload:vararg
    .pushsection .note.Xen, "a"
    .balign 4
    .long 4                  /* namesz "Xen\0" */
    .long 3f - 2f            /* descsz */
    .long \type
    .asciz "Xen"
    .balign 4
2:  \payload
3:  .balign 4
    .popsection
    .endm

    XEN_NOTE {guest_os}, .asciz "Upcall"
    XEN_NOTE {xen_version}, .asciz "xen-3.0"
    XEN_NOTE {loader}, .asciz "generic"
    XEN_NOTE {virt_base}, .quad 0
    XEN_NOTE {paddr_offset}, .quad 0
    XEN_NOTE {entry}, .quad xen_start
    XEN_NOTE {hypercall_page}, .quad hypercall_page
    XEN_NOTE {features}, .asciz "!writable_page_tables|pae_pgdir_above_4gb"
    XEN_NOTE {supported_features}, .long 1 << {dom0}

    .section .text.boot, "ax"
    .global xen_start
    .type xen_start, @function
/* 64-bit, ring 3, rsi = &start_info; Xen's builder zeroed .bss. */
xen_start:
    cld
    mov r12, rsi
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rip + xen_entry_tsc], rax
    lea rsp, [rip + xen_boot_stack_top]
    xor ebp, ebp
    mov rdi, r12
    call xen_pv_main
    ud2

    .section .data.xen_entry_tsc, "aw"
    .balign 8
xen_entry_tsc: .quad 0

    .section .bss.xen_boot_stack, "aw", @nobits
    .balign 4096
    .skip 64 * 1024
xen_boot_stack_top:
"#,
    guest_os = const abi::XEN_ELFNOTE_GUEST_OS,
    xen_version = const abi::XEN_ELFNOTE_XEN_VERSION,
    loader = const abi::XEN_ELFNOTE_LOADER,
    virt_base = const abi::XEN_ELFNOTE_VIRT_BASE,
    paddr_offset = const abi::XEN_ELFNOTE_PADDR_OFFSET,
    entry = const abi::XEN_ELFNOTE_ENTRY,
    hypercall_page = const abi::XEN_ELFNOTE_HYPERCALL_PAGE,
    features = const abi::XEN_ELFNOTE_FEATURES,
    supported_features = const abi::XEN_ELFNOTE_SUPPORTED_FEATURES,
    dom0 = const abi::XENFEAT_dom0,
);

unsafe extern "C" {
    static xen_entry_tsc: u64;
    static __image_start: u8;
}

/// A page of our image remapped onto Xen's shared-info frame.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);
/// The mapped shared info; null until boot maps it.
static SHARED_INFO: AtomicPtr<shared_info> = AtomicPtr::new(core::ptr::null_mut());
static DOM0: AtomicBool = AtomicBool::new(false);
/// The xenstore ring's pfn and event channel (domU; 0 = none).
static STORE_PFN: AtomicU64 = AtomicU64::new(0);
static STORE_PORT: AtomicU64 = AtomicU64::new(0);

/// Stops the domain as the toolstack asked (`xl shutdown`/`xl reboot`): a clean stop,
/// so it reports exit status 0 first.
pub fn shutdown_now(reason: u32) -> ! {
    let _ = writeln!(libos::console::emergency_writer(), "upcall: exit status 0");
    console::drain();
    loop {
        hypercall::shutdown(reason);
    }
}

/// The mapped shared-info page.
pub fn shared_info() -> *mut shared_info {
    let si = SHARED_INFO.load(Relaxed);
    assert!(!si.is_null(), "shared info used before boot mapped it");
    si
}

/// The page-fault address Xen saved for the current exception.
///
/// Context: events masked (the exception entry masks them), so the vCPU stays put.
pub fn fault_address() -> u64 {
    // SAFETY: this vCPU's registered vcpu_info; Xen wrote arch.cr2 before bouncing the
    // #PF to us.
    unsafe { (&raw const (*vcpu::this()).arch.cr2).read_volatile() }
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
struct Xen;

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
        match crate::gnttab::init() {
            Ok(n) if libos::boot::loglevel() == libos::cmdline::LogLevel::Debug => {
                // Exercise grant and revoke once (a page of our image, read-only, to dom0).
                let page = (&raw const SHARED_INFO_PAGE) as u64 - 4096;
                let gref = crate::gnttab::grant_access(0, page, true);
                let revoked = gref.is_some_and(crate::gnttab::end_access);
                println!(
                    "upcall: grant table: {} frames, {n} entries; grant {gref:?} and revoke {}",
                    crate::gnttab::FRAMES,
                    if revoked { "ok" } else { "FAILED" }
                );
            }
            Ok(_) => {}
            Err(e) => println!("upcall: grant table unavailable: {e}"),
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

    fn describe_timer(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        write!(
            out,
            "clock vcpu_time_info (pvclock), timer VIRQ_TIMER + set_timer_op"
        )
    }
}

static XEN: Xen = Xen;

/// The platform, for secondary vCPUs' `percpu::init_cpu`.
pub(crate) fn platform() -> &'static dyn Platform {
    &XEN
}

// `now_ns` reads Xen's vcpu_time_info through libos's shared pvclock record type.
const _: () =
    assert!(size_of::<libos::pvclock::PvclockRecord>() == size_of::<abi::vcpu_time_info>());

/// Exit status when boot information is unusable.
const BOOT_FAILURE: i32 = 3;
const CMDLINE_MAX: usize = 1024;
static mut CMDLINE: [u8; CMDLINE_MAX] = [0; CMDLINE_MAX];

fn fail(what: impl core::fmt::Display) -> ! {
    println!("upcall: boot failed: {what}");
    XEN.exit(BOOT_FAILURE)
}

/// The page of a special frame (console ring, xenstore ring) of a domU, to keep it out
/// of the heap; empty for dom0 (whose start_info console field means something else)
/// and for frame 0 (none).
fn special_page(info: &StartInfo, mfn: u64) -> Region {
    if info.is_dom0() || mfn == 0 {
        return Region::default();
    }
    let start = crate::memory::pfn_of_mfn(mfn) * 4096;
    Region {
        start,
        end: start + 4096,
    }
}

/// Maps the shared-info frame over our page-aligned placeholder.
fn map_shared_info(maddr: u64) {
    let va = (&raw mut SHARED_INFO_PAGE) as u64;
    let rc = hypercall::update_va_mapping(va, (maddr & !0xfff) | crate::memory::PTE_KERNEL_RW);
    if rc != 0 {
        fail(format_args!(
            "cannot map shared info (update_va_mapping returned {rc})"
        ));
    }
    SHARED_INFO.store(va as *mut shared_info, Relaxed);
}

/// Entered from `xen_start` on our boot stack.
///
/// Context: events masked (as Xen starts a PV vCPU), in the initial mapping.
#[unsafe(no_mangle)]
extern "C" fn xen_pv_main(start_info_va: u64) -> ! {
    libos::boot::register_platform(&XEN);
    // SAFETY: Xen maps start_info (one page) at `start_info_va` for the guest.
    let raw = unsafe { core::slice::from_raw_parts(start_info_va as *const u8, start_info::LEN) };
    let info: StartInfo = start_info::parse(raw).unwrap_or_else(|e| fail(e));
    DOM0.store(info.is_dom0(), Relaxed);
    if !info.is_dom0() && info.console_mfn != 0 {
        // A domU's console ring page is one of its own pages, in the initial mapping.
        let va = crate::memory::pfn_of_mfn(info.console_mfn) * 4096;
        console::use_ring(va, info.console_evtchn);
        if info.store_mfn != 0 {
            STORE_PFN.store(crate::memory::pfn_of_mfn(info.store_mfn), Relaxed);
            STORE_PORT.store(u64::from(info.store_evtchn), Relaxed);
            crate::balloon_target::set_boot_pages(info.nr_pages);
        }
    }
    map_shared_info(info.shared_info);
    // Xen starts us masked; our copy says so too until `vcpu::register` replaces it
    // with Xen's own.
    set_mask(true);
    if let Err(rc) = traps::init() {
        fail(format_args!("set_trap_table returned {rc}"));
    }
    if let Err(rc) = crate::events::init() {
        fail(format_args!("set_callbacks returned {rc}"));
    }
    // Unmap page 0 so null dereferences fault.
    let _ = hypercall::update_va_mapping(0, 0);

    let buf = &raw mut CMDLINE;
    // SAFETY: CMDLINE is only touched here, once.
    let buf = unsafe { &mut *buf };
    let cmdline = libos::cmdline::copy_text(start_info::cmdline(raw), buf);

    let free_start = info.bootstrap_end(start_info_va);
    let initial_end = info.initial_mapping_end(start_info_va);
    // SAFETY: once, before the heap; the free area and pt_base come from start_info.
    let mapped = unsafe {
        crate::memory::init(
            info.mfn_list,
            info.nr_pages,
            info.pt_base,
            free_start,
            initial_end,
        )
    }
    .unwrap_or_else(|e| fail(e));
    // From here on the event mask, pending flags, cr2 and time record are read through
    // the GS base (see `vcpu`); events are still masked, as Xen started us.
    if let Err(rc) = vcpu::register(0) {
        fail(format_args!("VCPUOP_register_vcpu_info returned {rc}"));
    }
    let image_start = (&raw const __image_start) as u64;
    let boot = BootInfo {
        cmdline,
        // All the domain's pages, identity-mapped (virtual == pseudo-physical).
        ram: &[Region {
            start: 0,
            end: mapped.end,
        }],
        // Below the image, the image with Xen's bootstrap structures, and the pages that
        // now hold our page tables.
        reserved: &[
            Region {
                start: 0,
                end: image_start.max(0x1000),
            },
            Region {
                start: image_start,
                end: free_start,
            },
            Region {
                start: mapped.tables_start,
                end: mapped.tables_end,
            },
            special_page(&info, info.console_mfn),
            special_page(&info, info.store_mfn),
        ],
        // SAFETY: written by xen_start before any Rust code ran.
        entry_tsc: unsafe { xen_entry_tsc },
    };
    // Xen gives PV guests no IST: a task running into its guard page would kill the
    // domain without a report, so libos checks stack depths at entry and switch.
    libos::sched::stack_check::enable();
    // SAFETY: everything in `ram` outside `reserved` is mapped, writable and unused: the
    // initial mapping past the bootstrap structures (Xen's guarantee) and the pages
    // `memory::init` mapped.
    unsafe { libos::start(&boot) }
}
