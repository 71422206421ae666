//! `cargo xtask bench soak [--minutes N] [--xen]`: `httpd` under steady `ab -k` load
//! mixed with idle and slow clients (kept open, reopened when the server closes them)
//! for N minutes. Every window reports requests/s and failed requests, and samples heap
//! in use and open connections from `/status`; the report gives the slope of heap in
//! use (least squares) and a plot. KVM runs over a TAP device (the hostile clients
//! reach the guest directly); `--xen` adds an xl domU behind dom0's bridge (QEMU user
//! networking, fewer idle clients: QEMU holds a host socket for each). Results go to
//! `target/bench/soak.{json,md,svg}`. Goal: 0 failed requests and no heap growth,
//! judged on heap in use with no client connected, after the run against before it
//! (under load heap in use follows the open connections).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::report::{Report, Table, cell};
use crate::bench::stats;
use crate::test::net::hostile::{self, spawn_client, strings};
use crate::test::net::{self as nettest, Guest};
use crate::testbed::dom0;
use crate::vmm::qemu;
use crate::{MachineArg, Outcome, Platform, build, fail, host};

/// Length of one load window.
const WINDOW_S: u32 = 15;
/// `ab` concurrency of the well-behaved load.
const CONCURRENCY: u32 = 8;
/// The server's time constants: small, so the hostile clients churn.
const HTTPD_ARGS: &[&str] = &["idle-ms=3000", "head-ms=4000", "queue-ms=3000"];

/// One window's measurements.
#[derive(Debug, Clone)]
struct Sample {
    /// Seconds since the load started (end of the window).
    t: f64,
    complete: u64,
    failed: u64,
    rps: f64,
    heap_used: u64,
    open: u64,
}

/// One bed's run.
struct Run {
    bed: &'static str,
    idle: u32,
    slow: u32,
    samples: Vec<Sample>,
    hostile: String,
    /// Heap in use with no client connected, before and after the load.
    quiet_before: u64,
    quiet_after: u64,
    /// Why `ab` gave up a window, if it did.
    ab_errors: Vec<String>,
}

/// What a run measured: samples, the hostile client's report, quiet heap before and
/// after, `ab`'s errors.
type Measured = (Vec<Sample>, String, u64, u64, Vec<String>);

/// Heap in use once no connection is open or closing (see `hostile::settle`).
fn quiet_heap(host: &str, port: u16) -> Result<u64, String> {
    let page = hostile::settle(host, port)?;
    nettest::status_value(&page, "heap_used=")
}

