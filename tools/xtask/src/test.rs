//! `cargo xtask test`: host unit tests, then every integration case on every test bed
//! this machine can run, then one line `N passed, N failed`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use upcall_tests::{Bed, Case, Machine};

use crate::qemu::{self, RunOpts};
use crate::run::XenBoot;
use crate::vmm::Vmm;
use crate::{MachineArg, Outcome, Platform, build, host};

/// Seconds a single boot may take before it counts as hung (SeaBIOS under TCG is slow).
const CASE_TIMEOUT: u64 = 120;
/// Release `hello` must stay under this size.
const HELLO_MAX_BYTES: u64 = 256 * 1024;

#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(note) => {
                self.passed += 1;
                println!("ok   {name}{note}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
                self.failures.push(name.to_string());
            }
        }
    }
}

/// Runs the host unit tests; adds their counts from cargo's `test result:` lines.
fn host_tests(t: &mut Tally) {
    println!("== host unit tests (cargo test --workspace)");
    let out = host::cargo()
        .args(["test", "--workspace", "--quiet"])
        .stderr(Stdio::inherit())
        .output();
    let Ok(out) = out else {
        t.record("host unit tests", Err("cannot run cargo test".into()));
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut passed, mut failed) = (0, 0);
    for line in text.lines().filter(|l| l.starts_with("test result:")) {
        let count = |what: &str| {
            line.split(';')
                .find_map(|p| {
                    p.trim()
                        .strip_suffix(what)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0)
        };
        passed += count("passed");
        failed += count("failed");
    }
    if !out.status.success() {
        print!("{text}");
        t.record(
            "host unit tests",
            Err(format!(
                "cargo test failed ({passed} passed, {failed} failed)"
            )),
        );
        return;
    }
    t.passed += passed;
    println!("ok   host unit tests ({passed} passed)");
}

fn machine_arg(m: Machine) -> MachineArg {
    match m {
        Machine::Microvm => MachineArg::Microvm,
        Machine::PcQboot => MachineArg::Qboot,
        Machine::PcSeabios => MachineArg::Pc,
    }
}

/// Runs one case; `Ok` carries a note printed after the name.
fn run_case(
    case: &Case,
    images: &mut HashMap<(String, bool, bool), PathBuf>,
) -> Result<String, String> {
    let xen = matches!(case.bed, Bed::XenDom0 | Bed::XenXl | Bed::XenXlThen { .. });
    let platform = if xen { Platform::Xen } else { Platform::Kvm };
    let key = (case.app.to_string(), case.release, xen);
    let image = match images.get(&key) {
        Some(p) => p.clone(),
        None => {
            let p = build::build(case.app, platform, case.release).map_err(|f| f.message)?;
            images.insert(key, p.clone());
            p
        }
    };
    let args: Vec<String> = case.args.iter().map(|s| s.to_string()).collect();
    let machine = match case.bed {
        Bed::Qemu(m) => machine_arg(m),
        _ => MachineArg::Microvm,
    };
    let opts = RunOpts::for_tests(machine, CASE_TIMEOUT).with_smp(case.smp);
    let r = match case.bed {
        Bed::Qemu(_) => crate::run::boot(Vmm::Qemu, &image, &args, &opts, false),
        Bed::Uhyve => crate::run::boot(Vmm::Uhyve, &image, &args, &opts, false),
        Bed::XenDom0 => crate::run::boot_xen(&image, &args, &opts, true, false),
        Bed::XenXl => crate::run::boot_xen(&image, &args, &opts, false, false),
        Bed::XenXlThen {
            command,
            args: xl_args,
            when,
        } => {
            let action = crate::xen_testbed::XlAction {
                command,
                args: xl_args,
                when,
            };
            crate::run::boot_xen_with(&image, &args, &opts, XenBoot::Xl(Some(action)), false)
        }
    }
    .map_err(|f| f.message)?;
    let verdict = if r.timed_out {
        Err(format!("timed out after {CASE_TIMEOUT} s"))
    } else {
        upcall_tests::check(case, r.status, &r.output)
    };
    verdict
        .map(|()| format!(" ({:.2} s)", r.elapsed.as_secs_f64()))
        .map_err(|why| {
            let tail: Vec<&str> = r.output.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "{why}\n  --- last console lines ---\n  {}",
                tail.join("\n  ")
            )
        })
}

