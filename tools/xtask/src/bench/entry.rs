//! `cargo xtask bench entry`: the entry core's costs (`entrybench`): exception round
//! trip, task switch, timer wake-up, as instruction counts under `-icount` (run twice to
//! show they repeat) and TSC cycles. Results go to `target/bench/entry.{json,md}`.

use std::path::Path;

use crate::bench::goals::{self, Row};
use crate::bench::report::{Report, Table};
use crate::vmm::qemu::{self, RunOpts};
use crate::{MachineArg, Outcome, Platform, build, fail};

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
