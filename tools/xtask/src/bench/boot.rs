//! `cargo xtask bench boot`: what Upcall adds to a VMM's boot-to-exit time.
//!
//! Wall times on shared machines are noisy, so the figure of merit is a ratio measured
//! in one run: `hello` against a do-nothing image (its first instruction exits), runs
//! interleaved, medians compared. Beside it, a deterministic count: the TSC cycles from
//! the first instruction to `main` under `-icount shift=0`, where QEMU's TSC counts
//! guest instructions. Results go to `target/bench/boot.{json,md}`.

use std::path::Path;
use std::time::Duration;

use object::{Object, ObjectSegment};
use serde_json::json;

use crate::vmm::Vmm;
use crate::vmm::qemu::{self, RunOpts};
use crate::{MachineArg, Outcome, Platform, build, fail, host, stub_elf};

use crate::bench::goals::{self as goals, Row};
use crate::bench::report::{Report, Table, cell};
use crate::bench::stats::median;

/// The ratio we aim for (`hello` / do-nothing) on QEMU microvm.
const GOAL_RATIO: f64 = goals::BOOT_RATIO_QEMU;

/// The size of `image` with its symbols and debug sections removed (binutils `strip`).
fn stripped_bytes(image: &Path) -> Result<u64, crate::Failure> {
    let out = image.with_extension("stripped");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(image)
        .status()
        .or_else(|e| fail(format!("run strip: {e}")))?;
    if !status.success() {
        return fail(format!("strip {} failed: {status}", image.display()));
    }
    let len = std::fs::metadata(&out).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&out);
    Ok(len)
}

fn loaded_bytes(image: &Path) -> u64 {
    let data = std::fs::read(image).unwrap_or_default();
    object::File::parse(&*data).map_or(0, |f| f.segments().map(|s| s.file_range().1).sum())
}

fn entry_to_main_instructions(image: &Path) -> Result<u64, crate::Failure> {
    let mut opts = RunOpts::for_tests(MachineArg::Microvm, 60);
    opts.accel = Some(crate::Accel::Tcg);
    opts.extra = qemu::icount_args(0);
    let r = qemu::run_image(image, "loglevel=debug", &opts, false)?;
    r.output
        .lines()
        .find_map(|l| {
            l.strip_prefix("upcall: entry-to-main tsc cycles ")?
                .trim()
                .parse()
                .ok()
        })
        .map_or_else(
            || fail("the icount run did not print its entry-to-main count"),
            Ok,
        )
}