/// The noinstr check passes on real images and fails on the deliberately broken one.
fn noinstr_checks(t: &mut Tally, wanted: &dyn Fn(&str) -> bool) {
    let images = [
        ("noinstr/selftest-debug-clean", Platform::Kvm, false),
        ("noinstr/selftest-release-clean", Platform::Kvm, true),
        ("noinstr/xen-selftest-debug-clean", Platform::Xen, false),
    ];
    for (name, platform, release) in images {
        if wanted(name) {
            let r = build::build("selftest", platform, release)
                .and_then(|p| crate::noinstr::check_image(&p))
                .map_err(|f| f.message)
                .and_then(|v| {
                    if v.is_empty() {
                        Ok(String::new())
                    } else {
                        Err(format!("{v:?}"))
                    }
                });
            t.record(name, r);
        }
    }
    let name = "noinstr/violation-demo-is-caught";
    if wanted(name) {
        let r = build::build_variant("hello", Platform::Kvm, false, &["noinstr-violation-demo"])
            .and_then(|p| crate::noinstr::check_image(&p))
            .map_err(|f| f.message)
            .and_then(
                |v| match v.iter().find(|v| v.to.contains("noinstr_violation_demo")) {
                    Some(v) => Ok(format!(" (caught: {} calls {})", v.from, v.to)),
                    None => Err(format!("the broken build passed the check: {v:?}")),
                },
            );
        t.record(name, r);
    }
}

fn release_size(t: &mut Tally) {
    let result = build::build("hello", Platform::Kvm, true)
        .map_err(|f| f.message)
        .and_then(|p| {
            let size = std::fs::metadata(&p).map_err(|e| e.to_string())?.len();
            if size < HELLO_MAX_BYTES {
                Ok(format!(" ({size} bytes < {HELLO_MAX_BYTES})"))
            } else {
                Err(format!(
                    "release hello is {size} bytes, limit {HELLO_MAX_BYTES}"
                ))
            }
        });
    t.record("size/hello-release-under-256KiB", result);
}

/// `cargo xtask test`.
pub fn run(filter: Option<&str>, no_host: bool) -> Outcome {
    let start = Instant::now();
    let mut t = Tally::default();
    if !no_host {
        host_tests(&mut t);
    }
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let mut images = HashMap::new();
    if let Err(f) = qemu::ensure_qemu() {
        t.record("qemu available", Err(f.message));
    } else {
        println!(
            "== KVM platform on QEMU (accel {:?})",
            qemu::pick_accel(None)
        );
        run_cases(
            &mut t,
            &upcall_tests::kvm_qemu_cases(),
            &wanted,
            &mut images,
        );
        if wanted("size/hello-release-under-256KiB") {
            release_size(&mut t);
        }
        noinstr_checks(&mut t, &wanted);
    }
    let uhyve_cases: Vec<Case> = upcall_tests::uhyve_cases()
        .into_iter()
        .filter(|c| wanted(&c.name))
        .collect();
    if !uhyve_cases.is_empty() {
        match crate::uhyve::ensure_uhyve() {
            // Without /dev/kvm this test bed does not exist here: say so, count nothing.
            Err(f) if f.status == 2 => println!("== uhyve: skipped ({})", f.message),
            Err(f) => t.record("uhyve available", Err(f.message)),
            Ok(_) => {
                println!("== KVM platform on uhyve {}", crate::uhyve::VERSION);
                run_cases(&mut t, &uhyve_cases, &wanted, &mut images);
            }
        }
    }
    let xen_cases: Vec<Case> = upcall_tests::xen_cases()
        .into_iter()
        .filter(|c| wanted(&c.name))
        .collect();
    if !xen_cases.is_empty() {
        println!("== Xen platform: Xen 4.17 in QEMU (TCG), as dom0 and as an xl domU");
        run_cases(&mut t, &xen_cases, &wanted, &mut images);
    }
    if !t.failures.is_empty() {
        println!("failed: {}", t.failures.join(", "));
    }
    println!("(took {:.0} s)", start.elapsed().as_secs_f64());
    println!("{} passed, {} failed", t.passed, t.failed);
    Ok(u8::from(t.failed > 0))
}

fn run_cases(
    t: &mut Tally,
    cases: &[Case],
    wanted: &dyn Fn(&str) -> bool,
    images: &mut HashMap<(String, bool, bool), PathBuf>,
) {
    for case in cases.iter().filter(|c| wanted(&c.name)) {
        let result = run_case(case, images);
        t.record(&case.name, result);
    }
}
