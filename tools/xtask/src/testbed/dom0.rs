//! The Linux dom0 of the xl path: Debian's kernel as an ELF and an initramfs with
//! busybox, the xen-utils daemons and `xl`, their libraries, the Xen kernel modules, the
//! network set-up ([`crate::testbed::xen_net`]) and the test bed's `/init`. Assembled
//! once, cached under a name keyed on the packages and the init script.
//!
//! The initramfs is built once; each run appends a small second cpio archive holding
//! `/app`, its xl config and its settings, which Linux unpacks over the first.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::testbed::debian::{ensure_debs, kernel_package, unpack};
use crate::testbed::files::{mkdir, only_file, temp_path};
use crate::testbed::initramfs::{Fnv, Node, Tree};
use crate::testbed::kernel::extract_vmlinux;
use crate::testbed::xen::{LOCK, cache_dir, hypervisor};
use crate::{Failure, fail};

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
    crate::testbed::xen_net::PACKAGE,
];
/// Where xen-utils keeps its programs.
const XEN_BIN: &str = "usr/lib/xen-4.17/bin";
/// The xen-utils programs dom0 runs.
/// (`xenctx` dumps a hung domain's vCPUs before dom0 destroys it.)
const XEN_TOOLS: &[&str] = &["xl", "xenstored", "xenconsoled", "xen-init-dom0", "xenctx"];
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
/// Bumped whenever the initramfs layout changes, to rebuild cached ones.
const FORMAT: &str = "xen-testbed-4";

/// The Linux dom0's `/init` (`xen_dom0_init.sh`): starts the Xen daemons, then for each directory listed in
/// `/domains`, one after another: `xl create`s its `kernel` with its `cfg`, streams the
/// domain's console log (framed by `xen-testbed: domain NAME begins` and
/// `xen-testbed: domain NAME exit status N`, see [`crate::vmm::xl_output`]; the files
/// come from [`crate::vmm::xl_run`]), runs the
/// domain's toolstack actions when its console shows their text, and destroys it after
/// its timeout. Finally it ends QEMU with the last domain's exit status through
/// isa-debug-exit (port 0xf4, reached through `/dev/port`).
pub(crate) const INIT: &str = include_str!("xen_dom0_init.sh");

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

/// The libvirt flavour of the Linux-dom0 test bed (opt-in; see [`crate::testbed::libvirt_xen`]):
/// the same dom0 plus libvirtd with the libxl driver, virsh and their libraries (a
/// separate, larger initramfs; the default one is unchanged).
pub fn ensure_libvirt_xl_testbed() -> Result<XlTestbed, Failure> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let extra = crate::testbed::libvirt_xen::packages(DOM0_PACKAGES)?;
    xl_testbed(Some(&extra))
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
        key.add(crate::testbed::libvirt_xen::FORMAT.as_bytes());
        key.add(crate::testbed::libvirt_xen::INIT.as_bytes());
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
        .chain(crate::testbed::xen_net::KERNEL_FILES)
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
            crate::testbed::libvirt_xen::add_to_tree(&mut tree, &unpacked_libvirt)?;
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
    let Some(xenstore_utils) = unpacked.get(crate::testbed::xen_net::PACKAGE) else {
        return fail(format!(
            "Xen test bed: {} was not unpacked",
            crate::testbed::xen_net::PACKAGE
        ));
    };
    crate::testbed::xen_net::add_to_tree(&mut t, kernel, xenstore_utils)?;
    t.check_libraries()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

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
