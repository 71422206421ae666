//! Cases for the managed-VM way of ending (no `isa-debug-exit`): plain QEMU, and
//! domains on this host's libvirt (`cargo xtask libvirt`). Run by xtask's
//! `libvirt_test`; each [`Case`] here uses `bed` for the machine and `status` for the
//! app's exit status as the console line `upcall: exit status N` reports it.

use crate::expect::SELFTEST_SMP;
use crate::{Bed, Case, Machine, PANIC, case};

/// How a plain-QEMU run without `isa-debug-exit` must end.
#[derive(Debug, Clone)]
pub struct PlainCase {
    /// The case (its `bed` names the machine).
    pub case: Case,
    /// Add QEMU's ISA pvpanic device with `-action panic=exit-failure` (QEMU then exits
    /// with status 1 when the guest reports a panic, and 0 on a poweroff).
    pub pvpanic: bool,
    /// QEMU's own exit status (it ended by itself, not killed).
    pub qemu_status: i32,
}

/// What libvirt must report at the end of a domain's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `Stopped Shutdown`: the guest powered off (ACPI).
    Shutdown,
    /// `Crashed Panicked`, then `Stopped Crashed` (pvpanic).
    Panicked,
    /// The guest serves HTTP on a tap: `curl http://GUEST/PATH` must answer with a body
    /// containing the text; then the domain is destroyed (`Stopped Destroyed`).
    Serves {
        /// The path to fetch.
        path: &'static str,
        /// Text the body must contain.
        body: &'static str,
    },
}

/// A domain run through `cargo xtask libvirt --run`.
#[derive(Debug, Clone)]
pub struct LibvirtCase {
    /// The case (machine in `bed`, vCPUs in `smp`, status and console expectations).
    pub case: Case,
    /// What libvirt reports.
    pub end: End,
}

/// Plain QEMU without `isa-debug-exit`: the image powers off by ACPI on every machine
/// (QEMU exits by itself, status 0), and reports a panic through pvpanic.
pub fn plain_cases() -> Vec<PlainCase> {
    let off = |name: &str, m: Machine, power: &'static [&'static str]| PlainCase {
        case: case(name, "hello", &[]).on(m).expect(power),
        pvpanic: false,
        qemu_status: 0,
    };
    vec![
        off(
            "acpi-poweroff/microvm/hello",
            Machine::Microvm,
            &[
                "Hello from Upcall on kvm",
                "upcall: exit status 0",
                "powering off (ACPI sleep control",
            ],
        ),
        off(
            "acpi-poweroff/pc-qboot/hello",
            Machine::PcQboot,
            &[
                "Hello from Upcall on kvm",
                "upcall: exit status 0",
                "powering off (ACPI PM1a control",
            ],
        ),
        off(
            "acpi-poweroff/pc/hello",
            Machine::PcSeabios,
            &[
                "Hello from Upcall on kvm",
                "upcall: exit status 0",
                "powering off (ACPI PM1a control",
            ],
        ),
        PlainCase {
            case: case("pvpanic/microvm/crash-task", "crash", &["task"])
                .status(PANIC)
                .expect(&[
                    "panicked at apps/crash/src/lib.rs",
                    "upcall: exit status 101",
                ]),
            pvpanic: true,
            qemu_status: 1,
        },
    ]
}