/// `cargo xtask bench soak`.
pub fn soak(minutes: u32, xen: bool) -> Outcome {
    if minutes == 0 {
        return fail("--minutes must be at least 1");
    }
    qemu::ensure_qemu()?;
    let image_kvm = build::build("httpd", Platform::Kvm, true)?;
    let duration = Duration::from_secs(u64::from(minutes) * 60);
    let mut runs = Vec::new();
    eprintln!("bench soak: KVM (QEMU microvm, TAP) for {minutes} min");
    let mut args: Vec<&str> = vec!["ip=@TAP_GUEST@/24"];
    args.extend(HTTPD_ARGS);
    let (tap, guest) = hostile::boot_on_tap(&image_kvm, &args, 128, MachineArg::Microvm)
        .or_else(|e| fail(format!("bench soak: {e}")))?;
    let host = tap.guest.clone();
    let run = soak_guest(
        guest,
        "kvm (QEMU microvm, TAP)",
        &host,
        80,
        300,
        50,
        duration,
    );
    drop(tap);
    runs.push(run.or_else(|e| fail(format!("bench soak: kvm: {e}")))?);
    if xen {
        eprintln!("bench soak: Xen xl domU for {minutes} min");
        let image = build::build("httpd", Platform::Xen, true)?;
        let tb = dom0::ensure_xl_testbed()?;
        let port = nettest::free_port(qemu::Proto::Tcp).or_else(fail)?;
        let fwd = qemu::Forward {
            proto: qemu::Proto::Tcp,
            host: port,
            guest: 80,
        };
        let cmdline =
            qemu::kernel_cmdline(&HTTPD_ARGS.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        // Its own domain description: the default xl time limit (300 s) is shorter
        // than a soak.
        let domain = crate::vmm::xl_run::XlDomain {
            image: image.clone(),
            cmdline,
            memory_mb: 128,
            actions: Vec::new(),
            timeout_secs: minutes * 60 + 600,
            stream: true,
            settle: false,
            net: Some(vec![fwd]),
            ramdisk: None,
            vcpus: 1,
        };
        let qemu_args = crate::vmm::xl_run::xl_run_qemu_args(&tb, &[domain])?.qemu_args;
        let guest = Guest::boot(&image, qemu_args).or_else(fail)?;
        let run = soak_guest(
            guest,
            "xen (xl domU, netfront)",
            "127.0.0.1",
            port,
            60,
            20,
            duration,
        );
        runs.push(run.or_else(|e| fail(format!("bench soak: xen: {e}")))?);
    }
    report(&runs, minutes)
}

/// Runs the load against a booted guest for `duration`; stops the guest.
fn soak_guest(
    mut guest: Guest,
    bed: &'static str,
    host: &str,
    port: u16,
    idle: u32,
    slow: u32,
    duration: Duration,
) -> Result<Run, String> {
    let outcome = (|| -> Result<Measured, String> {
        nettest::wait_until(&mut guest, port, &|p| {
            nettest::http_get_ok_at(host, p, "/status")
        })?;
        let quiet_before = quiet_heap(host, port)?;
        let seconds = duration.as_secs();
        let hostile_args = strings(&[&"hold", &host, &port, &(idle + slow), &seconds, &slow]);
        let mut child = spawn_client(&hostile_args)?;
        let start = Instant::now();
        let mut samples = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let url = format!("http://{host}:{port}/");
        let sampled = (|| -> Result<(), String> {
            while start.elapsed() < duration {
                let out = nettest::client(
                    "ab",
                    &strings(&[
                        &"-q",
                        &"-k",
                        &"-s",
                        &"30",
                        &"-t",
                        &WINDOW_S,
                        &"-n",
                        &100_000_000u64,
                        &"-c",
                        &CONCURRENCY,
                        &url,
                    ]),
                )?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                // ab gives up a whole run on a socket error (a reset, a time-out):
                // that window counts as one failure, with ab's words kept.
                let (complete, failed, rps) = match upcall_tests::net::parse_ab(&stdout) {
                    Ok(r) => (r.complete, r.failed + r.non_2xx, r.requests_per_second),
                    Err(_) => {
                        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                        let done = stdout
                            .lines()
                            .find_map(|l| {
                                l.trim()
                                    .strip_prefix("Total of ")?
                                    .split(' ')
                                    .next()?
                                    .parse()
                                    .ok()
                            })
                            .unwrap_or(0);
                        eprintln!("bench soak: {bed}: ab gave up: {why} ({done} requests done)");
                        errors.push(why);
                        (done, 1, done as f64 / f64::from(WINDOW_S))
                    }
                };
                let page = hostile::status(host, port)?;
                let s = Sample {
                    t: start.elapsed().as_secs_f64(),
                    complete,
                    failed,
                    rps,
                    heap_used: nettest::status_value(&page, "heap_used=")?,
                    open: nettest::status_value(&page, "connections_open=")?,
                };
                eprintln!(
                    "bench soak: {bed}: t={:.0}s {:.0} req/s, {} failed, heap {} KiB, {} open",
                    s.t,
                    s.rps,
                    s.failed,
                    s.heap_used / 1024,
                    s.open
                );
                samples.push(s);
                if let Some(how) = guest.exited() {
                    return Err(format!("the guest ended ({how})"));
                }
            }
            Ok(())
        })();
        if sampled.is_err() {
            let _ = child.kill();
        }
        // It ends by itself when the time is up.
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        sampled?;
        let hostile = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let quiet_after = quiet_heap(host, port)?;
        Ok((samples, hostile, quiet_before, quiet_after, errors))
    })();
    let (console, early) = guest.stop();
    if let Some(how) = early {
        return Err(format!("the guest stopped by itself ({how}):\n{console}"));
    }
    let (samples, hostile, quiet_before, quiet_after, ab_errors) =
        outcome.map_err(|e| format!("{e}\n--- console ---\n{console}"))?;
    Ok(Run {
        bed,
        idle,
        slow,
        samples,
        hostile,
        quiet_before,
        quiet_after,
        ab_errors,
    })
}

/// What a plot panel shows of a sample.
type Metric = fn(&Sample) -> f64;

/// A polyline plot of heap in use (KiB) and requests/s over time, one panel each.
fn svg(runs: &[Run]) -> String {
    let (w, h, pad) = (720.0, 200.0, 40.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        (h + pad) * 2.0 * runs.len() as f64
    );
    let colors = ["#1f77b4", "#d62728"];
    for (i, run) in runs.iter().enumerate() {
        let panels: [(&str, Metric); 2] = [
            ("heap in use (KiB)", |s| s.heap_used as f64 / 1024.0),
            ("requests/s", |s| s.rps),
        ];
        for (j, (label, f)) in panels.iter().enumerate() {
            let top = (i * 2 + j) as f64 * (h + pad) + pad;
            let tmax = run.samples.last().map_or(1.0, |s| s.t).max(1.0);
            let ymax = run.samples.iter().map(f).fold(1.0, f64::max) * 1.1;
            let points: Vec<String> = run
                .samples
                .iter()
                .map(|s| {
                    format!(
                        "{:.1},{:.1}",
                        pad + s.t / tmax * (w - 2.0 * pad),
                        top + h - f(s) / ymax * h
                    )
                })
                .collect();
            out += &format!(
                "<text x=\"{pad}\" y=\"{:.0}\">{} — {label} (0 to {ymax:.0}) over {tmax:.0} s</text>\n\
                 <rect x=\"{pad}\" y=\"{top}\" width=\"{}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\n\
                 <polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                top - 6.0,
                run.bed,
                w - 2.0 * pad,
                colors[j],
                points.join(" ")
            );
        }
    }
    out + "</svg>\n"
}

fn report(runs: &[Run], minutes: u32) -> Outcome {
    let dir = host::target_dir().join("bench");
    std::fs::create_dir_all(&dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
    let mut report = Report::new("soak");
    report.text(format!(
        "# Soak: httpd under `ab -k -c {CONCURRENCY}` with idle and slow clients, {minutes} min\n\n\
         Server: `{}`. Each row is one {WINDOW_S} s `ab` window; heap and open connections are \
         sampled from `/status` after it. Goal: 0 failed requests, no heap growth.\n\n",
        HTTPD_ARGS.join(" ")
    ));
    let mut goal_met = true;
    let mut summaries = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let failed: u64 = run.samples.iter().map(|s| s.failed).sum();
        let complete: u64 = run.samples.iter().map(|s| s.complete).sum();
        // Under load, heap in use follows the open connections (~136 KiB each), so
        // the slope over the windows is noisy information; growth is judged on the
        // quiet heap (no client connected) after the run against before it.
        let points: Vec<(f64, f64)> = run
            .samples
            .iter()
            .map(|s| (s.t / 60.0, s.heap_used as f64))
            .collect();
        let per_min = stats::slope(&points);
        let growth = (run.quiet_after as f64 - run.quiet_before as f64)
            / run.quiet_before.max(1) as f64
            * 100.0;
        let flat = growth.abs() <= 5.0;
        goal_met &= failed == 0 && flat;
        report.text(format!(
            "## {}\n\n{} idle + {} slow clients (reopened when closed); hostile client: `{}`\n\n\
             {complete} requests, **{failed} failed**. Heap in use with no client: {} KiB before, \
             {} KiB after ({growth:+.1} %: {}); slope of heap in use under load: {per_min:+.0} B/min.\n\n",
            run.bed,
            run.idle,
            run.slow,
            run.hostile,
            run.quiet_before / 1024,
            run.quiet_after / 1024,
            if flat { "no growth" } else { "GROWTH" }
        ));
        for e in &run.ab_errors {
            report.text(format!("- `ab` gave up a window: `{e}`\n"));
        }
        if !run.ab_errors.is_empty() {
            report.text("\n");
        }
        let mut samples = Table::new(&[
            ("t (s)", "t_s"),
            ("requests/s", "requests_per_second"),
            ("failed", "failed"),
            ("heap in use (KiB)", "heap_used"),
            ("open connections", "connections_open"),
            ("", "complete"),
        ]);
        for s in &run.samples {
            samples.row([
                cell(format!("{:.0}", s.t), s.t),
                cell(format!("{:.0}", s.rps), s.rps),
                s.failed.into(),
                cell(s.heap_used / 1024, s.heap_used),
                s.open.into(),
                s.complete.into(),
            ]);
        }
        report
            .table(&format!("run{i}_samples"), &samples)
            .text("\n");
        summaries.push(json!({
            "bed": run.bed,
            "idle_clients": run.idle,
            "slow_clients": run.slow,
            "complete": complete,
            "failed": failed,
            "heap_slope_bytes_per_min": per_min,
            "quiet_heap_before": run.quiet_before,
            "quiet_heap_after": run.quiet_after,
            "quiet_heap_growth_percent": growth,
            "ab_errors": run.ab_errors,
            "samples": format!("run{i}_samples"),
        }));
    }
    report
        .text(format!(
            "Goal (0 failed, quiet heap within 5 %): **{}**. Plot: `soak.svg`.\n",
            if goal_met { "met" } else { "NOT met" }
        ))
        .value("minutes", minutes)
        .value("window_s", WINDOW_S)
        .value("runs", summaries)
        .value("goal_met", goal_met);
    let path = dir.join("soak.svg");
    std::fs::write(&path, svg(runs)).or_else(|e| fail(format!("write {}: {e}", path.display())))?;
    report.write()?;
    Ok(if goal_met { 0 } else { 1 })
}
