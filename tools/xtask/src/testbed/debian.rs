//! Debian packages for the test beds and the Linux baseline guests: fetched with
//! `apt-get download` into the cache (nothing is installed) and unpacked with
//! `dpkg-deb -x`, whole or only the members a caller names.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::testbed::files::{mkdir, rename, temp_path};
use crate::testbed::initramfs::Fnv;
use crate::testbed::xen::cache_dir;
use crate::{Failure, fail, host};

/// The Debian meta package naming the current kernel package.
const KERNEL_META: &str = "linux-image-amd64";

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
    if !host::is_root() {
        return fail("Xen test bed: apt cannot find the packages; run `sudo apt-get update`");
    }
    eprintln!("xtask: Xen test bed: apt-get update");
    host::run_checked(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )
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
