//! `cargo xtask testbed libvirt`: libvirt 9.0 (Debian 12) for the KVM image, without
//! systemd.
//!
//! Installs `libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients` with
//! `--no-install-recommends` (9 packages, ~13 MB; `libvirt-daemon-system` would also
//! upgrade systemd), then does what the system package's units would have done: the
//! log directory, the `libvirt-qemu` user and group, and `user = "root"` /
//! `group = "root"` in `/etc/libvirt/qemu.conf` (here `/dev/kvm` is root-only, and
//! with another user libvirtd re-probes QEMU on every start: 7–8 s instead of 0.4 s).
//! Then it starts `virtlogd -d` and `libvirtd -d` and makes the first connection, which
//! probes QEMU once (~7.5 s). Every step checks first, so a second run only says that
//! everything is in place. `--stop` ends the two daemons (by the pids they wrote).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Failure, Outcome, fail, host};

/// The Debian packages (and nothing they only recommend).
pub const PACKAGES: [&str; 3] = [
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
];
/// The connection URI for QEMU/KVM domains.
pub const URI: &str = "qemu:///system";
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// (program, pid file it writes when run as root with `-d`).
const DAEMONS: [(&str, &str); 2] = [
    ("virtlogd", "/run/virtlogd.pid"),
    ("libvirtd", "/run/libvirtd.pid"),
];

fn step(what: &str) {
    eprintln!("libvirt test bed: {what}");
}

/// Why libvirt cannot run here, if it cannot (a reason to skip its tests).
pub fn unavailable() -> Option<String> {
    if !Path::new("/etc/debian_version").exists() {
        return Some("not a Debian host (the test bed installs Debian's libvirt)".into());
    }
    if !host::is_root() {
        return Some("not root (libvirtd, its qemu:///system driver and taps need root)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun (libvirt's managed taps need it)".into());
    }
    None
}

/// `cargo xtask testbed libvirt [--stop]`.
pub fn command(stop: bool) -> Outcome {
    if stop {
        stop_daemons()?;
        return Ok(0);
    }
    ensure().map(|()| 0)
}

/// Installs, configures and starts libvirt as needed; a no-op if all is in place.
pub fn ensure() -> Result<(), Failure> {
    if let Some(why) = unavailable() {
        return Err(Failure {
            message: format!("libvirt test bed: cannot set up here: {why}"),
            status: 2,
        });
    }
    install()?;
    configure()?;
    start_daemons()?;
    connect()
}

