//! `cargo xtask test`: host unit tests, then every integration case on every test bed
//! this machine can run, then one line `N passed, N failed`.

pub mod libvirt;
pub mod libvirt_xen;
pub mod net;
pub mod user;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use upcall_tests::{Bed, Case, Retry};

use crate::cli::TestArgs;
use crate::vmm::Vmm;
use crate::vmm::qemu::{self, RunOpts};
use crate::vmm::xl_run::{XlAction, XlDomain};
use crate::{MachineArg, Outcome, Platform, build, host};

/// Seconds a single boot may take before it counts as hung (SeaBIOS under TCG is slow).
const CASE_TIMEOUT: u64 = 120;
/// xl domains per dom0 boot (each boot of Xen + Linux dom0 costs ~5 s under TCG).
const XL_BATCH: usize = 6;
/// libos's test-only feature that compiles in the `hcall_resched=` bug switches.
pub const BUG_INJECTION: &str = "bug-injection";
/// Release `hello` must stay under this size.
const HELLO_MAX_BYTES: u64 = 256 * 1024;

#[derive(Debug)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
    /// When this run began (a case's log older than this is from an earlier run).
    start: std::time::SystemTime,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            passed: 0,
            failed: 0,
            failures: Vec::new(),
            start: std::time::SystemTime::now(),
        }
    }
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
                let log = log_path(name);
                if std::fs::metadata(&log)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= self.start)
                {
                    println!("  full console: {}", log.display());
                }
                println!("  rerun alone:  {}", rerun_command(name));
                self.failures.push(name.to_string());
            }
        }
    }
}

/// Where the full console of case `name` is kept: `target/test-logs/<name>.log` (a
/// case name's `/` make subdirectories).
pub fn log_path(name: &str) -> PathBuf {
    let safe = host::safe_name(name, "-_./+=");
    // No `..` components: the name stays inside test-logs.
    let safe = safe.replace("..", "__");
    host::target_dir()
        .join("test-logs")
        .join(format!("{}.log", safe.trim_start_matches('/')))
}

/// Writes the full console of case `name` to [`log_path`] (best effort: a log that
/// cannot be written does not change the verdict).
pub fn save_log(name: &str, console: &str) {
    let path = log_path(name);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, console);
}

/// The command that runs case `name` and nothing else.
pub fn rerun_command(name: &str) -> String {
    crate::vmm::qemu::shell_words(
        "cargo",
        &["xtask", "test", "--no-host", "--exact", "--filter", name].map(String::from),
    )
}

/// Runs the host unit tests; adds their counts from cargo's `test result:` lines.
fn host_tests(t: &mut Tally) {
    println!("== host unit tests (cargo test --workspace)");
    let out = crate::vmm::child::output(
        host::cargo()
            .args(["test", "--workspace", "--quiet"])
            .stderr(Stdio::inherit()),
    );
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

/// `-icount shift=` for timing-judged cases (see [`upcall_tests::ICOUNT_SHIFT`]).
const LATENCY_ICOUNT_SHIFT: u32 = upcall_tests::ICOUNT_SHIFT;

/// The image of `case`, built once per (app, release, platform).
fn image_for(
    case: &Case,
    images: &mut HashMap<(String, bool, bool), PathBuf>,
) -> Result<PathBuf, String> {
    let xen = matches!(case.bed, Bed::XenDom0) || case.bed.is_xl();
    let platform = if xen { Platform::Xen } else { Platform::Kvm };
    // Cases that switch a bug back on (`hcall_resched=…`) need an image built with
    // libos's test-only `bug-injection` feature; every other case boots the plain image.
    let features: &[&str] = if case.args.iter().any(|a| a.starts_with("hcall_resched=")) {
        &[BUG_INJECTION]
    } else {
        &[]
    };
    let key = (
        std::iter::once(case.app)
            .chain(features.iter().copied())
            .collect::<Vec<_>>()
            .join("+"),
        case.release,
        xen,
    );
    if let Some(p) = images.get(&key) {
        return Ok(p.clone());
    }
    let p =
        build::build_variant(case.app, platform, case.release, features).map_err(|f| f.message)?;
    images.insert(key, p.clone());
    Ok(p)
}

/// Runs one case (not an xl one: those run in batches); `Ok` carries a note printed
/// after the name.
fn run_case(
    case: &Case,
    images: &mut HashMap<(String, bool, bool), PathBuf>,
) -> Result<String, String> {
    let image = image_for(case, images)?;
    let args: Vec<String> = case.args.iter().map(|s| s.to_string()).collect();
    let machine = match case.bed {
        Bed::Qemu(m) => m.into(),
        _ => MachineArg::Microvm,
    };
    let mut opts = RunOpts::for_tests(machine, CASE_TIMEOUT).with_smp(case.smp);
    if case.icount {
        opts.accel = Some(crate::Accel::Tcg);
        opts.extra = qemu::icount_args(LATENCY_ICOUNT_SHIFT);
    }
    let r = match case.bed {
        Bed::Qemu(_) => crate::run::boot(Vmm::Qemu, &image, &args, &opts, false),
        Bed::Uhyve => crate::run::boot(Vmm::Uhyve, &image, &args, &opts, false),
        Bed::XenDom0 => crate::run::boot_xen(&image, &args, &opts, true, false),
        Bed::XenXl | Bed::XenXlWith(_) => unreachable!("xl cases run in batches"),
    }
    .map_err(|f| f.message)?;
    save_log(&case.name, &r.output);
    let verdict = if r.timed_out {
        Err(format!("timed out after {CASE_TIMEOUT} s"))
    } else {
        upcall_tests::check(case, r.status, &r.output)
    };
    verdict
        .map(|()| format!(" ({:.2} s)", r.elapsed.as_secs_f64()))
        .map_err(|why| with_tail(why, &r.output))
}

/// `why` followed by the app's failed checks (`FAIL …` lines, wherever they are) and
/// the last console lines of `output`.
fn with_tail(why: String, output: &str) -> String {
    let failed: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("FAIL "))
        .take(10)
        .collect();
    let failed = if failed.is_empty() {
        String::new()
    } else {
        format!("\n  --- failed checks ---\n  {}", failed.join("\n  "))
    };
    let tail: Vec<&str> = output.lines().rev().take(25).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "{why}{failed}\n  --- last console lines ---\n  {}",
        tail.join("\n  ")
    )
}

