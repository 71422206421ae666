//! The Xen ABI this backend uses, in one place: hypercall numbers, sub-operations,
//! argument structs, flags, the `start_info` and shared-ring layouts and the ELF-note
//! types (Xen's `xen/include/public`, x86-64).
//!
//! Taken from xen-sys where it has them (its bindgen covers `xen.h`, `sched.h`,
//! `elfnote.h`, `event_channel.h`); what xen-sys leaves out (`DOMID_SELF`, a macro
//! with a cast bindgen skips, and everything from `grant_table.h`, `memory.h`,
//! `vcpu.h`, `physdev.h`, `io/console.h`, `io/xs_wire.h`, `features.h`) is written
//! here once, from those headers, with its size and offsets asserted.
//!
//! Pure (only `core` and `xen_sys`): `tools/xtask` includes this file with `#[path]`
//! for its minimal PV kernel, so both read the same numbers.
#![forbid(unsafe_code)]
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    reason = "Xen's own names, so they can be grepped in its headers"
)]

use core::mem::{offset_of, size_of};

pub use xen_sys::{
    // Hypercalls (`xen.h`).
    __HYPERVISOR_console_io,
    __HYPERVISOR_event_channel_op,
    __HYPERVISOR_grant_table_op,
    __HYPERVISOR_iret,
    __HYPERVISOR_memory_op,
    __HYPERVISOR_mmu_update,
    __HYPERVISOR_mmuext_op,
    __HYPERVISOR_physdev_op,
    __HYPERVISOR_sched_op,
    __HYPERVISOR_set_callbacks,
    __HYPERVISOR_set_segment_base,
    __HYPERVISOR_set_timer_op,
    __HYPERVISOR_set_trap_table,
    __HYPERVISOR_update_va_mapping,
    __HYPERVISOR_vcpu_op,
    __HYPERVISOR_xen_version,
    // `console_io`, `set_segment_base`, `mmu_update`, `mmuext_op`.
    CONSOLEIO_write,
    // Event channels (`event_channel.h`).
    EVTCHNOP_alloc_unbound,
    EVTCHNOP_bind_ipi,
    EVTCHNOP_bind_virq,
    EVTCHNOP_send,
    EVTCHNOP_unmask,
    // Flat segments of a 64-bit PV kernel, and `vcpu_guest_context` flags.
    FLAT_KERNEL_CS,
    FLAT_KERNEL_SS,
    MMU_NORMAL_PT_UPDATE,
    MMUEXT_TLB_FLUSH_ALL,
    // Scheduler operations and shutdown reasons (`sched.h`).
    SCHEDOP_block,
    SCHEDOP_shutdown,
    SCHEDOP_yield,
    SEGBASE_GS_KERNEL,
    SHUTDOWN_crash,
    SHUTDOWN_poweroff,
    SHUTDOWN_reboot,
    // `start_info.flags`.
    SIF_INITDOMAIN,
    VGCF_in_kernel,
    VIRQ_DEBUG,
    VIRQ_TIMER,
    // ELF notes (`elfnote.h`).
    XEN_ELFNOTE_ENTRY,
    XEN_ELFNOTE_FEATURES,
    XEN_ELFNOTE_GUEST_OS,
    XEN_ELFNOTE_HYPERCALL_PAGE,
    XEN_ELFNOTE_LOADER,
    XEN_ELFNOTE_PADDR_OFFSET,
    XEN_ELFNOTE_PHYS32_ENTRY,
    XEN_ELFNOTE_SUPPORTED_FEATURES,
    XEN_ELFNOTE_VIRT_BASE,
    XEN_ELFNOTE_XEN_VERSION,
    // Structures.
    domid_t,
    evtchn_alloc_unbound,
    evtchn_bind_ipi,
    evtchn_bind_virq,
    evtchn_send,
    evtchn_unmask,
    mmu_update,
    mmuext_op,
    mmuext_op__bindgen_ty_1,
    mmuext_op__bindgen_ty_2,
    sched_shutdown,
    shared_info,
    start_info,
    trap_info,
    vcpu_guest_context,
    vcpu_info,
    vcpu_time_info,
};

