//! The Xen test bed: Xen 4.17 under QEMU (TCG), booting either a PV kernel directly as
//! dom0 (the fast path, ~1 s) or a Debian Linux dom0 whose init `xl create`s the app as a
//! domU (the path users take, ~15 s).
//!
//! Everything comes from Debian packages, fetched with `apt-get download` and unpacked
//! with `dpkg-deb -x` (nothing is installed), and is cached under `target/testbed/xen/`:
//! the first run takes a minute, later ones are instant. `docs/xen.md` describes the
//! bed. `rm -rf target/testbed/xen` starts over.
//!
//! The xl path's Linux dom0 is assembled in [`crate::testbed::dom0`] from Debian
//! packages ([`crate::testbed::debian`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::testbed::debian::{ensure_debs, unpack};
use crate::testbed::dom0::ensure_xl_testbed;
use crate::testbed::files::{rename, temp_path};
use crate::testbed::kernel::check_elf;
use crate::vmm::qemu::{self, QEMU};
use crate::{Failure, Outcome, fail, host};

/// The Debian package with the hypervisor.
const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// The gzipped hypervisor ELF inside [`XEN_PACKAGE`].
const XEN_GZ: &str = "boot/xen-4.17-amd64.gz";
/// Xen's command line, less `dom0_mem`. (Not `sync_console`: Xen then waits 3 s at boot.
/// Under QEMU the UART is always ready, so Xen writes each byte out at once anyway.)
pub(crate) const XEN_CMDLINE: &str = "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all";
/// QEMU memory (MiB) on the fast path beyond dom0's own (Xen and its heap).
const FAST_XEN_OVERHEAD_MB: u32 = 192;
/// The Linux dom0's command line.
pub(crate) const LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen rdinit=/init quiet";
/// Linux dom0's memory (MiB) on the xl path.
pub(crate) const LINUX_DOM0_MEM_MB: u32 = 512;
/// Serializes cache updates within this process (tests may boot in parallel threads;
/// across processes, every cache entry appears by an atomic rename).
pub(crate) static LOCK: Mutex<()> = Mutex::new(());

/// Where the Xen test bed lives (a cache; re-runs are instant).
pub fn cache_dir() -> PathBuf {
    host::target_dir().join("testbed/xen")
}

/// Downloads (`apt-get download`) and unpacks (`dpkg-deb -x`) Debian's
/// xen-hypervisor-4.17-amd64 and gunzips its `boot/xen-4.17-amd64.gz` into the plain ELF
/// that QEMU's multiboot loader wants; returns its path. Cached.
pub fn ensure_hypervisor() -> Result<PathBuf, Failure> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    hypervisor()
}

/// QEMU arguments that boot Xen with `kernel` (a 64-bit PV ELF) as dom0 with kernel
/// command line `cmdline` (TESTBEDS.md's recipe: qemu64 CPU plus RDRAND, TCG,
/// `-no-reboot`, isa-debug-exit at 0xf4, serial on stdio) with `dom0_mem=` `memory_mb`
/// (the app's memory, `--memory`) and room for Xen beside it. A
/// dom0 that shuts down with reason reboot ends QEMU with status 0; one that writes `v`
/// to port 0xf4 ends it with `(v << 1) | 1`. `kernel`'s path must not contain spaces
/// (QEMU splits a multiboot module's path from its command line at the first space).
/// With `vcpus` > 1, QEMU gets that many CPUs (multi-threaded TCG) and dom0 that many
/// vCPUs (`dom0_max_vcpus`), one per CPU.
pub fn dom0_qemu_args(
    xen: &Path,
    kernel: &Path,
    cmdline: &str,
    memory_mb: u32,
    vcpus: u32,
) -> Vec<String> {
    let mut a = machine_args(memory_mb + FAST_XEN_OVERHEAD_MB, vcpus);
    let smp = if vcpus > 1 {
        // Pinned, vCPU k on CPU k: left to Xen's scheduler, two vCPUs could share a
        // CPU for a time slice (tens of ms late wake-ups under TCG).
        format!(" dom0_max_vcpus={vcpus} dom0_vcpus_pin")
    } else {
        String::new()
    };
    a.extend([
        "-kernel".to_string(),
        xen.display().to_string(),
        "-append".to_string(),
        format!("{XEN_CMDLINE} dom0_mem={memory_mb}M{smp}"),
        "-initrd".to_string(),
        initrd_arg(&[(kernel, cmdline)]),
    ]);
    a
}

