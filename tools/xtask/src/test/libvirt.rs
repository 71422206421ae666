//! Integration tests of the managed-VM exit path (`upcall_tests::libvirt`):
//! plain QEMU without `isa-debug-exit` (ACPI poweroff on every machine, pvpanic), then
//! KVM domains on this host's libvirt, each judged by its console and by the lifecycle
//! events libvirt reports. Every domain is destroyed and every tap removed at the end of
//! its case, and the case checks that they are.
//!
//! The libvirt cases are skipped, with the reason, where libvirt cannot run (not
//! Debian, not root, no `/dev/net/tun`); `cargo xtask testbed libvirt` (run by the
//! first case when needed) installs and starts it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use upcall_tests::Bed;
use upcall_tests::libvirt::{End, LibvirtCase, PlainCase, SlotCase};

use crate::testbed::libvirt as libvirt_testbed;
use crate::vmm::libvirt::{self, Opts};
use crate::vmm::qemu::{self, RunOpts};
use crate::{MachineArg, Platform, build, vmm};

/// Seconds a run may take (SeaBIOS under TCG, a loaded host).
const CASE_TIMEOUT: u64 = 120;
/// The tap network of the httpd case.
const TAP_NET: &str = "tap:192.168.77.1/192.168.77.2";

fn machine_arg(bed: Bed) -> MachineArg {
    match bed {
        Bed::Qemu(m) => m.into(),
        _ => MachineArg::Microvm,
    }
}

/// Runs the wanted cases, reporting each through `record`.
pub fn run(wanted: &dyn Fn(&str) -> bool, record: &mut dyn FnMut(&str, Result<String, String>)) {
    let plain: Vec<PlainCase> = upcall_tests::libvirt::plain_cases()
        .into_iter()
        .filter(|c| wanted(&c.case.name))
        .collect();
    if !plain.is_empty() {
        println!("== KVM image without isa-debug-exit on plain QEMU (ACPI poweroff, pvpanic)");
        for c in &plain {
            let start = Instant::now();
            let r = run_plain(c).map(|()| format!(" ({:.2} s)", start.elapsed().as_secs_f64()));
            record(&c.case.name, r);
        }
    }
    for c in upcall_tests::libvirt::slot_cases()
        .into_iter()
        .filter(|c| wanted(&c.case.name))
    {
        let start = Instant::now();
        let r = run_slot(&c).map(|()| format!(" ({:.2} s)", start.elapsed().as_secs_f64()));
        record(&c.case.name, r);
    }
    let cases: Vec<LibvirtCase> = upcall_tests::libvirt::libvirt_cases()
        .into_iter()
        .filter(|c| wanted(&c.case.name))
        .collect();
    if cases.is_empty() {
        return;
    }
    if let Some(why) = libvirt_testbed::unavailable() {
        println!("== libvirt: skipped ({why})");
        return;
    }
    println!("== KVM image on libvirt ({})", libvirt_testbed::URI);
    let start = Instant::now();
    if let Err(f) = libvirt_testbed::ensure() {
        record("libvirt test bed", Err(f.message));
        return;
    }
    println!(
        "   (test bed ready in {:.1} s)",
        start.elapsed().as_secs_f64()
    );
    for (n, c) in cases.iter().enumerate() {
        let start = Instant::now();
        let r = run_libvirt(c, n as u32)
            .map(|note| format!("{note} ({:.2} s)", start.elapsed().as_secs_f64()));
        record(&c.case.name, r);
    }
}

