//! The PV boot path: from `xen_start` (see `head`) to `libos::start`, with what
//! `start_info` says (console and xenstore rings, shared info, page tables, command line).

use libos::memory::Region;
use libos::{BootInfo, Platform, println};

use crate::platform::XEN;
use crate::start_info::{self, StartInfo};
use crate::{console, hypercall, traps, vcpu};

unsafe extern "C" {
    static __image_start: u8;
}

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

/// Entered from `xen_start` on our boot stack.
///
/// Context: events masked (as Xen starts a PV vCPU), in the initial mapping.
#[unsafe(no_mangle)]
extern "C" fn xen_pv_main(start_info_va: u64) -> ! {
    libos::boot::register_platform(&XEN);
    // SAFETY: Xen maps start_info (one page) at `start_info_va` for the guest.
    let raw = unsafe { core::slice::from_raw_parts(start_info_va as *const u8, start_info::LEN) };
    let info: StartInfo = start_info::parse(raw).unwrap_or_else(|e| fail(e));
    let mut store_pfn = 0;
    if !info.is_dom0() && info.console_mfn != 0 {
        // A domU's console ring page is one of its own pages, in the initial mapping.
        let va = crate::memory::pfn_of_mfn(info.console_mfn) * 4096;
        console::use_ring(va, info.console_evtchn);
        if info.store_mfn != 0 {
            store_pfn = crate::memory::pfn_of_mfn(info.store_mfn);
            crate::balloon_target::set_boot_pages(info.nr_pages);
        }
    }
    crate::platform::set_boot_facts(info.is_dom0(), store_pfn, info.store_evtchn);
    if let Err(rc) = crate::shared_info::map(info.shared_info) {
        fail(format_args!(
            "cannot map shared info (update_va_mapping returned {rc})"
        ));
    }
    // Xen starts us masked; our copy says so too until `vcpu::register` replaces it
    // with Xen's own.
    vcpu::set_mask(true);
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
        entry_tsc: crate::head::entry_tsc(),
    };
    // Xen gives PV guests no IST: a task running into its guard page would kill the
    // domain without a report, so libos checks stack depths at entry and switch.
    libos::sched::stack_check::enable();
    // SAFETY: everything in `ram` outside `reserved` is mapped, writable and unused: the
    // initial mapping past the bootstrap structures (Xen's guarantee) and the pages
    // `memory::init` mapped.
    unsafe { libos::start(&boot) }
}
