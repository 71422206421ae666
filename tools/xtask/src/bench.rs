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

use crate::qemu::{self, RunOpts};
use crate::vmm::Vmm;
use crate::{MachineArg, Outcome, Platform, build, fail, host, stub_elf};

use crate::bench_goals::{self as goals, Row};

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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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
    std::fs::write(&stub, stub_elf::do_nothing_image()?)
        .or_else(|e| fail(format!("write stub: {e}")))?;

    // The VMMs this machine can run: QEMU microvm always, uhyve where /dev/kvm exists.
    let mut vmms = vec![Vmm::Qemu];
    match crate::uhyve::ensure_uhyve() {
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

    let mut md = String::from(
        "| VMM | median hello | median do-nothing | ratio (goals below) |\n|---|---|---|---|\n",
    );
    let mut per_vmm = Vec::new();
    let mut hello_medians = Vec::new();
    let mut goal_rows = Vec::new();
    for (v, &vmm) in vmms.iter().enumerate() {
        let [stub_t, hello_t] = times[v].clone();
        let (m_stub, m_hello) = (median(stub_t), median(hello_t));
        let ratio = m_hello.as_secs_f64() / m_stub.as_secs_f64();
        let name = match vmm {
            Vmm::Qemu => format!("QEMU microvm ({accel:?})"),
            Vmm::Uhyve => format!("uhyve {}", crate::uhyve::VERSION),
        };
        md.push_str(&format!(
            "| {name} | {:.1} ms | {:.1} ms | {ratio:.3} |\n",
            m_hello.as_secs_f64() * 1e3,
            m_stub.as_secs_f64() * 1e3
        ));
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
        per_vmm.push(json!({
            "vmm": name,
            "median_ms": { "hello": m_hello.as_secs_f64() * 1e3, "do_nothing": m_stub.as_secs_f64() * 1e3 },
            "ratio_hello_over_do_nothing": ratio,
        }));
    }
    if let [qemu_hello, uhyve_hello] = hello_medians[..] {
        md.push_str(&format!(
            "\nhello on uhyve vs QEMU microvm, same run: {:.3}×\n",
            uhyve_hello / qemu_hello
        ));
    }
    let libvirt = match crate::libvirt_bench::boot_row(runs) {
        Ok(row) => row,
        Err(f) => {
            eprintln!("bench boot: libvirt row failed: {}", f.message);
            None
        }
    };
    if let Some(row) = libvirt {
        md.push_str(&row.markdown());
    }
    md.push_str(&format!(
        "\n| metric | value |\n|---|---|\n\
         | runs (interleaved) | {runs} |\n\
         | instructions entry → main (QEMU -icount) | {first}{} |\n\
         | hello release image | {size} bytes as built, {stripped} stripped ({loaded} loaded) |\n",
        if first == second {
            " (repeatable)"
        } else {
            " (NOT repeatable)"
        },
    ));
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
    md.push_str(&goals::markdown(&goal_rows));
    md.push_str(&goals::size_markdown(&largest, &per_crate));
    let report = json!({
        "goals": goals::json(&goal_rows),
        "hello_stripped_bytes": stripped,
        "largest_functions": largest.iter().map(|f| json!({ "name": f.name, "crate": f.krate, "bytes": f.bytes })).collect::<Vec<_>>(),
        "text_bytes_per_crate": per_crate.iter().map(|(k, b)| json!({ "crate": k, "bytes": b })).collect::<Vec<_>>(),
        "runs": runs,
        "goal_ratio": GOAL_RATIO,
        "vmms": per_vmm,
        "uhyve_over_qemu_hello": (hello_medians.len() == 2).then(|| hello_medians[1] / hello_medians[0]),
        "entry_to_main_instructions_icount": first,
        "icount_repeatable": first == second,
        "hello_release_bytes": size,
        "hello_loaded_bytes": loaded,
        "libvirt": libvirt.map(|r| r.json()),
    });
    write_results("boot", &report, &md)
}

/// Writes `target/bench/<name>.json` and `.md` and prints the table.
pub(crate) fn write_results(name: &str, report: &serde_json::Value, md: &str) -> Outcome {
    let dir = host::target_dir().join("bench");
    std::fs::create_dir_all(&dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
    let write = |file: String, text: &str| {
        std::fs::write(dir.join(&file), text).or_else(|e| fail(format!("write {file}: {e}")))
    };
    write(
        format!("{name}.json"),
        &serde_json::to_string_pretty(report).expect("JSON serializes"),
    )?;
    write(format!("{name}.md"), md)?;
    print!("{md}");
    println!("written: target/bench/{name}.json, target/bench/{name}.md");
    Ok(0)
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
    let mut md = String::from(
        "| operation | instructions (-icount) | repeatable | TSC cycles (one run) |\n|---|---|---|---|\n",
    );
    let mut rows = Vec::new();
    for (name, instr) in &first {
        let repeat = second.iter().any(|(n, v)| n == name && v == instr);
        let cyc = cycles.iter().find(|(n, _)| n == name).map_or(0, |r| r.1);
        md.push_str(&format!("| {name} | {instr} | {repeat} | {cyc} |\n"));
        rows.push(json!({ "operation": name, "instructions": instr, "repeatable": repeat, "tsc_cycles": cyc }));
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
    md.push_str(&goals::markdown(&goal_rows));
    let accel = format!("{:?}", qemu::pick_accel(None)).to_lowercase();
    let report = json!({ "vmm": "qemu -M microvm", "accel_for_cycles": accel, "results": rows, "goals": goals::json(&goal_rows) });
    write_results("entry", &report, &md)
}