fn run_plain(c: &PlainCase) -> Result<(), String> {
    let image = build::build(c.case.app, Platform::Kvm, c.case.release).map_err(|f| f.message)?;
    let args: Vec<String> = c.case.args.iter().map(|s| s.to_string()).collect();
    let opts = RunOpts::for_tests(machine_arg(c.case.bed), CASE_TIMEOUT);
    let mut a = qemu::qemu_args(&image, &qemu::kernel_cmdline(&args), &opts);
    // The device's absence is the point: drop `-device isa-debug-exit,...`.
    let i = a
        .iter()
        .position(|s| s.starts_with("isa-debug-exit"))
        .ok_or("qemu_args no longer adds isa-debug-exit")?;
    a.drain(i - 1..=i);
    if c.pvpanic {
        a.extend(["-device", "pvpanic", "-action", "panic=exit-failure"].map(String::from));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(&a);
    let r = vmm::run_captured(cmd, &image, CASE_TIMEOUT, false).map_err(|f| f.message)?;
    let tail = |why: String| format!("{why}; console ends:\n{}", last_lines(&r.stdout, 8));
    if r.timed_out {
        return Err(tail(format!(
            "QEMU did not exit by itself within {CASE_TIMEOUT} s"
        )));
    }
    if r.code != Some(c.qemu_status) {
        return Err(tail(format!(
            "QEMU exit status {:?}, want {}",
            r.code, c.qemu_status
        )));
    }
    upcall_tests::check(&c.case, libvirt::console_status(&r.stdout), &r.stdout).map_err(tail)
}

/// Boots the case's app with its virtio-net card in slot `c.slot` and no video card,
/// and fetches `/status` through a forwarded port.
fn run_slot(c: &SlotCase) -> Result<(), String> {
    use crate::test::net::{self as nettest, Guest};
    let image = build::build(c.case.app, Platform::Kvm, c.case.release).map_err(|f| f.message)?;
    let port = nettest::free_port(qemu::Proto::Tcp)?;
    let mut opts = RunOpts::for_tests(machine_arg(c.case.bed), 0);
    opts.forwards = vec![qemu::Forward {
        proto: qemu::Proto::Tcp,
        host: port,
        guest: 80,
    }];
    let args: Vec<String> = c.case.args.iter().map(|s| s.to_string()).collect();
    let mut a = qemu::qemu_args(&image, &qemu::kernel_cmdline(&args), &opts);
    let card = a
        .iter()
        .position(|s| s.starts_with("virtio-net-pci,"))
        .ok_or("qemu_args no longer adds a virtio-net-pci card")?;
    a[card] = format!("{},addr={:#x}", a[card], c.slot);
    a.extend(["-vga", "none"].map(String::from));
    let mut guest = Guest::boot(&image, a)?;
    let served = nettest::wait_until(&mut guest, port, &|p| nettest::http_get_ok(p, "/status"))
        .and_then(|()| nettest::curl(port, "/status"));
    let (console, _) = guest.stop();
    crate::test::save_log(&c.case.name, &console);
    let tail = |why: String| format!("{why}; console ends:\n{}", last_lines(&console, 8));
    let body = served.map_err(tail)?;
    if !String::from_utf8_lossy(&body).contains("requests=") {
        return Err(tail("`/status` lacks `requests=`".into()));
    }
    let mut judged = c.case.clone();
    judged.status = 0;
    upcall_tests::check(&judged, Some(0), &console).map_err(tail)
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether libvirt still knows the domain.
fn domain_exists(name: &str) -> bool {
    Command::new("virsh")
        .args(["-q", "-c", libvirt_testbed::URI, "domstate", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_libvirt(c: &LibvirtCase, n: u32) -> Result<String, String> {
    let serves = match c.end {
        End::Serves { path, body } => Some((path, body)),
        _ => None,
    };
    let o = Opts {
        platform: Platform::Kvm,
        machine: machine_arg(c.case.bed),
        smp: c.case.smp,
        memory_mb: Some(128),
        net: serves.map(|_| TAP_NET.parse().expect("valid tap net")),
        release: c.case.release,
        run: true,
        timeout: CASE_TIMEOUT,
    };
    let args: Vec<String> = c.case.args.iter().map(|s| s.to_string()).collect();
    let d = libvirt::prepare(c.case.app, &args, &o, n).map_err(|f| f.message)?;
    let xml = libvirt::domain_xml(&d)?;
    let stop = AtomicBool::new(false);
    let mut answer: Option<Result<String, String>> = None;
    let guest = o.net.map(|n| n.guest);
    let mut probe = |console: &str| {
        let (Some((path, body)), Some(ip)) = (serves, guest) else {
            return;
        };
        if answer.is_some() || !console.contains("httpd: serving") {
            return;
        }
        let out = Command::new("curl")
            .args(["-s", "-S", "-m", "10", &format!("http://{ip}{path}")])
            .output();
        answer = Some(match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                if text.contains(body) {
                    Ok(text)
                } else {
                    Err(format!("curl {path}: the body lacks `{body}`: {text}"))
                }
            }
            Ok(o) => Err(format!(
                "curl {path} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run curl: {e}")),
        });
        stop.store(true, Ordering::SeqCst);
    };
    let r = libvirt::run_with(&d, &xml, CASE_TIMEOUT, &stop, &mut |_| {}, &mut probe)
        .map_err(|f| f.message)?;
    let tail = |why: String| {
        format!(
            "{why}; libvirt: {}; events {:?}; console ends:\n{}",
            r.summary(),
            r.events,
            last_lines(&r.console, 8)
        )
    };
    // Cleanup happened whatever the verdict: check it did.
    if domain_exists(&d.name) {
        return Err(tail(format!("domain {} still exists", d.name)));
    }
    if let Some((_, tap)) = &d.net
        && Path::new("/sys/class/net").join(tap).exists()
    {
        return Err(tail(format!("tap {tap} still exists")));
    }
    if r.timed_out {
        return Err(tail(format!("timed out after {CASE_TIMEOUT} s")));
    }
    match c.end {
        End::Shutdown => {
            if r.stop_reason() != Some("Shutdown") || r.panicked() {
                return Err(tail("libvirt did not report a clean shutdown".into()));
            }
        }
        End::Panicked => {
            if !r.panicked() || r.stop_reason() != Some("Crashed") {
                return Err(tail(
                    "libvirt did not report a crash through pvpanic".into(),
                ));
            }
        }
        End::Serves { .. } => {
            match answer {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(tail(e)),
                None => return Err(tail("the app never said it was serving".into())),
            }
            if r.stop_reason() != Some("Destroyed") {
                return Err(tail("the domain was not destroyed at the end".into()));
            }
            // It never ends by itself: judge the console only.
            let mut judged = c.case.clone();
            judged.status = 0;
            return upcall_tests::check(&judged, Some(0), &r.console)
                .map(|()| format!(" (curl {} answered)", TAP_NET))
                .map_err(tail);
        }
    }
    upcall_tests::check(&c.case, r.status, &r.console)
        .map(|()| format!(" (libvirt: {})", r.stop_reason().unwrap_or("?")))
        .map_err(tail)
}