/// The xl domain that runs `case`.
fn xl_domain(case: &Case, image: PathBuf) -> XlDomain {
    let (memory_mb, actions, timeout) = match case.bed {
        Bed::XenXlWith(b) => (b.memory_mb, b.actions, b.timeout_secs),
        _ => (upcall_tests::XL_MEMORY_MB, &[][..], None),
    };
    let args: Vec<String> = case.args.iter().map(|s| s.to_string()).collect();
    XlDomain {
        image,
        cmdline: qemu::kernel_cmdline(&args),
        memory_mb,
        vcpus: case.smp,
        actions: actions
            .iter()
            .map(|a| XlAction {
                command: a.command,
                args: a.args,
                when: a.when,
            })
            .collect(),
        timeout_secs: timeout.unwrap_or(CASE_TIMEOUT as u32),
        // Judged when it has ended: dom0 need not copy the console meanwhile.
        stream: false,
        settle: true,
        net: None,
        ramdisk: None,
    }
}

/// Runs the xl cases in batches of up to [`XL_BATCH`] domains per dom0 boot; each case
/// is judged on its own domain's output and status. Cases with the same vCPU count
/// share batches (a batch's QEMU has a CPU for dom0 plus its largest domain's vCPUs,
/// so single-vCPU domains keep the machine they always had). A wall-clock case that
/// missed only a bound runs once more, in batches after the others
/// ([`upcall_tests::judge`]); its first console is kept beside its log.
fn run_xl_cases(
    t: &mut Tally,
    cases: &[&Case],
    images: &mut HashMap<(String, bool, bool), PathBuf>,
) {
    let again = run_xl_batches(t, cases, images, 1);
    if again.is_empty() {
        return;
    }
    println!(
        "-- {} wall-clock case(s) missed a bound once; running them again",
        again.len()
    );
    for (case, why) in &again {
        println!("   {}: {why}", case.name);
        let first = log_path(&case.name).with_extension("first-run.log");
        let _ = std::fs::rename(log_path(&case.name), first);
    }
    let again: Vec<&Case> = again.into_iter().map(|(case, _)| case).collect();
    let left = run_xl_batches(t, &again, images, 2);
    assert!(left.is_empty(), "a second run is final");
}

