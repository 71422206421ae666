//! The minimal Xen PV kernel for `bench xen-boot`, assembled from `stubs/xen_boot.s` (see
//! [`crate::stub_elf::assemble`]): it does only what any PV domU must do to print one
//! line and end — the Xen ELF notes, the console ring page found through start_info and
//! the M2P table, one line written to the ring, `EVTCHNOP_send` on the console event
//! channel, a wait (`SCHEDOP_yield`) until xenconsoled has drained the ring, and
//! `SCHEDOP_shutdown(poweroff)`. It measures what the toolstack and Xen cost to create
//! and start a domain, which every image pays, so Upcall's `hello` against it isolates
//! what Upcall adds.
//!
//! The ABI numbers come from the Xen backend's own `abi` module (Xen's public headers,
//! through xen-sys), filled into the source as `global_asm!` operands.

use std::mem::offset_of;
use std::path::Path;

use crate::Failure;

/// The Xen ABI, shared with the backend (a pure module: `core` and `xen_sys` only).
#[path = "../../../xen/src/abi.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the stubs use a few of the backend's ABI items"
)]
pub(crate) mod abi;

/// Builds the image.
pub fn image() -> Result<Vec<u8>, Failure> {
    let ring = |off: usize| off as u64;
    let xen_note = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xen/src/xen_note.s");
    crate::stub_elf::assemble(
        "xen_boot",
        &[xen_note],
        &[
            ("guest_os", abi::XEN_ELFNOTE_GUEST_OS.into()),
            ("xen_version", abi::XEN_ELFNOTE_XEN_VERSION.into()),
            ("loader", abi::XEN_ELFNOTE_LOADER.into()),
            ("virt_base", abi::XEN_ELFNOTE_VIRT_BASE.into()),
            ("paddr_offset", abi::XEN_ELFNOTE_PADDR_OFFSET.into()),
            ("entry", abi::XEN_ELFNOTE_ENTRY.into()),
            (
                "hypercall_page_note",
                abi::XEN_ELFNOTE_HYPERCALL_PAGE.into(),
            ),
            ("features", abi::XEN_ELFNOTE_FEATURES.into()),
            ("si_console_mfn", ring(abi::si::CONSOLE_MFN)),
            ("si_console_evtchn", ring(abi::si::CONSOLE_EVTCHN)),
            ("m2p", abi::MACH2PHYS_VIRT_START),
            ("out", ring(offset_of!(abi::xencons_interface, out))),
            ("out_size", ring(abi::XENCONS_OUT_SIZE)),
            (
                "out_cons",
                ring(offset_of!(abi::xencons_interface, out_cons)),
            ),
            (
                "out_prod",
                ring(offset_of!(abi::xencons_interface, out_prod)),
            ),
            ("stub_size", abi::HYPERCALL_STUB_SIZE.into()),
            (
                "event_channel_op",
                abi::__HYPERVISOR_event_channel_op.into(),
            ),
            ("evtchnop_send", abi::EVTCHNOP_send.into()),
            ("sched_op", abi::__HYPERVISOR_sched_op.into()),
            ("schedop_yield", abi::SCHEDOP_yield.into()),
            ("schedop_shutdown", abi::SCHEDOP_shutdown.into()),
            ("shutdown_poweroff", abi::SHUTDOWN_poweroff.into()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSegment};

    use super::abi;
    use crate::stub_elf::tests::notes;

    /// The line it prints (`message` in `stubs/xen_boot.s`).
    const MESSAGE: &[u8] = b"xen-boot-stub: hello from a minimal PV kernel\n";

    #[test]
    fn is_a_pv_elf_with_notes_message_and_room() {
        let elf = super::image().expect("assembles");
        let file = object::File::parse(&*elf).expect("parses");
        let seg = file.segments().next().expect("a PT_LOAD");
        let data = seg.data().expect("in the file");
        let base = seg.address();
        let at = |addr: u64| (addr - base) as usize;
        let notes = notes(&elf);
        let note = |ty: u32| {
            let n = notes.iter().find(|n| n.1 == ty).expect("the note");
            assert_eq!(n.0, b"Xen");
            n.2.clone()
        };
        let quad = |ty| u64::from_le_bytes(note(ty)[..].try_into().unwrap());
        // What libxenguest requires: a generic xen-3.0 kernel at VIRT_BASE 0 whose
        // entry is the ELF entry.
        assert_eq!(note(abi::XEN_ELFNOTE_LOADER), b"generic\0");
        assert_eq!(note(abi::XEN_ELFNOTE_XEN_VERSION), b"xen-3.0\0");
        assert_eq!(quad(abi::XEN_ELFNOTE_VIRT_BASE), 0);
        assert_eq!(quad(abi::XEN_ELFNOTE_ENTRY), file.entry());
        assert_eq!(file.entry(), base, "the code starts the segment");
        // The hypercall page is page-aligned and left for Xen to fill.
        let hp = quad(abi::XEN_ELFNOTE_HYPERCALL_PAGE);
        assert_eq!(hp % 4096, 0);
        assert!(data[at(hp)..at(hp) + 4096].iter().all(|&b| b == 0xcc));
        // The message is in the image and shorter than the ring (the code relies on it).
        let found = data.windows(MESSAGE.len()).any(|w| w == MESSAGE);
        assert!(found, "the message is in the loaded segment");
        assert!(MESSAGE.len() < abi::XENCONS_OUT_SIZE);
    }
}
