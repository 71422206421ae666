//! `cargo xtask bench preempt`: the preemptible-section proof as numbers.
//!
//! For every preemption model, on each platform, and for each wake-up source — the timer
//! (the sampler sleeps) and a real event whose bottom half wakes the sampler (a Xen
//! event channel, a KVM device vector: `libos::test_event`) — the `latency` app runs
//! twice: with the correct raw reschedule (`hcall_resched=raw`) and with the Linux bug
//! of Thomas Gleixner, "Re: [RFC PATCH 1/5] entry: Pass pt_regs to
//! irqentry_exit_cond_resched()", LKML, 2022-08-09 (`hcall_resched=model`: the
//! reschedule follows the model). It reports the wake-up latency distribution (every
//! sample, in ticks) under QEMU's `-icount` (virtual time follows guest instructions:
//! repeatable, immune to host load). KVM (QEMU microvm) runs the preemptible in-kernel
//! section load; Xen (the app as dom0) balloons 40 MiB out and in, each a single
//! preemptible hypercall. The goal: max ≤ 1 tick with the raw reschedule, for every
//! model and both wake-up sources. Beside
//! it, `balloonbench` measures balloon throughput issued preemptibly against the same
//! hypercalls issued plainly, interleaved in one boot. Results:
//! `target/bench/preempt.{json,md,svg}`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::bench::report::{Report, Table, cell};
use crate::bench::stats;
use crate::vmm::qemu::{self, RunOpts};
use crate::vmm::{RunResult, Vmm};
use crate::{Failure, MachineArg, Outcome, Platform, build, fail, host, run};

/// The models, as `(label, libos options)`: the tests' (the last switches at run time).
use upcall_tests::LATENCY_MODELS as MODELS;
use upcall_tests::kv;

/// The reschedule variants compared.
const RESCHED: &[&str] = &["raw", "model"];

/// What wakes the sampler: `timer` (it sleeps), `event` (a bottom half).
const WAKES: &[&str] = &["timer", "event"];

/// The goal for the raw reschedule, in ticks of lateness.
const GOAL_MAX_TICKS: f64 = 1.0;

/// A platform the latency app runs on, with its load.
struct Bed {
    name: &'static str,
    platform: Platform,
    load: &'static [&'static str],
}

const BEDS: &[Bed] = &[
    Bed {
        name: "kvm (QEMU microvm, preemptible section)",
        platform: Platform::Kvm,
        load: &["load=section", "samples=40"],
    },
    Bed {
        name: "xen dom0 (balloon hypercalls)",
        platform: Platform::Xen,
        load: &["hz=500", "load=balloon", "balloon_mib=40", "samples=40"],
    },
];

/// One latency run's samples, in ticks, sorted.
struct Distribution {
    ticks: Vec<f64>,
}

impl Distribution {
    /// The `p`th percentile (nearest rank below).
    fn pct(&self, p: usize) -> f64 {
        stats::percentile(&self.ticks, p)
    }
    fn max(&self) -> f64 {
        *self.ticks.last().expect("non-empty")
    }
}

