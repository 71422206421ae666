//! `cargo xtask bench smp`: what more vCPUs buy a CPU-bound app, and the IPI round trip.
//!
//! The `smpbench` app runs a fixed amount of pure computation split over worker tasks
//! and reports the completion time in guest TSC cycles, then times `smp::call_on` to
//! another (idle) CPU: a call-function IPI there and the answer back. It runs on QEMU
//! microvm with 1, 2 and 4 vCPUs:
//!
//! - **Timed runs** (multi-threaded TCG, one host thread per vCPU): completion cycles
//!   and IPI round-trip cycles, `runs` boots of each CPU count interleaved, medians.
//!   The figure of merit is the speed-up over 1 vCPU measured in the same run, set
//!   against what the host allows: a vCPU is a host thread, so the speed-up cannot
//!   exceed the host's cores (4 vCPUs on a 2-core host cannot scale past 2).
//!   Not deterministic: host scheduling, other load, TCG's translation.
//! - **Counted runs** (`-icount shift=0`, which QEMU allows only with single-threaded
//!   TCG: the vCPUs run round-robin on one host thread): the guest TSC then counts
//!   instructions of all vCPUs (idle time skipped), so the job's total instructions
//!   and the round trip's instructions are deterministic, run twice to show it. They
//!   measure the work and the SMP overhead, not parallel speed.
//! - **Exact counts** in every run: the workers' checksum (the same work whatever ran
//!   where: it must match across all runs) and the call-function handler's runs.
//!
//! Results: `target/bench/smp.{json,md}`.

use std::path::Path;

use serde_json::json;
use upcall_tests::kv;

use crate::bench::goals;
use crate::bench::report::{Report, Table, cell};
use crate::bench::stats::median;
use crate::vmm::qemu::{self, RunOpts};
use crate::{Accel, Failure, MachineArg, Outcome, Platform, build, fail};

/// The vCPU counts compared.
const CPUS: [u32; 3] = [1, 2, 4];
/// Worker tasks (the same for every CPU count: the work is fixed).
const WORKERS: u64 = 4;
/// Work units per worker in timed runs (about 1 s on 1 vCPU under TCG here).
const UNITS_TIMED: u64 = 100_000;
/// Work units per worker in counted runs (-icount TCG is slower).
const UNITS_COUNTED: u64 = 20_000;
/// IPI round trips per run.
const IPIS: u64 = 2_000;

/// The `key=value` words of an `smpbench` run.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    checksum: String,
    completion_cycles: u64,
    cpus_online: u64,
    cpus_used: u64,
    /// `None` on one CPU.
    ipi_cycles: Option<u64>,
    /// Tasks taken from another CPU's run queue during the job.
    steals: u64,
    /// Switches into a task on another CPU than its last, during the job.
    migrations: u64,
    ipi_handler_runs: u64,
}

fn parse_sample(output: &str) -> Option<Sample> {
    if !output.contains("smpbench: done") {
        return None;
    }
    let num = |k: &str| kv::last::<u64>(output, k);
    let round_trips = num("ipi_round_trips")?;
    Some(Sample {
        checksum: kv::last(output, "checksum")?,
        completion_cycles: num("completion_cycles")?,
        cpus_online: num("cpus")?,
        cpus_used: num("cpus_used")?,
        steals: num("steals")?,
        migrations: num("migrations")?,
        ipi_cycles: if round_trips > 0 {
            Some(num("ipi_cycles_per_round_trip")?)
        } else {
            None
        },
        ipi_handler_runs: num("ipi_call_function_runs").unwrap_or(0),
    })
}

/// One boot of `smpbench` on `cpus` vCPUs, counted (`-icount`) or timed.
fn boot(image: &Path, cpus: u32, counted: bool) -> Result<Sample, Failure> {
    let mut opts = RunOpts::for_tests(MachineArg::Microvm, 300).with_smp(cpus);
    opts.accel = Some(Accel::Tcg);
    let units = if counted {
        opts.extra = qemu::icount_args(0);
        UNITS_COUNTED
    } else {
        UNITS_TIMED
    };
    let args = format!("workers={WORKERS} units={units} ipis={IPIS}");
    let r = qemu::run_image(image, &args, &opts, false)?;
    let sample = match (r.status, parse_sample(&r.output)) {
        (Some(0), Some(s)) => s,
        _ => {
            return fail(format!(
                "smpbench {args} on {cpus} vCPUs failed (status {:?}):\n{}",
                r.status, r.output
            ));
        }
    };
    if sample.cpus_online != u64::from(cpus) {
        return fail(format!(
            "smpbench on -smp {cpus} saw {} CPUs online",
            sample.cpus_online
        ));
    }
    if cpus > 1 && sample.ipi_handler_runs != IPIS {
        return fail(format!(
            "smpbench on {cpus} vCPUs: the call-function handler ran {} times for {IPIS} IPIs",
            sample.ipi_handler_runs
        ));
    }
    Ok(sample)
}