/// `cargo xtask bench boot`.
pub fn boot(runs: usize) -> Outcome {
    if runs == 0 {
        return fail("--runs must be at least 1");
    }
    qemu::ensure_qemu()?;
    let hello = build::build("hello", Platform::Kvm, true)?;
    let dir = host::target_dir().join("bench");
    std::fs::create_dir_all(&dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
    let stub = dir.join("do-nothing.elf");
    std::fs::write(&stub, stub_elf::do_nothing_image())
        .or_else(|e| fail(format!("write stub: {e}")))?;

    // The VMMs this machine can run: QEMU microvm always, uhyve where /dev/kvm exists.
    let mut vmms = vec![Vmm::Qemu];
    match crate::vmm::uhyve::ensure_uhyve() {
        Ok(_) => vmms.push(Vmm::Uhyve),
        Err(f) => eprintln!("bench boot: uhyve skipped: {}", f.message),
    }
    let opts = RunOpts::for_tests(MachineArg::Microvm, 60);
    let accel = qemu::pick_accel(None);
    // times[vmm][0] = do-nothing, [1] = hello; all runs interleaved.
    let mut times = vec![[Vec::new(), Vec::new()]; vmms.len()];
    for i in 0..runs {
        eprint!("\rbench boot: run {}/{runs}", i + 1);
        for (v, &vmm) in vmms.iter().enumerate() {
            for (k, image) in [&stub, &hello].into_iter().enumerate() {
                let r = crate::run::boot(vmm, image, &[], &opts, false)?;
                if r.status != Some(0) {
                    return fail(format!(
                        "{} exited with {:?} on {vmm:?} during the benchmark",
                        image.display(),
                        r.status
                    ));
                }
                times[v][k].push(r.elapsed);
            }
        }
    }
    eprintln!();
    let first = entry_to_main_instructions(&hello)?;
    let second = entry_to_main_instructions(&hello)?;
    let size = std::fs::metadata(&hello).map_or(0, |m| m.len());
    let stripped = stripped_bytes(&hello)?;
    let loaded = loaded_bytes(&hello);
    let elf = std::fs::read(&hello).or_else(|e| fail(format!("read hello: {e}")))?;
    let (largest, per_crate) = goals::largest_functions(&elf, 20);

    let mut vmm_table = Table::new(&[
        ("VMM", "vmm"),
        ("median hello", "median_ms_hello"),
        ("median do-nothing", "median_ms_do_nothing"),
        ("ratio (goals below)", "ratio_hello_over_do_nothing"),
    ]);
    let mut hello_medians = Vec::new();
    let mut goal_rows = Vec::new();
    for (v, &vmm) in vmms.iter().enumerate() {
        let [stub_t, hello_t] = times[v].clone();
        let (m_stub, m_hello) = (median(stub_t), median(hello_t));
        let ratio = m_hello.as_secs_f64() / m_stub.as_secs_f64();
        let name = match vmm {
            Vmm::Qemu => format!("QEMU microvm ({accel:?})"),
            Vmm::Uhyve => format!("uhyve {}", crate::vmm::uhyve::VERSION),
        };
        let ms = |t: Duration| {
            let ms = t.as_secs_f64() * 1e3;
            cell(format!("{ms:.1} ms"), ms)
        };
        vmm_table.row([
            name.into(),
            ms(m_hello),
            ms(m_stub),
            cell(format!("{ratio:.3}"), ratio),
        ]);
        hello_medians.push(m_hello.as_secs_f64());
        goal_rows.push(match vmm {
            Vmm::Qemu => Row::ratio(
                "hello boot-to-exit / do-nothing, QEMU microvm (medians)",
                ratio,
                goals::BOOT_RATIO_QEMU,
                "",
            ),
            Vmm::Uhyve => Row::ratio(
                "hello boot-to-exit / do-nothing, uhyve (medians)",
                ratio,
                goals::BOOT_RATIO_UHYVE,
                "",
            ),
        });
    }
    let mut report = Report::new("boot");
    report.table("vmms", &vmm_table);
    let uhyve_over_qemu = match hello_medians[..] {
        [qemu_hello, uhyve_hello] => Some(uhyve_hello / qemu_hello),
        _ => None,
    };
    if let Some(r) = uhyve_over_qemu {
        report.text(format!(
            "\nhello on uhyve vs QEMU microvm, same run: {r:.3}×\n"
        ));
    }
    report.value("uhyve_over_qemu_hello", uhyve_over_qemu);
    let libvirt = match crate::bench::libvirt::boot_row(runs) {
        Ok(row) => row,
        Err(f) => {
            eprintln!("bench boot: libvirt row failed: {}", f.message);
            None
        }
    };
    if let Some(row) = libvirt {
        report.text("\n").table("libvirt", &row.table());
    }
    let mut metrics = Table::new(&[("metric", "metric"), ("value", "value")]);
    metrics.row(["runs (interleaved)".into(), (runs as u64).into()]);
    metrics.row([
        "instructions entry → main (QEMU -icount)".into(),
        cell(
            format!(
                "{first}{}",
                if first == second {
                    " (repeatable)"
                } else {
                    " (NOT repeatable)"
                }
            ),
            first,
        ),
    ]);
    metrics.row([
        "hello release image".into(),
        cell(
            format!("{size} bytes as built, {stripped} stripped ({loaded} loaded)"),
            json!({ "as_built": size, "stripped": stripped, "loaded": loaded }),
        ),
    ]);
    report
        .text("\n")
        .table("metrics", &metrics)
        .value("icount_repeatable", first == second)
        .value("goal_ratio", GOAL_RATIO);
    goal_rows.push(Row::count(
        "instructions entry → main (QEMU -icount)",
        first,
        goals::ENTRY_TO_MAIN_INSTRUCTIONS,
        "",
    ));
    goal_rows.push(Row::count(
        "hello release image, stripped (bytes)",
        stripped,
        goals::STRIPPED_BYTES,
        "100 KiB",
    ));
    goal_rows.push(Row::count(
        "hello release image, as built (bytes)",
        size,
        goals::AS_BUILT_BYTES,
        "128 KiB",
    ));
    report.text("\n").table("goals", &goals::table(&goal_rows));
    let (largest_table, crates_table) = goals::size_tables(&largest, &per_crate);
    report
        .text(format!(
            "\n{} largest functions of `hello` (symbol sizes):\n\n",
            largest.len()
        ))
        .table("largest_functions", &largest_table)
        .text("\nText bytes per crate:\n\n")
        .table("text_bytes_per_crate", &crates_table);
    report.write()
}

/// `bench NAME per_op=N` lines of an entrybench run.
fn parse_entrybench(output: &str) -> Vec<(String, u64)> {
    output
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("bench ")?.split_whitespace();
            let name = w.next()?;
            let per_op = w.next()?.strip_prefix("per_op=")?.parse().ok()?;
            Some((name.to_string(), per_op))
        })
        .collect()
}