/// Parses `latency: late_us=…` and `tick=N us` from a latency run.
fn parse_latency(output: &str) -> Option<Distribution> {
    let tick_us: f64 = output
        .split("tick=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let list = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("latency: late_us="))?;
    let mut ticks = list
        .split(',')
        .map(|v| v.trim().parse::<f64>().map(|us| us / tick_us))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    if ticks.is_empty() || tick_us <= 0.0 {
        return None;
    }
    ticks.sort_by(f64::total_cmp);
    Some(Distribution { ticks })
}

fn boot(platform: Platform, image: &Path, args: &[String]) -> Result<RunResult, Failure> {
    let opts = RunOpts::for_tests(MachineArg::Microvm, 300);
    run_with(platform, image, args, opts)
}

fn run_with(
    platform: Platform,
    image: &Path,
    args: &[String],
    opts: RunOpts,
) -> Result<RunResult, Failure> {
    match platform {
        Platform::Kvm => run::boot(Vmm::Qemu, image, args, &opts, false),
        Platform::Xen => run::boot_xen(image, args, &opts, true, false),
    }
}

/// `cargo xtask bench preempt`.
pub fn preempt() -> Outcome {
    qemu::ensure_qemu()?;
    let mut rows = Vec::new();
    let mut report = Report::new("preempt");
    report.text(
        "Wake-up lateness of a high-priority task, in ticks (QEMU `-icount`), while a \
         low-priority one runs long preemptible work; woken by the timer or by a bottom \
         half (`event`). `raw`: Upcall's reschedule; `model`: the reschedule follows the \
         model (Linux's bug). Goal: max ≤ 1 tick with `raw`.\n\n",
    );
    let mut latency = Table::new(&[
        ("platform", "platform"),
        ("wake", "wake"),
        ("model", "model"),
        ("resched", "resched"),
        ("p50", "p50_ticks"),
        ("p90", "p90_ticks"),
        ("p99", "p99_ticks"),
        ("max", "max_ticks"),
        ("", "samples_ticks"),
    ]);
    let total = BEDS.len() * WAKES.len() * MODELS.len() * RESCHED.len();
    let mut done = 0;
    for bed in BEDS {
        let image = build::build_variant(
            "latency",
            bed.platform,
            false,
            &[crate::test::BUG_INJECTION],
        )?;
        for &wake in WAKES {
            for &upcall_tests::Model {
                name: model,
                args: opts,
            } in MODELS
            {
                for &resched in RESCHED {
                    done += 1;
                    eprint!("\rbench preempt: run {done}/{total}: {wake} {model} {resched}     ");
                    let args: Vec<String> = opts
                        .iter()
                        .chain(bed.load)
                        .map(|s| s.to_string())
                        .chain([format!("hcall_resched={resched}"), format!("wake={wake}")])
                        .collect();
                    let d = sample(bed, &image, &args)?;
                    let ticks = |t: f64| cell(format!("{t:.2}"), t);
                    latency.row([
                        bed.name.into(),
                        wake.into(),
                        model.into(),
                        resched.into(),
                        ticks(d.pct(50)),
                        ticks(d.pct(90)),
                        ticks(d.pct(99)),
                        ticks(d.max()),
                        cell("", d.ticks.clone()),
                    ]);
                    rows.push(Row {
                        bed: bed.name,
                        wake,
                        model,
                        resched,
                        d,
                    });
                }
            }
        }
    }
    eprintln!();
    report
        .table("latency", &latency)
        .text("\nGoal (raw reschedule, max ≤ 1 tick, every model):\n\n");
    let mut goals = Table::new(&[
        ("platform", "platform"),
        ("woken by", "wake"),
        ("worst max (ticks)", "worst_max_ticks"),
        ("goal (ticks)", "goal_max_ticks"),
        ("met", "met"),
    ]);
    for bed in BEDS {
        for &wake in WAKES {
            let worst = rows
                .iter()
                .filter(|r| r.bed == bed.name && r.wake == wake && r.resched == "raw")
                .map(|r| r.d.max())
                .fold(0.0, f64::max);
            let met = worst <= GOAL_MAX_TICKS;
            goals.row([
                bed.name.into(),
                wake.into(),
                cell(format!("{worst:.2}"), worst),
                cell(format!("≤ {GOAL_MAX_TICKS}"), GOAL_MAX_TICKS),
                cell(if met { "met" } else { "NOT met" }, met),
            ]);
        }
    }
    report.table("goals", &goals);
    let (pre, plain) = balloon_throughput()?;
    report
        .text(format!(
            "\nBalloon throughput on Xen dom0 (40 MiB out and back in per cycle, median of 7, \
             interleaved): preemptible {pre:.0} MiB/s, plain {plain:.0} MiB/s, ratio {:.3}.\n",
            pre / plain
        ))
        .value(
            "balloon_mib_per_s",
            json!({ "preemptible": pre, "plain": plain, "ratio": pre / plain }),
        )
        .text("\nPlot: target/bench/preempt.svg\n");
    let svg = plot(&rows);
    let dir = host::target_dir().join("bench");
    std::fs::create_dir_all(&dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
    std::fs::write(dir.join("preempt.svg"), svg)
        .or_else(|e| fail(format!("write preempt.svg: {e}")))?;
    report.write()
}

/// One latency run (under `-icount`) of `bed` with `args`.
fn sample(bed: &Bed, image: &Path, args: &[String]) -> Result<Distribution, Failure> {
    let mut opts = RunOpts::for_tests(MachineArg::Microvm, 300);
    opts.extra = qemu::icount_args(3);
    let r = run_with(bed.platform, image, args, opts)?;
    match (r.status, parse_latency(&r.output)) {
        (Some(0), Some(d)) => Ok(d),
        _ => fail(format!(
            "latency {} on {} failed (status {:?}):\n{}",
            args.join(" "),
            bed.name,
            r.status,
            r.output
        )),
    }
}

/// One row of the report.
struct Row {
    bed: &'static str,
    wake: &'static str,
    model: &'static str,
    resched: &'static str,
    d: Distribution,
}

/// Balloon MiB/s issued preemptibly and plainly (Xen dom0, one boot).
fn balloon_throughput() -> Result<(f64, f64), Failure> {
    eprintln!("bench preempt: balloon throughput (Xen dom0)");
    let image = build::build("balloonbench", Platform::Xen, true)?;
    let args = ["mib=40".to_string(), "rounds=7".to_string()];
    let r = boot(Platform::Xen, &image, &args)?;
    match (
        r.status,
        kv::last(&r.output, "balloon_mib_per_s_preemptible"),
        kv::last(&r.output, "balloon_mib_per_s_plain"),
    ) {
        (Some(0), Some(pre), Some(plain)) if plain > 0.0 => Ok((pre, plain)),
        _ => fail(format!(
            "balloonbench failed (status {:?}):\n{}",
            r.status, r.output
        )),
    }
}

/// Plot geometry.
const LEFT: f64 = 330.0;
const WIDTH: f64 = 560.0;
const ROW: f64 = 18.0;
/// The x axis: log10 of ticks, from 10^MIN_EXP to 10^MAX_EXP.
const MIN_EXP: f64 = -2.0;
const MAX_EXP: f64 = 3.0;

fn x_of(ticks: f64) -> f64 {
    let e = ticks.max(10f64.powf(MIN_EXP)).log10().min(MAX_EXP);
    LEFT + (e - MIN_EXP) / (MAX_EXP - MIN_EXP) * WIDTH
}

/// An SVG of the distributions: one row per platform/model/resched, a bar from p10 to
/// p90, a tick at the median, a whisker to the max, every sample as a faint dot; log x.
fn plot(rows: &[Row]) -> String {
    let height = 60.0 + ROW * rows.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">Wake-up lateness (ticks, log scale): \
         raw reschedule (blue) vs the model-following bug (red)</text>\n",
        LEFT + WIDTH + 30.0
    );
    let bottom = 40.0 + ROW * rows.len() as f64;
    let mut exp = MIN_EXP;
    while exp <= MAX_EXP {
        let x = x_of(10f64.powf(exp));
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"35\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 14.0,
            10f64.powf(exp)
        );
        exp += 1.0;
    }
    let x2 = x_of(2.0);
    let _ = writeln!(
        s,
        "<line x1=\"{x2:.1}\" y1=\"35\" x2=\"{x2:.1}\" y2=\"{bottom}\" stroke=\"#090\" \
         stroke-dasharray=\"4 3\"/><text x=\"{x2:.1}\" y=\"{:.1}\" fill=\"#090\" \
         text-anchor=\"middle\">bound: 2 ticks</text>",
        bottom + 28.0
    );
    for (i, row) in rows.iter().enumerate() {
        let (bed, model, resched, d) = (row.bed, row.model, row.resched, &row.d);
        let y = 45.0 + ROW * i as f64;
        let color = if resched == "raw" {
            "#1f5fbf"
        } else {
            "#c0392b"
        };
        let short = bed.split(' ').next().unwrap_or(bed);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\">{short} · {} · {model} · {resched}</text>",
            y + 4.0,
            row.wake
        );
        for &t in &d.ticks {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"1.5\" fill=\"{color}\" fill-opacity=\"0.25\"/>",
                x_of(t)
            );
        }
        let (a, b, m, max) = (
            x_of(d.pct(10)),
            x_of(d.pct(90)),
            x_of(d.pct(50)),
            x_of(d.max()),
        );
        let _ = writeln!(
            s,
            "\n<line x1=\"{b:.1}\" y1=\"{y:.1}\" x2=\"{max:.1}\" y2=\"{y:.1}\" stroke=\"{color}\"/>\
             <rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\" fill=\"{color}\" \
             fill-opacity=\"0.5\"/><line x1=\"{m:.1}\" y1=\"{:.1}\" x2=\"{m:.1}\" y2=\"{:.1}\" \
             stroke=\"black\" stroke-width=\"2\"/>",
            y - 4.0,
            (b - a).max(1.0),
            y - 6.0,
            y + 6.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latency_output() {
        let out = "latency: load=Section model=none tick=10000 us samples=3\n\
                   latency: late_us=0,5000,30000\nmax_wake_latency_ticks=3\n";
        let d = parse_latency(out).unwrap();
        assert_eq!(d.ticks, [0.0, 0.5, 3.0]);
        assert_eq!(d.pct(50), 0.5);
        assert_eq!(d.max(), 3.0);
        assert!(parse_latency("latency: late_us=\n tick=10 us").is_none());
        assert!(parse_latency("nothing").is_none());
    }

    #[test]
    fn plot_is_well_formed_svg() {
        let d = Distribution {
            ticks: vec![0.001, 1.0, 50.0, 5000.0],
        };
        let svg = plot(&[Row {
            bed: "kvm x",
            wake: "timer",
            model: "none",
            resched: "raw",
            d,
        }]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        // Clamped to the axis.
        assert!((x_of(1e-9) - LEFT).abs() < 1e-9);
        assert!((x_of(1e9) - (LEFT + WIDTH)).abs() < 1e-9);
    }
}