/// Bytes of each hypercall's stub in the hypercall page (`XEN_ELFNOTE_HYPERCALL_PAGE`):
/// hypercall `op` is `call hypercall_page + op * HYPERCALL_STUB_SIZE`.
pub const HYPERCALL_STUB_SIZE: u32 = 32;

/// `DOMID_SELF` (`xen.h`): "this domain" wherever a hypercall takes a domain id.
pub const DOMID_SELF: domid_t = 0x7ff0;

/// `MACH2PHYS_VIRT_START` (`arch-x86/xen-x86_64.h`): Xen's read-only machine-to-phys
/// table, mapped into every 64-bit PV guest.
pub const MACH2PHYS_VIRT_START: u64 = xen_sys::__MACH2PHYS_VIRT_START as u64;

/// `XENFEAT_dom0` (`features.h`): in `XEN_ELFNOTE_SUPPORTED_FEATURES`, the kernel can
/// run as the control domain.
pub const XENFEAT_dom0: u32 = 11;

/// `trap_info.flags`: bit 2 (`TI_SET_IF`) makes Xen mask events on entry to the
/// handler, as an interrupt gate clears IF (the low two bits are the DPL).
pub const TI_MASK_EVENTS: u8 = 1 << 2;

// ---- `start_info` (`xen.h`) ----

/// The domU view of `start_info.console` (`console.domU`): the console ring's frame
/// and event channel. (dom0's view is `console.dom0 { info_off, info_size }`.)
pub type start_info_console_domU = xen_sys::start_info__bindgen_ty_1__bindgen_ty_1;

/// Byte offsets in `start_info`, for parsers that read it as bytes.
pub mod si {
    use super::{offset_of, size_of, start_info, start_info_console_domU};

    /// Bytes of the structure.
    pub const LEN: usize = size_of::<start_info>();
    pub const MAGIC: usize = offset_of!(start_info, magic);
    pub const NR_PAGES: usize = offset_of!(start_info, nr_pages);
    pub const SHARED_INFO: usize = offset_of!(start_info, shared_info);
    pub const FLAGS: usize = offset_of!(start_info, flags);
    pub const STORE_MFN: usize = offset_of!(start_info, store_mfn);
    pub const STORE_EVTCHN: usize = offset_of!(start_info, store_evtchn);
    /// `console.domU.mfn`.
    pub const CONSOLE_MFN: usize =
        offset_of!(start_info, console) + offset_of!(start_info_console_domU, mfn);
    /// `console.domU.evtchn`.
    pub const CONSOLE_EVTCHN: usize =
        offset_of!(start_info, console) + offset_of!(start_info_console_domU, evtchn);
    pub const PT_BASE: usize = offset_of!(start_info, pt_base);
    pub const NR_PT_FRAMES: usize = offset_of!(start_info, nr_pt_frames);
    pub const MFN_LIST: usize = offset_of!(start_info, mfn_list);
    pub const CMD_LINE: usize = offset_of!(start_info, cmd_line);
    /// `MAX_GUEST_CMDLINE`.
    pub const CMD_LINE_LEN: usize = 1024;
}

// The layout `xen.h` documents for x86-64 (and start_info.rs's table repeats).
const _: () = {
    assert!(si::NR_PAGES == 32 && si::SHARED_INFO == 40 && si::FLAGS == 48);
    assert!(si::STORE_MFN == 56 && si::STORE_EVTCHN == 64);
    assert!(si::CONSOLE_MFN == 72 && si::CONSOLE_EVTCHN == 80);
    assert!(si::PT_BASE == 88 && si::NR_PT_FRAMES == 96 && si::MFN_LIST == 104);
    assert!(si::CMD_LINE == 128 && si::LEN == 1168);
    assert!(size_of::<xen_sys::start_info__bindgen_ty_1>() == 16);
};