fn install() -> Result<(), Failure> {
    let have = |p: &str| crate::vmm::which(p).is_some();
    let driver = Path::new("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver")
        .join("libvirt_driver_qemu.so")
        .exists();
    if have("libvirtd") && have("virsh") && have("virtlogd") && driver {
        step("packages installed");
        return Ok(());
    }
    let list = PACKAGES.join(" ");
    step(&format!(
        "installing {list} (apt-get, --no-install-recommends)..."
    ));
    let start = Instant::now();
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    // Try with the package lists there are; refresh them only if that fails.
    if !install().is_ok_and(|s| s.success()) {
        step("refreshing the package lists (apt-get update)...");
        host::run_checked(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        match install() {
            Ok(s) if s.success() => {}
            _ => return fail(format!("apt-get install {list} failed")),
        }
    }
    step(&format!(
        "installed in {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Sets `key = "value"` in a libvirt config text: replaces an active setting, else
/// appends one. Returns the new text, or `None` if it already says so.
pub fn set_conf(text: &str, key: &str, value: &str) -> Option<String> {
    let want = format!("{key} = \"{value}\"");
    let is_key = |l: &str| {
        let l = l.trim_start();
        l.strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with('='))
    };
    if text.lines().any(|l| l.trim() == want) && text.lines().filter(|l| is_key(l)).count() == 1 {
        return None;
    }
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !is_key(l))
        .map(String::from)
        .collect();
    out.push(want);
    Some(out.join("\n") + "\n")
}

fn configure() -> Result<(), Failure> {
    for dir in [
        "/var/log/libvirt/qemu",
        "/var/lib/libvirt/qemu",
        "/var/cache/libvirt/qemu",
        "/run/libvirt",
    ] {
        std::fs::create_dir_all(dir).or_else(|e| fail(format!("cannot create {dir}: {e}")))?;
    }
    let has = |db: &str| {
        Command::new("getent")
            .args([db, "libvirt-qemu"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("group") {
        step("adding group libvirt-qemu");
        host::run_checked(
            Command::new("groupadd").args(["--system", "libvirt-qemu"]),
            "groupadd libvirt-qemu",
        )?;
    }
    if !has("passwd") {
        step("adding user libvirt-qemu");
        host::run_checked(
            Command::new("useradd").args([
                "--system",
                "--gid",
                "libvirt-qemu",
                "--home-dir",
                "/var/lib/libvirt",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ]),
            "useradd libvirt-qemu",
        )?;
    }
    let text = std::fs::read_to_string(QEMU_CONF).unwrap_or_default();
    let mut changed = text.clone();
    for (k, v) in [("user", "root"), ("group", "root")] {
        if let Some(t) = set_conf(&changed, k, v) {
            changed = t;
        }
    }
    if changed != text {
        step(&format!("{QEMU_CONF}: user = \"root\", group = \"root\""));
        std::fs::write(QEMU_CONF, changed)
            .or_else(|e| fail(format!("cannot write {QEMU_CONF}: {e}")))?;
        // A running libvirtd read the old file.
        if running("libvirtd", DAEMONS[1].1).is_some() {
            step("restarting libvirtd for the new configuration");
            stop_one("libvirtd", DAEMONS[1].1)?;
        }
    } else {
        step("configured");
    }
    Ok(())
}

/// The pid of `program` if its pid file names a live process running it.
fn running(program: &str, pid_file: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == program).then_some(pid)
}

fn start_daemons() -> Result<(), Failure> {
    for (program, pid_file) in DAEMONS {
        if let Some(pid) = running(program, pid_file) {
            step(&format!("{program} running (pid {pid})"));
            continue;
        }
        step(&format!("starting {program} -d"));
        host::run_checked(Command::new(program).arg("-d"), program)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(program, pid_file).is_none() {
            if Instant::now() > deadline {
                return fail(format!("{program} did not write {pid_file} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// The first connection (libvirtd probes QEMU's capabilities once, ~7.5 s; cached).
fn connect() -> Result<(), Failure> {
    step(&format!(
        "connecting to {URI} (the first time probes QEMU)..."
    ));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    loop {
        let out = Command::new("virsh")
            .args(["-c", URI, "version"])
            .output()
            .or_else(|e| fail(format!("cannot run virsh: {e}")))?;
        if out.status.success() {
            let v = String::from_utf8_lossy(&out.stdout);
            let hv = v
                .lines()
                .find(|l| l.contains("Running hypervisor"))
                .unwrap_or("")
                .trim()
                .to_string();
            step(&format!(
                "ready ({hv}; {:.1} s)",
                start.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        // The socket may not be there yet just after the daemon forked.
        if Instant::now() > deadline {
            return fail(format!(
                "virsh -c {URI} version failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop_one(program: &str, pid_file: &str) -> Result<(), Failure> {
    let Some(pid) = running(program, pid_file) else {
        step(&format!("{program} not running"));
        return Ok(());
    };
    step(&format!("stopping {program} (pid {pid})"));
    host::run_checked(
        Command::new("kill").args(["-TERM", &pid.to_string()]),
        "kill",
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == program)
    {
        if Instant::now() > deadline {
            return fail(format!("{program} (pid {pid}) did not stop within 15 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn stop_daemons() -> Result<(), Failure> {
    // libvirtd first: it holds a connection to virtlogd.
    for (program, pid_file) in DAEMONS.iter().rev() {
        stop_one(program, pid_file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_is_set_once_and_idempotent() {
        let orig = "# user = \"libvirt-qemu\"\n#group = \"kvm\"\nsecurity_driver = \"none\"\n";
        let t = set_conf(orig, "user", "root").unwrap();
        assert!(t.starts_with(orig));
        assert!(t.ends_with("user = \"root\"\n"));
        assert_eq!(set_conf(&t, "user", "root"), None);
        // An active setting with another value is replaced, not duplicated.
        let t = set_conf("user = \"qemu\"\nx = 1\n", "user", "root").unwrap();
        assert_eq!(t, "x = 1\nuser = \"root\"\n");
        // `username` is another key.
        let t = set_conf("username = 1\n", "user", "root").unwrap();
        assert_eq!(t, "username = 1\nuser = \"root\"\n");
        // Two active settings (the last would win) become one.
        let t = set_conf("user = \"root\"\nuser = \"x\"\n", "user", "root").unwrap();
        assert_eq!(t, "user = \"root\"\n");
    }
}
