//! The Xen test bed: Xen 4.17 under QEMU (TCG), booting either a PV kernel directly as
//! dom0 (the fast path, ~1 s) or a Debian Linux dom0 whose init `xl create`s the app as a
//! domU (the path users take, ~15 s).
//!
//! Everything comes from Debian packages, fetched with `apt-get download` and unpacked
//! with `dpkg-deb -x` (nothing is installed), and is cached under `target/testbed/xen/`:
//! the first run takes a minute, later ones are instant. `docs/xen.md` describes the
//! bed. `rm -rf target/testbed/xen` starts over.
//!
//! The xl path's dom0 initramfs is built once (keyed on the packages and the init
//! script); each run appends a small second cpio archive holding `/app`, its xl config
//! and its settings, which Linux unpacks over the first.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::initramfs::{Fnv, Node, Tree};
use crate::qemu::{self, QEMU};
use crate::{Failure, Outcome, fail, host, vmm};

/// The Debian package with the hypervisor.
const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// The gzipped hypervisor ELF inside [`XEN_PACKAGE`].
const XEN_GZ: &str = "boot/xen-4.17-amd64.gz";
/// The Debian meta package naming the current kernel package.
const KERNEL_META: &str = "linux-image-amd64";
/// Packages whose files go into the dom0 initramfs (besides the kernel's modules).
const DOM0_PACKAGES: &[&str] = &[
    "busybox-static",
    "xen-utils-4.17",
    "libxenmisc4.17",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenstore4",
    "libxentoollog1",
    "libxenhypfs1",
    "libxendevicemodel1",
    "libxentoolcore1",
    "libyajl2",
    "libc6",
    "liblzma5",
    "libuuid1",
    "zlib1g",
    "libzstd1",
    "libgcc-s1",
    crate::xen_net::PACKAGE,
];
/// Where xen-utils keeps its programs.
const XEN_BIN: &str = "usr/lib/xen-4.17/bin";
/// The xen-utils programs dom0 runs.
const XEN_TOOLS: &[&str] = &["xl", "xenstored", "xenconsoled", "xen-init-dom0"];
/// Kernel modules dom0 loads, in load order (xenfs needs xen-privcmd).
const MODULES: &[&str] = &[
    "xen-privcmd",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xenfs",
];
/// Files of the kernel package that are unpacked (`tar` wildcards).
const KERNEL_FILES: &[&str] = &["./boot/vmlinuz-*", "./lib/modules/*/kernel/drivers/xen/*"];
/// Xen's command line, less `dom0_mem`. (Not `sync_console`: Xen then waits 3 s at boot.
/// Under QEMU the UART is always ready, so Xen writes each byte out at once anyway.)
pub(crate) const XEN_CMDLINE: &str = "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all";
/// QEMU memory (MiB) on the fast path beyond dom0's own (Xen and its heap).
const FAST_XEN_OVERHEAD_MB: u32 = 192;
/// The Linux dom0's command line.
pub(crate) const LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen rdinit=/init quiet";
/// Linux dom0's memory (MiB) on the xl path.
pub(crate) const LINUX_DOM0_MEM_MB: u32 = 512;
/// Bumped whenever the initramfs layout changes, to rebuild cached ones.
const FORMAT: &str = "xen-testbed-3";

/// The Linux dom0's `/init` (`xen_dom0_init.sh`): starts the Xen daemons, then for each directory listed in
/// `/domains`, one after another: `xl create`s its `kernel` with its `cfg`, streams the
/// domain's console log (framed by `xen-testbed: domain NAME begins` and
/// `xen-testbed: domain NAME exit status N`, see [`crate::xl_output`]; the files
/// come from [`crate::xl_run`]), runs the
/// domain's toolstack actions when its console shows their text, and destroys it after
/// its timeout. Finally it ends QEMU with the last domain's exit status through
/// isa-debug-exit (port 0xf4, reached through `/dev/port`).
const INIT: &str = include_str!("xen_dom0_init.sh");