/// The host's 1-minute load average (`/proc/loadavg`), or "?".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// What the host allows: the speed-up `cpus` vCPUs can reach on `host_cores` cores.
fn ideal_speedup(cpus: u32, host_cores: usize) -> f64 {
    f64::from(cpus).min(host_cores as f64)
}

/// `cargo xtask bench smp`.
pub fn run(runs: usize) -> Outcome {
    if runs == 0 {
        return fail("--runs must be at least 1");
    }
    qemu::ensure_qemu()?;
    let image = build::build("smpbench", Platform::Kvm, true)?;
    let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Other work on the host takes cores from the vCPU threads: record it.
    let load_before = load_average();

    // Timed runs, interleaved so that host noise spreads over every CPU count.
    let mut timed: Vec<Vec<Sample>> = vec![Vec::new(); CPUS.len()];
    for i in 0..runs {
        for (k, &cpus) in CPUS.iter().enumerate() {
            eprint!("\rbench smp: timed run {}/{runs}, {cpus} vCPUs   ", i + 1);
            timed[k].push(boot(&image, cpus, false)?);
        }
    }
    eprintln!();
    // Counted runs, twice each.
    let mut counted = Vec::new();
    for &cpus in &CPUS {
        eprintln!("bench smp: counted runs (-icount), {cpus} vCPUs");
        let a = boot(&image, cpus, true)?;
        let b = boot(&image, cpus, true)?;
        let repeatable = a == b;
        counted.push((cpus, a, repeatable));
    }
    // The same work everywhere: one checksum per work size.
    let checksums = |samples: &mut dyn Iterator<Item = &Sample>| {
        let mut c: Vec<&str> = samples.map(|s| s.checksum.as_str()).collect();
        c.dedup();
        c.len()
    };
    if checksums(&mut timed.iter().flatten()) != 1
        || checksums(&mut counted.iter().map(|c| &c.1)) != 1
    {
        return fail(
            "smpbench checksums differ between runs: the workers did not all do their work",
        );
    }

    let load_after = load_average();
    let base = median(timed[0].iter().map(|s| s.completion_cycles).collect());
    let base_counted = counted[0].1.completion_cycles;
    let mut report = Report::new("smp");
    report.text(format!(
        "`smpbench`: {WORKERS} worker tasks × {UNITS_TIMED} units of register-only work \
         (fixed total), QEMU microvm, TCG; host: {host_cores} cores. Timed: \
         `-accel tcg,thread=multi` (one host thread per vCPU), {runs} runs of each CPU \
         count interleaved, medians of guest TSC cycles. Counted: `-icount shift=0` with \
         `thread=single` (QEMU refuses -icount with multi-threaded TCG), {WORKERS} × \
         {UNITS_COUNTED} units: the guest TSC counts instructions of all vCPUs run \
         round-robin on one host thread, so these repeat exactly but show work and \
         overhead, not parallel speed. Host load average (1 min) before and after: \
         {load_before} / {load_after}.\n\n"
    ));
    let mut results = Table::new(&[
        ("vCPUs", "vcpus"),
        ("completion (cycles, median)", "completion_cycles_median"),
        ("speed-up vs 1", "speedup_vs_1"),
        ("host allows", "host_allows"),
        ("efficiency", "efficiency"),
        ("CPUs used", "cpus_used_min"),
        (
            "IPI round trip (cycles, median)",
            "ipi_round_trip_cycles_median",
        ),
        ("instructions, job (-icount)", "job_instructions"),
        ("vs 1 vCPU", "job_instructions_vs_1"),
        ("steals / migrations (-icount)", "steals_migrations"),
        (
            "IPI round trip (instructions)",
            "ipi_round_trip_instructions",
        ),
        ("repeatable", "repeatable"),
        ("", "completion_cycles_all"),
        ("", "ipi_round_trip_cycles_all"),
    ]);
    for (k, &cpus) in CPUS.iter().enumerate() {
        let completion = median(timed[k].iter().map(|s| s.completion_cycles).collect());
        let ipi: Vec<u64> = timed[k].iter().filter_map(|s| s.ipi_cycles).collect();
        let ipi_median = (!ipi.is_empty()).then(|| median(ipi.clone()));
        let used = timed[k].iter().map(|s| s.cpus_used).min().unwrap_or(0);
        let speedup = base as f64 / completion as f64;
        let ideal = ideal_speedup(cpus, host_cores);
        let (_, c, repeatable) = &counted[k];
        let or_dash =
            |v: Option<u64>| cell(v.map_or_else(|| "–".to_string(), |v| v.to_string()), v);
        let vs_1 = c.completion_cycles as f64 / base_counted as f64;
        results.row([
            u64::from(cpus).into(),
            completion.into(),
            cell(format!("{speedup:.2}×"), speedup),
            cell(format!("{ideal:.0}×"), ideal),
            cell(format!("{:.0} %", 100.0 * speedup / ideal), speedup / ideal),
            used.into(),
            or_dash(ipi_median),
            c.completion_cycles.into(),
            cell(format!("{vs_1:.4}"), vs_1),
            cell(
                format!("{} / {}", c.steals, c.migrations),
                json!({ "steals": c.steals, "migrations": c.migrations }),
            ),
            or_dash(c.ipi_cycles),
            cell(if *repeatable { "yes" } else { "NO" }, *repeatable),
            cell(
                "",
                timed[k]
                    .iter()
                    .map(|s| s.completion_cycles)
                    .collect::<Vec<_>>(),
            ),
            cell("", ipi),
        ]);
    }
    report.table("results", &results);
    let oversubscribed: Vec<u32> = CPUS
        .iter()
        .copied()
        .filter(|&c| c as usize > host_cores)
        .collect();
    if !oversubscribed.is_empty() {
        report.text(format!(
            "\nThis host has {host_cores} cores: {} vCPUs share them, so their speed-up is \
             capped at {host_cores}× (\"host allows\"); more vCPUs than cores only add \
             switching between vCPU threads, and an IPI waits until the host runs the \
             target's thread.\n",
            oversubscribed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    report.text(format!(
        "\nExact in every run: the workers' checksum ({}, the same on every CPU count) and \
         the call-function handler's runs ({IPIS} per run). Not deterministic: the timed \
         cycles (host scheduling, other load on the host, TCG translation).\n",
        timed[0][0].checksum
    ));
    // Issue 17's row: the idle IPI round trip, counted, on the largest CPU count.
    let ipi_rows: Vec<goals::Row> = counted
        .iter()
        .rev()
        .find_map(|(cpus, c, _)| Some((cpus, c.ipi_cycles?)))
        .map(|(_, v)| {
            goals::Row::count(
                "idle IPI round trip, instructions (-icount, most vCPUs)",
                v,
                goals::IPI_ROUND_TRIP_INSTRUCTIONS,
                "",
            )
        })
        .into_iter()
        .collect();
    report
        .text("\n")
        .table("goals", &goals::table(&ipi_rows))
        .value("app", "smpbench")
        .value("vmm", "qemu -M microvm, tcg")
        .value("host_cores", host_cores)
        .value("workers", WORKERS)
        .value("units_timed", UNITS_TIMED)
        .value("units_counted", UNITS_COUNTED)
        .value("ipis_per_run", IPIS)
        .value("runs", runs)
        .value(
            "host_load_average_1min",
            json!({ "before": load_before, "after": load_after }),
        )
        .value("checksum", timed[0][0].checksum.clone())
        .write()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "upcall: 2 CPUs online\ncpus=2\nworkers=4\nunits=10 steps_per_unit=1000\n\
        steals=3\nmigrations=5\nchecksum=0xab\ncompletion_cycles=1234\ncpus_used=2\n\
        ipi_from_cpu=0 ipi_to_cpu=1\n\
        ipi_round_trips=2000\nipi_cycles_per_round_trip=750\nipi_call_function_runs=2000\n\
        smpbench: done\n";

    #[test]
    fn parses_smpbench_output() {
        let s = parse_sample(OUT).unwrap();
        assert_eq!(s.checksum, "0xab");
        assert_eq!(s.completion_cycles, 1234);
        assert_eq!((s.cpus_online, s.cpus_used), (2, 2));
        assert_eq!(s.ipi_cycles, Some(750));
        assert_eq!(s.ipi_handler_runs, 2000);
        assert_eq!((s.steals, s.migrations), (3, 5));
        let one = "cpus=1\nsteals=0\nmigrations=0\nchecksum=0xab\ncompletion_cycles=9\n\
                   cpus_used=1\n\
                   ipi_round_trips=0\nsmpbench: done\n";
        assert_eq!(parse_sample(one).unwrap().ipi_cycles, None);
        // An unfinished run is no sample.
        assert!(parse_sample(&OUT.replace("smpbench: done", "")).is_none());
    }

    #[test]
    fn host_caps_the_speedup() {
        assert_eq!(ideal_speedup(1, 2), 1.0);
        assert_eq!(ideal_speedup(4, 2), 2.0);
        assert_eq!(ideal_speedup(4, 8), 4.0);
    }
}