/// KVM domains on libvirt (`qemu:///system`), one per machine kind.
pub fn libvirt_cases() -> Vec<LibvirtCase> {
    vec![
        LibvirtCase {
            case: case("libvirt/kvm/pc/hello", "hello", &[])
                .on(Machine::PcSeabios)
                .expect(&[
                    "Hello from Upcall on kvm",
                    "upcall: exit status 0",
                    "powering off",
                ]),
            end: End::Shutdown,
        },
        LibvirtCase {
            case: case("libvirt/kvm/microvm/crash-task", "crash", &["task"])
                .status(PANIC)
                .expect(&[
                    "panicked at apps/crash/src/lib.rs",
                    "upcall: exit status 101",
                ]),
            end: End::Panicked,
        },
        LibvirtCase {
            case: case(
                "libvirt/kvm/qboot/smp2-selftest",
                "selftest",
                &["expect-cpus=2"],
            )
            .on(Machine::PcQboot)
            .smp(2)
            .expect(SELFTEST_SMP),
            end: End::Shutdown,
        },
        LibvirtCase {
            // qboot: libvirt puts the card in slot 2 (see `slot_cases`).
            case: case("libvirt/kvm/qboot/httpd-tap", "httpd", &[])
                .on(Machine::PcQboot)
                .expect(&["(static) gateway", "httpd: serving"]),
            end: End::Serves {
                path: "/status",
                body: "requests=",
            },
        },
    ]
}

/// A virtio-net card placed as libvirt places it on `-M pc` when the domain has no
/// video card (PCI slot 2), on plain QEMU with user networking: the app (httpd) must
/// answer `curl /status` through a forwarded port.
#[derive(Debug, Clone)]
pub struct SlotCase {
    /// The case (machine in `bed`; console expectations).
    pub case: Case,
    /// The card's PCI slot on bus 0.
    pub slot: u8,
}

/// libvirt's device layout on plain QEMU: qboot notes a different INTx line in slot 2
/// than the board raises, so the driver must follow the PIIX3's routing.
pub fn slot_cases() -> Vec<SlotCase> {
    vec![SlotCase {
        case: case(
            "libvirt-layout/pc-qboot/nic-in-slot-2/httpd-curl",
            "httpd",
            &[],
        )
        .on(Machine::PcQboot)
        .expect(&["(dhcp) gateway", "httpd: serving"]),
        slot: 2,
    }]
}

/// A Xen PV domain that libvirtd's libxl driver defines and starts inside the Xen test
/// bed's dom0 (its opt-in libvirt flavour: `cargo xtask test --libvirt-xen`).
#[derive(Debug, Clone)]
pub struct XenLibvirtCase {
    /// The case (its console and the app's exit status).
    pub case: Case,
    /// How libvirt must report the domain's end (`virsh domstate --reason`).
    pub libvirt_state: &'static str,
    /// The lifecycle event libvirt must emit at the end (what Nova listens to).
    pub libvirt_event: &'static str,
}

/// Xen PV domains created through libvirt (opt-in, see [`XenLibvirtCase`]).
pub fn xen_libvirt_cases() -> Vec<XenLibvirtCase> {
    let hello = case("xen/libvirt/hello", "hello", &["a", "b c"])
        .on(Bed::XenXl)
        .expect(&[
            "Hello from Upcall on xen",
            "arg[0] = a",
            "arg[1] = b c",
            "upcall: exit status 0",
        ]);
    let crash = case("xen/libvirt/crash-task", "crash", &["task"])
        .on(Bed::XenXl)
        .status(PANIC)
        .expect(&[
            "panicked at apps/crash/src/lib.rs",
            "upcall: exit status 101",
        ]);
    vec![
        XenLibvirtCase {
            case: hello,
            libvirt_state: "shut off (shutdown)",
            libvirt_event: "Stopped Shutdown",
        },
        XenLibvirtCase {
            case: crash,
            libvirt_state: "shut off (crashed)",
            libvirt_event: "Stopped Crashed",
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cover_every_machine() {
        let mut names: Vec<String> = plain_cases()
            .into_iter()
            .map(|c| c.case.name)
            .chain(libvirt_cases().into_iter().map(|c| c.case.name))
            .chain(xen_libvirt_cases().into_iter().map(|c| c.case.name))
            .chain(slot_cases().into_iter().map(|c| c.case.name))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for m in [Machine::Microvm, Machine::PcQboot, Machine::PcSeabios] {
            assert!(
                plain_cases()
                    .iter()
                    .any(|c| c.case.bed == crate::Bed::Qemu(m) && !c.pvpanic)
            );
        }
    }
}