// ---- Shared rings (`io/console.h`, `io/xs_wire.h`) ----

/// Bytes of the console's input ring (`sizeof(intf->in)`).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Bytes of the console's output ring (`sizeof(intf->out)`).
pub const XENCONS_OUT_SIZE: usize = 2048;

/// `struct xencons_interface`: the PV console's page.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct xencons_interface {
    pub in_: [u8; XENCONS_IN_SIZE],
    pub out: [u8; XENCONS_OUT_SIZE],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}

const _: () = {
    assert!(offset_of!(xencons_interface, out) == 1024);
    assert!(offset_of!(xencons_interface, out_cons) == 3080);
    assert!(offset_of!(xencons_interface, out_prod) == 3084);
};

/// `XENSTORE_RING_SIZE`: bytes of each xenstore ring.
pub const XENSTORE_RING_SIZE: usize = 1024;

/// `struct xenstore_domain_interface`: the xenstore ring page (the fields after
/// `rsp_prod`, `server_features` and `connection`, are not used).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct xenstore_domain_interface {
    pub req: [u8; XENSTORE_RING_SIZE],
    pub rsp: [u8; XENSTORE_RING_SIZE],
    pub req_cons: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
    pub rsp_prod: u32,
}

const _: () = {
    assert!(offset_of!(xenstore_domain_interface, rsp) == 1024);
    assert!(offset_of!(xenstore_domain_interface, req_cons) == 2048);
    assert!(offset_of!(xenstore_domain_interface, rsp_prod) == 2060);
};

// ---- `update_va_mapping` flags (`xen.h`) ----

/// Flush the mapping's TLB entry (`UVMF_INVLPG`).
pub const UVMF_INVLPG: u64 = 2;
/// With `UVMF_INVLPG`: on every vCPU of the domain (`UVMF_ALL`).
pub const UVMF_ALL: u64 = 4;

// ---- `physdev.h` ----

/// `PHYSDEVOP_set_iopl`, argument `struct physdev_set_iopl { u32 iopl }`.
pub const PHYSDEVOP_set_iopl: u32 = 6;

/// `struct physdev_set_iopl`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct physdev_set_iopl {
    pub iopl: u32,
}

// ---- `vcpu.h` ----

pub const VCPUOP_initialise: u32 = 0;
pub const VCPUOP_up: u32 = 1;
pub const VCPUOP_down: u32 = 2;
pub const VCPUOP_is_up: u32 = 3;
pub const VCPUOP_stop_periodic_timer: u32 = 7;
pub const VCPUOP_register_vcpu_info: u32 = 10;

/// `struct vcpu_register_vcpu_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vcpu_register_vcpu_info {
    /// Machine frame of the new `vcpu_info`.
    pub mfn: u64,
    /// Its offset in that frame.
    pub offset: u32,
    pub rsvd: u32,
}

const _: () = assert!(size_of::<vcpu_register_vcpu_info>() == 16);

// ---- `grant_table.h` ----

/// `GNTTABOP_setup_table`.
pub const GNTTABOP_setup_table: u32 = 2;

/// `struct gnttab_setup_table`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gnttab_setup_table {
    pub dom: domid_t,
    pub nr_frames: u32,
    /// `GNTST_*` (0 = okay), written by Xen.
    pub status: i16,
    /// Guest handle of `nr_frames` machine frame numbers, written by Xen.
    pub frame_list: u64,
}

const _: () = {
    assert!(offset_of!(gnttab_setup_table, nr_frames) == 4);
    assert!(offset_of!(gnttab_setup_table, status) == 8);
    assert!(offset_of!(gnttab_setup_table, frame_list) == 16);
    assert!(size_of::<gnttab_setup_table>() == 24);
};