fn run_entrybench(image: &Path, icount: bool) -> Result<Vec<(String, u64)>, crate::Failure> {
    let mut opts = RunOpts::for_tests(MachineArg::Microvm, 120);
    if icount {
        opts.accel = Some(crate::Accel::Tcg);
        opts.extra = qemu::icount_args(0);
    }
    let r = qemu::run_image(image, "", &opts, false)?;
    let rows = parse_entrybench(&r.output);
    if r.status != Some(0) || rows.is_empty() {
        return fail(format!(
            "entrybench failed (status {:?}):\n{}",
            r.status, r.output
        ));
    }
    Ok(rows)
}

/// `cargo xtask bench entry`: exception round trip, task switch and timer wake-up, as
/// instruction counts (-icount, run twice to show they repeat) and TSC cycles.
pub fn entry() -> Outcome {
    qemu::ensure_qemu()?;
    let image = build::build("entrybench", Platform::Kvm, true)?;
    let first = run_entrybench(&image, true)?;
    let second = run_entrybench(&image, true)?;
    let cycles = run_entrybench(&image, false)?;
    let mut results = Table::new(&[
        ("operation", "operation"),
        ("instructions (-icount)", "instructions"),
        ("repeatable", "repeatable"),
        ("TSC cycles (one run)", "tsc_cycles"),
    ]);
    for (name, instr) in &first {
        let repeat = second.iter().any(|(n, v)| n == name && v == instr);
        let cyc = cycles.iter().find(|(n, _)| n == name).map_or(0, |r| r.1);
        results.row([
            name.clone().into(),
            (*instr).into(),
            repeat.into(),
            cyc.into(),
        ]);
    }
    let find = |name: &str| first.iter().find(|(n, _)| n == name).map(|r| r.1);
    let mut goal_rows = Vec::new();
    if let Some(v) = find("task_switch") {
        goal_rows.push(Row::count(
            "task switch (two tasks yielding), instructions",
            v,
            goals::TASK_SWITCH_INSTRUCTIONS,
            "",
        ));
    }
    if let Some(v) = find("exception_round_trip") {
        goal_rows.push(Row::count(
            "exception round trip, instructions",
            v,
            goals::EXCEPTION_ROUND_TRIP_INSTRUCTIONS,
            "no regression",
        ));
    }
    if let Some(v) = find("sleep_wake_100us") {
        goal_rows.push(Row::count(
            "timer sleep/wake 100 µs: instructions beyond the 100,000 ns slept",
            v.saturating_sub(goals::SLEEP_NS),
            goals::SLEEP_OVERHEAD_INSTRUCTIONS,
            "half the 3,170 at filing",
        ));
    }
    let accel = format!("{:?}", qemu::pick_accel(None)).to_lowercase();
    Report::new("entry")
        .table("results", &results)
        .text("\n")
        .table("goals", &goals::table(&goal_rows))
        .value("vmm", "qemu -M microvm")
        .value("accel_for_cycles", accel)
        .write()
}