/// Serializes cache updates within this process (tests may boot in parallel threads;
/// across processes, every cache entry appears by an atomic rename).
static LOCK: Mutex<()> = Mutex::new(());

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

/// The Linux-dom0 test bed for `xl create`.
#[derive(Debug, Clone)]
pub struct XlTestbed {
    /// The hypervisor (plain ELF).
    pub xen: PathBuf,
    /// The dom0 kernel's ELF, cut out of Debian's bzImage.
    pub vmlinux: PathBuf,
    /// The dom0 initramfs (uncompressed cpio) without any app.
    pub initramfs: PathBuf,
    /// The libvirt flavour ([`ensure_libvirt_xl_testbed`]): domains are created by
    /// libvirtd's libxl driver from domain XML instead of by `xl create`.
    pub libvirt: bool,
}

/// Prepares the Linux-dom0 test bed for `xl create`: the hypervisor, Debian's kernel as
/// an ELF, and an initramfs with busybox, the xen-utils daemons and `xl`, their
/// libraries, the Xen kernel modules and the test bed's `/init`. Cached, keyed on the
/// package files and the init script.
pub fn ensure_xl_testbed() -> Result<XlTestbed, Failure> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    xl_testbed(None)
}

/// The libvirt flavour of the Linux-dom0 test bed (opt-in; see [`crate::libvirt_xen`]):
/// the same dom0 plus libvirtd with the libxl driver, virsh and their libraries (a
/// separate, larger initramfs; the default one is unchanged).
pub fn ensure_libvirt_xl_testbed() -> Result<XlTestbed, Failure> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let extra = crate::libvirt_xen::packages(DOM0_PACKAGES)?;
    xl_testbed(Some(&extra))
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
fn hypervisor() -> Result<PathBuf, Failure> {
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

/// [`ensure_xl_testbed`] (`libvirt`: `None`) or [`ensure_libvirt_xl_testbed`] (the
/// libvirt packages) with the lock held.
fn xl_testbed(libvirt: Option<&[String]>) -> Result<XlTestbed, Failure> {
    let xen = hypervisor()?;
    let mut packages = vec![kernel_package()?];
    packages.extend(DOM0_PACKAGES.iter().map(|p| p.to_string()));
    let base = packages.len();
    packages.extend(libvirt.unwrap_or_default().iter().cloned());
    let debs = ensure_debs(&packages)?;
    let mut key = Fnv::new();
    key.add(FORMAT.as_bytes());
    key.add(INIT.as_bytes());
    if libvirt.is_some() {
        key.add(crate::libvirt_xen::FORMAT.as_bytes());
        key.add(crate::libvirt_xen::INIT.as_bytes());
    }
    for deb in &debs {
        key.add(deb.file_name().unwrap_or_default().as_encoded_bytes());
    }
    // The flavours are cached side by side; each cleans up only its own old entries.
    let prefix = if libvirt.is_some() { "xlv-" } else { "xl-" };
    let name = format!("{prefix}{:016x}", key.finish());
    let dir = cache_dir().join(&name);
    let tb = XlTestbed {
        xen,
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio"),
        libvirt: libvirt.is_some(),
    };
    if tb.vmlinux.is_file() && tb.initramfs.is_file() {
        return Ok(tb);
    }
    let start = Instant::now();
    eprintln!(
        "xtask: Xen test bed: assembling the Linux dom0 in {} (once)",
        dir.display()
    );
    let kernel_files: Vec<&str> = KERNEL_FILES
        .iter()
        .chain(crate::xen_net::KERNEL_FILES)
        .copied()
        .collect();
    let kernel = unpack(&debs[0], &kernel_files)?;
    let mut unpacked = BTreeMap::new();
    let mut unpacked_libvirt = BTreeMap::new();
    for (k, (package, deb)) in packages.iter().zip(&debs).enumerate().skip(1) {
        let into = if k < base {
            &mut unpacked
        } else {
            &mut unpacked_libvirt
        };
        into.insert(package.as_str(), unpack(deb, &[])?);
    }
    let tmp = temp_path(&dir);
    mkdir(&tmp)?;
    let built = (|| {
        let vmlinuz = only_file(&kernel.join("boot"), "vmlinuz-")?;
        eprintln!(
            "xtask: Xen test bed: extracting vmlinux from {}",
            vmlinuz.display()
        );
        extract_vmlinux(&vmlinuz, &tmp.join("vmlinux"))?;
        eprintln!("xtask: Xen test bed: writing the dom0 initramfs");
        let mut tree = dom0_tree(&kernel, &unpacked)?;
        if libvirt.is_some() {
            crate::libvirt_xen::add_to_tree(&mut tree, &unpacked_libvirt)?;
            tree.check_libraries()?;
        }
        tree.write(&tmp.join("initramfs.cpio"))
    })();
    if built.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        built?;
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        // Another process may have finished first: use its copy.
        let _ = fs::remove_dir_all(&tmp);
        if !(tb.vmlinux.is_file() && tb.initramfs.is_file()) {
            return fail(format!(
                "rename {} to {}: {e}",
                tmp.display(),
                dir.display()
            ));
        }
    }
    // Earlier versions of the dom0 (a new kernel package, a changed init) are garbage.
    for entry in fs::read_dir(cache_dir()).into_iter().flatten().flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if other.starts_with(prefix) && other != name && !other.contains(".tmp") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    eprintln!(
        "xtask: Xen test bed: dom0 assembled in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(tb)
}

/// The file in `dir` whose name starts with `prefix`; fails unless there is exactly one.
pub(crate) fn only_file(dir: &Path, prefix: &str) -> Result<PathBuf, Failure> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    match &found[..] {
        [one] => Ok(one.clone()),
        _ => fail(format!(
            "Xen test bed: expected one {prefix}* in {}, found {}",
            dir.display(),
            found.len()
        )),
    }
}