/// Runs `cases` as xl domains (the `attempt`th time), records each final verdict in
/// `t`, and returns the cases to run again, each with why its run failed.
fn run_xl_batches<'c>(
    t: &mut Tally,
    cases: &[&'c Case],
    images: &mut HashMap<(String, bool, bool), PathBuf>,
    attempt: u32,
) -> Vec<(&'c Case, String)> {
    let mut again = Vec::new();
    let mut by_vcpus: Vec<Vec<&Case>> = Vec::new();
    for &case in cases {
        match by_vcpus.iter_mut().find(|g| g[0].smp == case.smp) {
            Some(group) => group.push(case),
            None => by_vcpus.push(vec![case]),
        }
    }
    let all: Vec<&[&Case]> = by_vcpus.iter().flat_map(|g| g.chunks(XL_BATCH)).collect();
    let batches = all.len();
    let run_name = if attempt == 1 {
        "xl batch"
    } else {
        "xl second-run batch"
    };
    for (b, batch) in all.into_iter().enumerate() {
        let mut domains = Vec::new();
        let mut runnable = Vec::new();
        for case in batch {
            match image_for(case, images) {
                Ok(image) => {
                    domains.push(xl_domain(case, image));
                    runnable.push(*case);
                }
                Err(why) => t.record(&case.name, Err(why)),
            }
        }
        if domains.is_empty() {
            continue;
        }
        println!(
            "-- {run_name} {}/{batches}: {} domains in one dom0 boot",
            b + 1,
            domains.len()
        );
        let run = match crate::vmm::xl_batch::boot(&domains) {
            Ok(run) => run,
            Err(f) => {
                for case in runnable {
                    t.record(&case.name, Err(f.message.clone()));
                }
                continue;
            }
        };
        // The whole console, for failures that need more than a domain's part.
        let file = format!("test-logs/{}-{}.log", run_name.replace(' ', "-"), b + 1);
        let log = host::target_dir().join(file);
        let _ = std::fs::create_dir_all(log.parent().expect("has a parent"))
            .and_then(|()| std::fs::write(&log, &run.output));
        let failed_before = t.failed;
        for (case, d) in runnable.iter().zip(&run.domains) {
            save_log(&case.name, &d.output);
            let verdict = match (d.began, d.status) {
                (false, _) => Err(with_tail(
                    "the batch ended before this domain began".into(),
                    &run.output,
                )),
                (true, None) if run.timed_out => Err(with_tail(
                    "the batch was killed before this domain ended".into(),
                    &d.output,
                )),
                (true, None) => Err(with_tail(
                    "the batch ended before this domain did".into(),
                    &d.output,
                )),
                (true, Some(status)) => {
                    match upcall_tests::judge(case, attempt, Some(status), &d.output) {
                        Retry::Again(why) => {
                            again.push((*case, why));
                            continue;
                        }
                        Retry::Final(Ok(())) if attempt > 1 => {
                            Ok(" (second run; the first missed a bound)".to_string())
                        }
                        Retry::Final(verdict) => verdict
                            .map(|()| String::new())
                            .map_err(|why| with_tail(why, &d.output)),
                    }
                }
            };
            t.record(&case.name, verdict);
        }
        println!(
            "-- {run_name} {}/{batches} took {:.1} s{}",
            b + 1,
            run.elapsed.as_secs_f64(),
            if t.failed > failed_before {
                format!("; its whole console is in {}", log.display())
            } else {
                String::new()
            }
        );
    }
    again
}

/// The noinstr check passes on real images and fails on the deliberately broken one.
fn noinstr_checks(t: &mut Tally, wanted: &dyn Fn(&str) -> bool) {
    let images = [
        ("noinstr/selftest-debug-clean", Platform::Kvm, false),
        ("noinstr/selftest-release-clean", Platform::Kvm, true),
        ("noinstr/xen-selftest-debug-clean", Platform::Xen, false),
        ("noinstr/xen-selftest-release-clean", Platform::Xen, true),
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
pub fn run(a: &TestArgs) -> Outcome {
    let TestArgs {
        ref filter,
        exact,
        no_host,
        known_issues,
        libvirt_xen,
    } = *a;
    let start = Instant::now();
    let mut t = Tally::default();
    if !no_host {
        host_tests(&mut t);
    }
    if !known_issues {
        for (prefix, why) in upcall_tests::KNOWN_ISSUES {
            println!("== not run (known issue; --known-issues runs them): {prefix}*: {why}");
        }
    }
    let wanted = |name: &str| {
        filter
            .as_deref()
            .is_none_or(|f| if exact { name == f } else { name.contains(f) })
            && (known_issues || upcall_tests::known_issue(name).is_none())
    };
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
        crate::test::net::run(&wanted, &mut |name, result| t.record(name, result));
        crate::test::user::run(&wanted, &mut |name, result| t.record(name, result));
        crate::test::libvirt::run(&wanted, &mut |name, result| t.record(name, result));
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
        match crate::vmm::uhyve::ensure_uhyve() {
            // Without /dev/kvm this test bed does not exist here: say so, count nothing.
            Err(f) if f.status == 2 => println!("== uhyve: skipped ({})", f.message),
            Err(f) => t.record("uhyve available", Err(f.message)),
            Ok(_) => {
                println!("== KVM platform on uhyve {}", crate::vmm::uhyve::VERSION);
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
    crate::test::libvirt_xen::run_tests(libvirt_xen, &wanted, &mut |name, result| {
        t.record(name, result)
    });
    if !t.failures.is_empty() {
        println!("failed: {}", t.failures.join(", "));
        println!(
            "(full consoles under {}; each FAIL above shows the command that reruns it alone)",
            host::target_dir().join("test-logs").display()
        );
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
    let (xl, single): (Vec<&Case>, Vec<&Case>) = cases
        .iter()
        .filter(|c| wanted(&c.name))
        .partition(|c| c.bed.is_xl());
    for case in single {
        let result = run_case(case, images);
        t.record(&case.name, result);
    }
    run_xl_cases(t, &xl, images);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_stay_under_test_logs_and_rerun_is_one_quoted_command() {
        let base = host::target_dir().join("test-logs");
        assert_eq!(log_path("hello/microvm"), base.join("hello/microvm.log"));
        for hostile in ["../../etc/passwd", "/abs", "a/../../b", "x y\n"] {
            let p = log_path(hostile);
            assert!(p.starts_with(&base), "{hostile} -> {}", p.display());
            assert!(
                !p.components().any(|c| c == std::path::Component::ParentDir),
                "{hostile}"
            );
        }
        assert_eq!(
            rerun_command("xen/xl/smp2/selftest preempt=none"),
            "cargo xtask test --no-host --exact --filter 'xen/xl/smp2/selftest preempt=none'"
        );
    }
}