/// `cargo xtask testbed xen`: prepares both test beds, with progress; prints what it made.
pub fn command() -> Outcome {
    let start = Instant::now();
    let xen = ensure_hypervisor()?;
    let tb = ensure_xl_testbed()?;
    eprintln!(
        "xtask: Xen test bed ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!("hypervisor:        {}", xen.display());
    println!("dom0 Linux kernel: {}", tb.vmlinux.display());
    println!("dom0 initramfs:    {}", tb.initramfs.display());
    let kernel = Path::new("PV-KERNEL");
    println!(
        "boot a PV kernel as dom0:\n  {}",
        qemu::shell_words(QEMU, &dom0_qemu_args(&xen, kernel, "ARGS", 128, 1))
    );
    Ok(0)
}

/// QEMU arguments common to both paths: TCG (Xen cannot run under a software KVM),
/// `-cpu qemu64` (`max` makes a Linux dom0 crash through SMAP) with RDRAND (without it a
/// Linux dom0 has no entropy, and each `xl create` waits 3 s for libuuid's random
/// bytes), one CPU, no display, the serial port on stdio, isa-debug-exit.
/// `cpus` = 1: the fast path (the app is the only guest), or the app's vCPUs as dom0.
/// 1 + the domU's vCPUs for the xl path: the Linux dom0 is pinned to CPU 0 and the
/// app's domain to the others, so dom0's work (xenconsoled, the init's console pump)
/// does not delay the app (multi-threaded TCG runs each vCPU on its own host thread).
pub(crate) fn machine_args(memory_mb: u32, cpus: u32) -> Vec<String> {
    let accel = if cpus > 1 { "tcg,thread=multi" } else { "tcg" };
    let mut a: Vec<String> = ["-accel", accel, "-cpu", "qemu64,+rdrand", "-smp"]
        .map(String::from)
        .to_vec();
    a.push(cpus.to_string());
    a.push("-m".into());
    a.push(format!("{memory_mb}M"));
    a.extend(
        [
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            // Host threads named `CPU N/TCG`: lets `top -H` or schedstat tell which
            // vCPU waits for a host CPU.
            "-name",
            "upcall-xen,debug-threads=on",
        ]
        .map(String::from),
    );
    a
}

/// QEMU's `-initrd` value for multiboot modules: `path cmdline` each, separated by
/// commas, with the commas inside doubled.
pub(crate) fn initrd_arg(modules: &[(&Path, &str)]) -> String {
    modules
        .iter()
        .map(|(path, cmdline)| {
            let path = path.display().to_string();
            let module = if cmdline.is_empty() {
                path
            } else {
                format!("{path} {cmdline}")
            };
            double_commas(&module)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Escapes commas for QEMU option values.
fn double_commas(s: &str) -> String {
    s.replace(',', ",,")
}

/// [`ensure_hypervisor`] with the lock held.
pub(crate) fn hypervisor() -> Result<PathBuf, Failure> {
    let out = cache_dir().join("xen-4.17-amd64");
    if out.is_file() {
        return Ok(out);
    }
    let debs = ensure_debs(&[XEN_PACKAGE.to_string()])?;
    let dir = unpack(&debs[0], &[])?;
    eprintln!("xtask: Xen test bed: gunzip {XEN_GZ}");
    let tmp = temp_path(&out);
    let file =
        fs::File::create(&tmp).or_else(|e| fail(format!("create {}: {e}", tmp.display())))?;
    host::run_checked(
        Command::new("gzip")
            .arg("-dc")
            .arg(dir.join(XEN_GZ))
            .stdout(file),
        "gunzip of the Xen hypervisor",
    )?;
    check_elf(&tmp)?;
    rename(&tmp, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_doubles_commas() {
        assert_eq!(double_commas("a,b,,c"), "a,,b,,,,c");
        let arg = initrd_arg(&[(Path::new("/x,y/k"), "a=1,2 b"), (Path::new("/i.cpio"), "")]);
        assert_eq!(arg, "/x,,y/k a=1,,2 b,/i.cpio");
    }

    #[test]
    fn dom0_args_follow_the_recipe() {
        let a = dom0_qemu_args(Path::new("/x/xen"), Path::new("/k"), "reboot", 64, 1);
        let s = a.join(" ");
        assert!(!s.contains("dom0_max_vcpus") && !s.contains("thread=multi"));
        for part in [
            "-accel tcg",
            "-cpu qemu64,+rdrand",
            "-no-reboot",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-serial stdio",
            "-kernel /x/xen",
            "dom0_mem=64M",
            "-initrd /k reboot",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }

    #[test]
    fn dom0_gets_the_vcpus_asked_for() {
        let a = dom0_qemu_args(Path::new("/x/xen"), Path::new("/k"), "", 64, 2);
        let s = a.join(" ");
        for part in [
            "-smp 2",
            "tcg,thread=multi",
            "dom0_mem=64M dom0_max_vcpus=2 dom0_vcpus_pin",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }
}
