//! Xen through libvirt: the opt-in libvirt flavour of the Xen test bed. Its Linux dom0
//! is the xl bed's plus libvirtd with the libxl driver, virsh and their libraries
//! (resolved from the Debian package index by [`crate::testbed::deb_deps`]: ~50 more packages,
//! ~70 MB, most of it ICU data); its init starts libvirtd and creates each domain with
//! `virsh define` + `virsh start` from the domain XML `cargo xtask libvirt --platform
//! xen` prints, then waits until libvirt reports it shut off (`xen_dom0_libvirt.sh`).
//! The default dom0, which every Xen test boots, is untouched: this one is a separate
//! cache entry (`target/testbed/xen/xlv-*`).
//!
//! Used by `cargo xtask libvirt APP --platform xen --run` and by the opt-in test cases
//! (`cargo xtask test --libvirt-xen`, run by [`crate::test::libvirt_xen`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::testbed::deb_deps::Index;
use crate::testbed::dom0;
use crate::testbed::initramfs::{Node, Tree};
use crate::vmm::libvirt::{self, Domain};
use crate::vmm::qemu::{self, QEMU};
use crate::vmm::xl_run::{self, XlDomain};
use crate::{Failure, MachineArg, Outcome, Platform, fail, vmm};

/// Bumped when the flavour's initramfs layout changes (part of its cache key, with the
/// init part [`INIT`]).
pub(crate) const FORMAT: &str = "libvirt-xen-1";
/// The init's libvirt part (`/libvirt.sh`, sourced by `xen_dom0_init.sh`).
pub(crate) const INIT: &str = include_str!("xen_dom0_libvirt.sh");
/// What the dom0 runs: libvirtd with the libxl driver, and virsh.
const ROOTS: &[&str] = &["libvirt-daemon-driver-xen", "libvirt-clients"];
/// Dependencies whose files the dom0 never uses (maintainer-script tools, and the QEMU
/// driver that `libvirt-daemon` depends on): not taken, not followed.
const STOP: &[&str] = &[
    "dpkg",
    "tar",
    "install-info",
    "dmidecode",
    "dmsetup",
    "sensible-utils",
    "readline-common",
    "libvirt-daemon-driver-qemu",
];
/// The programs of the root packages that go into the dom0.
const PROGRAMS: &[&str] = &["usr/sbin/libvirtd", "usr/bin/virsh"];
/// The QEMU CPU of the libvirt flavour. libvirt's libxl driver matches the host CPU
/// against its CPU map when it starts; with plain `qemu64` it finds no model and
/// libvirtd fails ("Cannot find suitable CPU model"). RDRAND as in the default bed.
pub(crate) const CPU: &str = "qemu64,+rdrand,vendor=GenuineIntel";
/// Seconds for Xen, dom0 and libvirtd to come up, beyond the domain's own timeout.
const BOOT_SECS: u64 = 120;
/// A domain's timeout when `--timeout` is 0.
const DEFAULT_TIMEOUT: u32 = 300;

/// The packages the libvirt flavour adds to the dom0 (those in `base` are there
/// already): the closure of [`ROOTS`] over the package index (`apt-cache dumpavail`).
pub(crate) fn packages(base: &[&str]) -> Result<Vec<String>, Failure> {
    let out = crate::vmm::child::output(Command::new("apt-cache").arg("dumpavail"))
        .or_else(|e| fail(format!("cannot run apt-cache dumpavail: {e}")))?;
    if !out.status.success() {
        return fail("apt-cache dumpavail failed (is this Debian?)");
    }
    let index = Index::parse(&String::from_utf8_lossy(&out.stdout));
    let all = index.closure(ROOTS, STOP).or_else(|e| {
        fail(format!(
            "libvirt flavour of the Xen test bed: {e} (stale package lists? \
             run `sudo apt-get update`)"
        ))
    })?;
    Ok(all
        .into_iter()
        .filter(|p| !base.contains(&p.as_str()))
        .collect())
}

/// Whether the dom0 takes `path` of a libvirt package: shared libraries (of libvirt's
/// loadable modules only the libxl driver), the CPU map, and [`PROGRAMS`].
fn keep(path: &str) -> bool {
    let lib = path.starts_with("lib/")
        || path.starts_with("lib64/")
        || path.starts_with("usr/lib/x86_64-linux-gnu/");
    let module = path.contains("/libvirt/");
    (lib && !path.contains("/gconv/") && (!module || path.ends_with("/libvirt_driver_libxl.so")))
        || path.starts_with("usr/share/libvirt/cpu_map/")
        || PROGRAMS.contains(&path)
}