/// The dom0's root file system: busybox, the Xen tools and every library of the
/// library packages, the Xen modules, device and mount-point directories, `/init`.
fn dom0_tree(kernel: &Path, unpacked: &BTreeMap<&str, PathBuf>) -> Result<Tree, Failure> {
    let mut t = Tree::default();
    for dir in [
        "proc", "sys", "dev", "tmp", "run", "etc/xen", "var/log", "var/lib",
    ] {
        t.insert(dir, Node::Dir);
    }
    t.insert("dev/console", Node::CharDev(5, 1));
    t.insert("bin/sh", Node::Symlink("busybox".into()));
    t.insert("init", Node::Data(INIT.as_bytes().to_vec(), 0o755));
    t.insert("etc/xen/xl.conf", Node::Data(Vec::new(), 0o644));
    for (package, dir) in unpacked {
        match *package {
            "busybox-static" => t.add_file(dir, "bin/busybox")?,
            "xen-utils-4.17" => {
                for tool in XEN_TOOLS {
                    t.add_file(dir, &format!("{XEN_BIN}/{tool}"))?;
                }
            }
            _ => t.add_tree(dir, &|path: &str| {
                (path.starts_with("lib/")
                    || path.starts_with("lib64/")
                    || path.starts_with("usr/lib/x86_64-linux-gnu/"))
                    && !path.contains("/gconv/")
            })?,
        }
    }
    let modules = only_file(&kernel.join("lib/modules"), "")?.join("kernel/drivers/xen");
    for module in MODULES {
        let name = format!("{module}.ko");
        let path = [modules.join(&name), modules.join(module).join(&name)]
            .into_iter()
            .find(|p| p.is_file());
        let Some(path) = path else {
            return fail(format!(
                "Xen test bed: kernel module {name} not found under {}",
                modules.display()
            ));
        };
        t.insert(&format!("modules/{name}"), Node::File(path, 0o644));
    }
    let Some(xenstore_utils) = unpacked.get(crate::xen_net::PACKAGE) else {
        return fail(format!(
            "Xen test bed: {} was not unpacked",
            crate::xen_net::PACKAGE
        ));
    };
    crate::xen_net::add_to_tree(&mut t, kernel, xenstore_utils)?;
    t.check_libraries()?;
    Ok(t)
}