/// `struct grant_entry_v1`: one entry of a version-1 grant table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct grant_entry_v1 {
    /// `GTF_*`.
    pub flags: u16,
    /// The domain granted access.
    pub domid: domid_t,
    /// The frame granted.
    pub frame: u32,
}

const _: () = {
    assert!(offset_of!(grant_entry_v1, domid) == 2);
    assert!(offset_of!(grant_entry_v1, frame) == 4);
    assert!(size_of::<grant_entry_v1>() == 8);
};

/// `GNTTAB_NR_RESERVED_ENTRIES`: the first grant references, kept for the toolstack
/// (console, xenstore).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// `GTF_permit_access`: the peer may map or copy the frame.
pub const GTF_permit_access: u16 = 1;
/// `GTF_readonly`: read-only access.
pub const GTF_readonly: u16 = 1 << 2;
/// `GTF_reading`: the peer has the frame mapped or is copying from it.
pub const GTF_reading: u16 = 1 << 3;
/// `GTF_writing`: the peer has the frame mapped writable or is copying to it.
pub const GTF_writing: u16 = 1 << 4;

// ---- `memory.h` ----

pub const XENMEM_decrease_reservation: u32 = 1;
pub const XENMEM_populate_physmap: u32 = 6;
/// `INVALID_P2M_ENTRY`: a pfn with no machine frame behind it.
pub const INVALID_P2M_ENTRY: u64 = !0;

/// `struct xen_memory_reservation`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct xen_memory_reservation {
    /// Guest handle of the extent list (`xen_pfn_t`s).
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: domid_t,
}

const _: () = {
    assert!(offset_of!(xen_memory_reservation, extent_order) == 16);
    assert!(offset_of!(xen_memory_reservation, domid) == 24);
    assert!(size_of::<xen_memory_reservation>() == 32);
};

// ---- Network rings (`io/ring.h`, `io/netif.h`) ----

/// Bytes before the first entry of a shared ring page.
pub const SRING_HEADER: usize = 64;
/// Offsets of the shared ring's index words.
pub const REQ_PROD: usize = 0;
/// See [`REQ_PROD`].
pub const REQ_EVENT: usize = 4;
/// See [`REQ_PROD`].
pub const RSP_PROD: usize = 8;
/// See [`REQ_PROD`].
pub const RSP_EVENT: usize = 12;

/// Bytes per TX entry (`netif_tx_request` is the larger half of the union).
pub const TX_ENTRY: usize = 12;
/// Bytes per RX entry (request and response are both 8).
pub const RX_ENTRY: usize = 8;

/// `NETTXF_*`/`NETRXF_*`: more fragments follow (scatter-gather: the backend's
/// `feature-sg` on transmit; not asked for on receive).
pub const F_MORE_DATA: u16 = 1 << 2;
/// An extra-info slot follows (transmit: GSO; not asked for on receive).
pub const F_EXTRA_INFO: u16 = 1 << 3;
/// `NETTXF_csum_blank`: the TCP checksum field holds only the pseudo-header sum; the
/// backend (or the NIC behind it) completes it.
pub const TXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`: the payload needs no checking on the way.
pub const TXF_DATA_VALIDATED: u16 = 1 << 1;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const GSO_TYPE_TCPV4: u8 = 1;
/// `NETRXF_data_validated`: a hint that the checksum was checked, harmless to ignore
/// (smoltcp verifies checksums itself).
pub const RXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`: the checksum field is not filled in (checksum offload). The
/// frontend asks for `feature-no-csum-offload`, so a backend sending it breaks the
/// handshake; such a frame could not pass a checksum check anyway.
pub const RXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_gso_prefix` (not negotiated).
pub const RXF_GSO_PREFIX: u16 = 1 << 4;

/// `NETIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the response to an extra-info slot.
pub const RSP_NULL: i16 = 1;