/// Adds the libvirt packages' files (see [`keep`]), the init's libvirt part, and what
/// libvirtd needs of a system: `/etc/passwd`, `/etc/group`, `/var/run` → `/run`.
pub(crate) fn add_to_tree(t: &mut Tree, unpacked: &BTreeMap<&str, PathBuf>) -> Result<(), Failure> {
    for dir in unpacked.values() {
        t.add_tree(dir, &keep)?;
    }
    for program in PROGRAMS {
        if !t.0.contains_key(*program) {
            return fail(format!(
                "libvirt flavour of the Xen test bed: no package provided /{program}"
            ));
        }
    }
    t.insert("libvirt.sh", Node::Data(INIT.as_bytes().to_vec(), 0o644));
    t.insert(
        "etc/passwd",
        Node::Data(b"root:x:0:0:root:/root:/bin/sh\n".to_vec(), 0o644),
    );
    t.insert("etc/group", Node::Data(b"root:x:0:\n".to_vec(), 0o644));
    t.insert("var/run", Node::Symlink("/run".into()));
    Ok(())
}

/// The libvirt domain XML for domain `name` of an xl run, its kernel at `kernel` in
/// dom0: what `cargo xtask libvirt --platform xen` prints for the same image.
pub(crate) fn domain_xml(name: &str, kernel: &str, d: &XlDomain) -> Result<String, Failure> {
    if d.net.is_some() || d.settle || d.ramdisk.is_some() || !d.actions.is_empty() {
        return fail(
            "libvirt flavour of the Xen test bed: a domain with a network, a ramdisk, \
             toolstack actions or paused creation is not supported",
        );
    }
    libvirt::domain_xml(&Domain {
        name: name.to_string(),
        platform: Platform::Xen,
        machine: MachineArg::Pc,
        kvm_accel: false,
        smp: d.vcpus,
        memory_mb: d.memory_mb,
        image: PathBuf::from(kernel),
        cmdline: d.cmdline.clone(),
        console: PathBuf::new(),
        net: None,
    })
    .or_else(fail)
}

/// Replaces the `-cpu` value of QEMU arguments with [`CPU`].
pub(crate) fn set_cpu(args: &mut [String]) {
    if let Some(i) = args.iter().position(|a| a == "-cpu")
        && let Some(v) = args.get_mut(i + 1)
    {
        *v = CPU.to_string();
    }
}

/// The dom0 init's `xen-testbed: libvirt: domain NAME …` lines for domain `name`, last
/// first.
fn reports<'a>(output: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    output.lines().rev().filter_map(move |l| {
        l.trim_end_matches('\r')
            .strip_prefix("xen-testbed: libvirt: domain ")?
            .strip_prefix(name)?
            .strip_prefix(' ')
    })
}

/// What libvirt reported for domain `name` in an xl run's output (the dom0 init's
/// `xen-testbed: libvirt: domain NAME STATE` line), e.g. `shut off (shutdown)`.
pub fn reported_state<'a>(output: &'a str, name: &'a str) -> Option<&'a str> {
    reports(output, name).find(|r| !r.starts_with("events: "))
}