/// The kernel package that [`KERNEL_META`] depends on: the one already downloaded, else
/// asked of `apt-cache`.
pub(crate) fn kernel_package() -> Result<String, Failure> {
    let debs = cache_dir().join("debs");
    let mut have: Vec<String> = fs::read_dir(&debs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
        .filter_map(|n| n.split('_').next().map(str::to_string))
        .filter(|p| p != KERNEL_META)
        .collect();
    have.sort();
    if let Some(p) = have.pop() {
        return Ok(p);
    }
    for attempt in 0..2 {
        let out = Command::new("apt-cache")
            .args(["depends", KERNEL_META])
            .output()
            .or_else(|e| fail(format!("cannot start apt-cache: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let dep = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"));
        if let Some(p) = dep {
            return Ok(p.to_string());
        }
        if attempt == 0 {
            apt_update()?;
        }
    }
    fail(format!(
        "Xen test bed: apt-cache does not know {KERNEL_META} (is this Debian?)"
    ))
}

/// The `.deb` files of `packages` (same order), downloading the missing ones into
/// [`cache_dir`]`/debs` with one `apt-get download`.
pub(crate) fn ensure_debs(packages: &[String]) -> Result<Vec<PathBuf>, Failure> {
    let dir = cache_dir().join("debs");
    mkdir(&dir)?;
    let find = |package: &str| -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        found.pop()
    };
    let missing: Vec<&String> = packages.iter().filter(|p| find(p).is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|p| p.as_str()).collect();
        eprintln!(
            "xtask: Xen test bed: apt-get download {} (into {})",
            names.join(" "),
            dir.display()
        );
        let download = || {
            Command::new("apt-get")
                // As root, apt downloads as user _apt, who may not write to `dir`.
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                .args(&names)
                .current_dir(&dir)
                .status()
        };
        match download() {
            Ok(s) if s.success() => {}
            Ok(_) => {
                // Stale or missing package lists are the usual cause.
                apt_update()?;
                host::run_checked(
                    Command::new("apt-get")
                        .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                        .args(&names)
                        .current_dir(&dir),
                    "apt-get download",
                )?;
            }
            Err(e) => return fail(format!("cannot start apt-get: {e}")),
        }
    }
    packages
        .iter()
        .map(|p| match find(p) {
            Some(deb) => Ok(deb),
            None => fail(format!("apt-get download did not produce {p}_*.deb")),
        })
        .collect()
}

/// `apt-get update` where that is possible (root), else a failure naming the command.
fn apt_update() -> Result<(), Failure> {
    if !is_root() {
        return fail("Xen test bed: apt cannot find the packages; run `sudo apt-get update`");
    }
    eprintln!("xtask: Xen test bed: apt-get update");
    host::run_checked(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )
}

/// Whether we run as root.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Unpacks `deb` (only the members matching the `tar` wildcards `only`, if given) into
/// [`cache_dir`]`/unpacked/<deb name>`, unless already there; returns that directory.
pub(crate) fn unpack(deb: &Path, only: &[&str]) -> Result<PathBuf, Failure> {
    let mut stem = deb
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if !only.is_empty() {
        // A different selection is a different cache entry.
        let mut h = Fnv::new();
        only.iter().for_each(|o| h.add(o.as_bytes()));
        stem.push_str(&format!("-{:08x}", h.finish() as u32));
    }
    let dir = cache_dir().join("unpacked").join(&stem);
    if dir.is_dir() {
        return Ok(dir);
    }
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    eprintln!("xtask: Xen test bed: unpacking {name}");
    let tmp = temp_path(&dir);
    mkdir(&tmp)?;
    let unpacked = extract(deb, only, &tmp);
    if unpacked.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        unpacked?;
    }
    rename(&tmp, &dir)?;
    Ok(dir)
}

