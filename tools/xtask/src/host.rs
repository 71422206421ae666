//! Facts about the host and the repository, and running cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Failure, Outcome, fail};

/// The repository root (two levels above this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root exists")
}

/// The shared cargo target directory.
pub fn target_dir() -> PathBuf {
    root().join("target")
}

/// The apps under `apps/`, sorted.
pub fn apps() -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(root().join("apps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    apps.sort();
    apps
}

/// Checks that `app` exists, with a one-line error listing the apps that do.
pub fn check_app(app: &str) -> Result<(), Failure> {
    let apps = apps();
    if apps.iter().any(|a| a == app) {
        Ok(())
    } else {
        fail(format!("unknown app `{app}` (apps: {})", apps.join(", ")))
    }
}

/// `cargo` as the toolchain running xtask sees it.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command to completion, failing with `what` if it does not succeed.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<(), Failure> {
    match crate::vmm::child::status(cmd) {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => fail(format!("{what} failed ({s})")),
        Err(e) => fail(format!("{what}: cannot start {:?}: {e}", cmd.get_program())),
    }
}

/// Runs `cmd` for its output: fails naming `what` if it cannot start, and with its
/// stderr if it does not succeed.
pub fn output_checked(cmd: &mut Command, what: &str) -> Result<std::process::Output, Failure> {
    let out = cmd
        .output()
        .or_else(|e| fail(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return fail(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Whether the CPU offers hardware virtualization (vmx or svm) and /dev/kvm exists.
pub fn has_hw_virt() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    hw && Path::new("/dev/kvm").exists()
}

/// The bare-metal target images build for.
pub const IMAGE_TARGET: &str = "x86_64-unknown-none";

/// Crates that build for the bare-metal target.
pub fn image_crates() -> Vec<String> {
    let mut crates = vec![
        "libos".to_string(),
        "upcall-kvm".to_string(),
        "upcall-xen".to_string(),
    ];
    crates.extend(apps());
    crates
}

/// `cargo xtask clippy`: host crates, then the bare-metal crates, warnings denied.
pub fn clippy() -> Outcome {
    crate::toolchain::ensure()?;
    println!("clippy: workspace (host)");
    run_checked(
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "clippy (host)",
    )?;
    println!("clippy: image crates ({IMAGE_TARGET})");
    let mut cmd = cargo();
    cmd.args(["clippy", "--target", IMAGE_TARGET]);
    for c in image_crates() {
        cmd.args(["-p", &c]);
    }
    cmd.args(["--", "-D", "warnings"]);
    run_checked(&mut cmd, "clippy (bare metal)")?;
    Ok(0)
}

/// `name` with every character but ASCII letters, digits and those in `keep` replaced
/// by `_` (for file and domain names made of case and app names).
pub fn safe_name(name: &str, keep: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || keep.contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether xtask runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Makes sure `program` is on `PATH`: on Debian as root, installs `packages` with
/// apt-get (saying so); otherwise fails (exit status 2) with the exact command to run.
pub fn ensure_program(program: &str, packages: &[&str]) -> Result<(), Failure> {
    if crate::vmm::which(program).is_some() {
        return Ok(());
    }
    let debian = Path::new("/etc/debian_version").exists();
    let list = packages.join(" ");
    if debian && is_root() {
        eprintln!("xtask: {program} not found; installing Debian package(s) {list} (apt-get)...");
        run_checked(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install {list}"),
        )?;
        return Ok(());
    }
    Err(Failure {
        message: format!("{program} not found; install it with: sudo apt-get install {list}"),
        status: 2,
    })
}