/// libvirt's lifecycle events for domain `name` in an xl run's output (the dom0 init's
/// `xen-testbed: libvirt: domain NAME events: A;B;` line), e.g. `Stopped Shutdown`.
pub fn reported_events<'a>(output: &'a str, name: &'a str) -> Vec<&'a str> {
    reports(output, name)
        .find_map(|r| r.strip_prefix("events: "))
        .map(|list| {
            list.split(';')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The xl-run domain for an image.
pub(crate) fn xl_domain(
    image: &Path,
    cmdline: &str,
    memory_mb: u32,
    vcpus: u32,
    timeout: u32,
) -> XlDomain {
    XlDomain {
        image: image.to_path_buf(),
        cmdline: cmdline.to_string(),
        memory_mb,
        vcpus,
        actions: Vec::new(),
        timeout_secs: timeout,
        stream: true,
        settle: false,
        net: None,
        ramdisk: None,
    }
}

/// `cargo xtask libvirt APP --platform xen --run`: boots the libvirt flavour of the Xen
/// test bed, whose dom0 creates `d` through libvirt; streams the console, says what
/// libvirt reported, and exits with the app's status.
pub fn run(d: &Domain, timeout: u64) -> Outcome {
    qemu::ensure_qemu()?;
    let tb = dom0::ensure_libvirt_xl_testbed()?;
    let timeout = match u32::try_from(timeout) {
        Ok(0) | Err(_) => DEFAULT_TIMEOUT,
        Ok(t) => t,
    };
    let domain = xl_domain(&d.image, &d.cmdline, d.memory_mb, d.smp, timeout);
    let run = xl_run::xl_run_qemu_args(&tb, &[domain])?;
    let mut cmd = Command::new(QEMU);
    cmd.args(&run.qemu_args);
    eprintln!("xtask: libvirt: booting Xen + the dom0 with libvirtd (libxl) in QEMU (TCG)");
    let c = vmm::run_captured_filtered(
        cmd,
        &d.image,
        BOOT_SECS + u64::from(timeout),
        true,
        &["(XEN)"],
    )?;
    if !c.stderr.trim().is_empty() {
        eprint!("{}", c.stderr);
    }
    let state = reported_state(&c.stdout, &run.names[0]);
    let events = reported_events(&c.stdout, &run.names[0]);
    eprintln!(
        "xtask: libvirt (libxl, in the Xen test bed's dom0): {}; events {}",
        state.map_or("no report of the domain's end".to_string(), |s| {
            format!("domain {s}")
        }),
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(", ")
        }
    );
    if c.timed_out {
        eprintln!(
            "xtask: QEMU killed after {} s",
            BOOT_SECS + u64::from(timeout)
        );
        return Ok(qemu::NO_STATUS);
    }
    Ok(qemu::decode_status(c.code)
        .and_then(|s| u8::try_from(s).ok())
        .unwrap_or(qemu::NO_STATUS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_libraries_the_libxl_driver_the_cpu_map_and_the_programs() {
        for yes in [
            "usr/lib/x86_64-linux-gnu/libvirt.so.0.9000.0",
            "usr/lib/x86_64-linux-gnu/libicudata.so.72.1",
            "lib/x86_64-linux-gnu/libtinfo.so.6",
            "usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_libxl.so",
            "usr/share/libvirt/cpu_map/x86_Nehalem.xml",
            "usr/sbin/libvirtd",
            "usr/bin/virsh",
        ] {
            assert!(keep(yes), "{yes}");
        }
        for no in [
            "usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_network.so",
            "usr/lib/x86_64-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_fs.so",
            "usr/lib/x86_64-linux-gnu/gconv/UTF-16.so",
            "usr/bin/virt-admin",
            "usr/share/doc/libvirt0/copyright",
            "etc/libvirt/libvirt.conf",
        ] {
            assert!(!keep(no), "{no}");
        }
    }

    #[test]
    fn the_state_line_is_read_for_the_right_domain() {
        let out = "xen-testbed: libvirt: domain hello-1 shut off (crashed)\n\
                   xen-testbed: libvirt: domain hello shut off (shutdown)\r\n\
                   xen-testbed: libvirt: domain hello events: Defined Added;Started Booted;\
                   Stopped Shutdown;\n";
        assert_eq!(reported_state(out, "hello"), Some("shut off (shutdown)"));
        assert_eq!(
            reported_events(out, "hello"),
            ["Defined Added", "Started Booted", "Stopped Shutdown"]
        );
        assert!(reported_events(out, "hello-1").is_empty());
        assert_eq!(reported_state(out, "hello-1"), Some("shut off (crashed)"));
        assert_eq!(reported_state(out, "hell"), None);
        assert_eq!(reported_state("", "hello"), None);
    }

    #[test]
    fn the_cpu_is_one_libvirt_knows_and_xml_is_the_printed_one() {
        let mut a = crate::testbed::xen::machine_args(1024, 2);
        set_cpu(&mut a);
        let i = a.iter().position(|s| s == "-cpu").unwrap();
        assert_eq!(a[i + 1], CPU);
        let d = xl_domain(Path::new("/x/hello"), "a \"b c\"", 128, 1, 60);
        let x = domain_xml("hello", "/dom/1/kernel", &d).unwrap();
        assert!(x.contains("<domain type='xen'>"), "{x}");
        assert!(x.contains("<kernel>/dom/1/kernel</kernel>"), "{x}");
        assert!(x.contains("<cmdline>a &quot;b c&quot;</cmdline>"), "{x}");
        let mut net = d.clone();
        net.net = Some(Vec::new());
        assert!(domain_xml("hello", "/k", &net).is_err());
    }

    #[test]
    fn init_part_is_valid_shell() {
        use std::io::Write;
        let mut sh = Command::new("sh")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        sh.stdin.take().unwrap().write_all(INIT.as_bytes()).unwrap();
        assert!(sh.wait().unwrap().success(), "sh -n rejects INIT");
    }
}