/// `dpkg-deb -x deb dir`, or only the members matching `only` through `tar`.
pub(crate) fn extract(deb: &Path, only: &[&str], dir: &Path) -> Result<(), Failure> {
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    if only.is_empty() {
        host::run_checked(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir),
            &format!("dpkg-deb -x {name}"),
        )
    } else {
        let mut dpkg = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(deb)
            .stdout(Stdio::piped())
            .spawn()
            .or_else(|e| fail(format!("cannot start dpkg-deb: {e}")))?;
        let tar = host::run_checked(
            Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(dir)
                .arg("--wildcards")
                .args(only)
                .stdin(dpkg.stdout.take().expect("stdout is piped")),
            &format!("tar -x of {name}"),
        );
        let dpkg = dpkg.wait();
        tar?;
        if !dpkg.is_ok_and(|s| s.success()) {
            return fail(format!("dpkg-deb --fsys-tarfile {name} failed"));
        }
        Ok(())
    }
}

/// Cuts the kernel's ELF out of a bzImage: the setup header locates the compressed
/// payload, whose last four bytes are the ELF's size; the payload is decompressed with
/// the matching tool (installed from Debian if missing and we are root).
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), Failure> {
    let data = read(bzimage)?;
    let bad = |what: &str| fail(format!("{}: {what}", bzimage.display()));
    if data.len() < 0x250 || &data[0x202..0x206] != b"HdrS" {
        return bad("not a bzImage (no HdrS setup header)");
    }
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248) as usize;
    let Some(payload) = data.get(start..start + u32_at(0x24c) as usize) else {
        return bad("payload outside the file");
    };
    if payload.len() < 8 {
        return bad("empty payload");
    }
    let size = u32::from_le_bytes(payload[payload.len() - 4..].try_into().expect("4 bytes"));
    let (tool, args, package): (&str, &[&str], &str) = match payload {
        [0x1f, 0x8b, ..] => ("gzip", &["-dc"], "gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", &["-dc", "--single-stream"], "xz-utils"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["-dcq"], "zstd"),
        _ => return bad("payload compressed with a method this tool does not handle"),
    };
    ensure_tool(tool, package)?;
    let file = fs::File::create(out).or_else(|e| fail(format!("create {}: {e}", out.display())))?;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .or_else(|e| fail(format!("cannot start {tool}: {e}")))?;
    // The trailing size makes some tools complain after they wrote everything: the
    // result is judged by its size, not by their exit status.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(payload);
    let _ = child.wait();
    let got = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    if got != u64::from(size) {
        return fail(format!(
            "{tool} unpacked {got} bytes of {}'s payload, expected {size}",
            bzimage.display()
        ));
    }
    check_elf(out)
}

/// Makes sure `tool` is on `PATH`, installing Debian `package` as root if it is not.
fn ensure_tool(tool: &str, package: &str) -> Result<(), Failure> {
    if vmm::which(tool).is_some() {
        return Ok(());
    }
    if !is_root() {
        return fail(format!(
            "{tool} not found; install it with: sudo apt-get install {package}"
        ));
    }
    eprintln!("xtask: {tool} not found; installing Debian package {package} (apt-get)...");
    host::run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {package}"),
    )
}

/// Fails unless `path` starts with the ELF magic.
fn check_elf(path: &Path) -> Result<(), Failure> {
    let mut magic = [0u8; 4];
    let ok = fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok();
    if ok && &magic == b"\x7fELF" {
        Ok(())
    } else {
        fail(format!("{} is not an ELF file", path.display()))
    }
}

/// Reads a whole file, failing with its name.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).or_else(|e| fail(format!("read {}: {e}", path.display())))
}

/// Creates a directory and its parents.
pub(crate) fn mkdir(dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))
}

/// Renames, failing with both names.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), Failure> {
    fs::rename(from, to).or_else(|e| {
        fail(format!(
            "rename {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// A sibling of `path` private to this call, renamed onto `path` when complete.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
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

    #[test]
    fn init_is_valid_shell() {
        let mut sh = Command::new("sh")
            .arg("-n")
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh runs");
        sh.stdin.take().unwrap().write_all(INIT.as_bytes()).unwrap();
        assert!(sh.wait().unwrap().success(), "sh -n rejects INIT");
    }
}
