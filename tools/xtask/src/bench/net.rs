//! `cargo xtask bench net`: `httpd` against Linux + nginx (and busybox's `httpd`)
//! serving the same files on the same QEMU setup, in the same run.
//!
//! On KVM every guest boots on `-M pc` with qboot, TCG, the same memory and a
//! virtio-net-pci card on QEMU user networking; on Xen all are xl domUs of the Linux
//! dom0 test bed with a vif on its bridge (netfront against netback). The Linux guest
//! is Debian's kernel with Debian 12's nginx (keep-alive on, one worker) or busybox's
//! `httpd` in an initramfs ([`crate::testbed::nginx_guest`]). The rows
//! ([`crate::bench::net_load::WORKLOADS`]): `wrk` with keep-alive and `ab` with one
//! request per connection, each on a small page, 256 KiB and 10 MiB (busybox, which has
//! no keep-alive, runs the `ab` rows only). Each row reports requests/s, MiB/s, their
//! ratios against nginx, QEMU's CPU time per request (host `/proc/<pid>/stat`, user +
//! system, all threads: on Xen that is the whole machine, dom0 and netback included),
//! Upcall's frames per request (from its `/status` counters), and the row's goal with
//! whether this run meets it. Wall time is noisy here, so Upcall and nginx are booted
//! together and measured alternately, workload by workload, [`ROUNDS`] times, and
//! every figure is a median; the figures of merit are the ratios measured in this run.
//! Results go to `target/bench/net.{json,md}`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::bench::net_load::{self as netbench_load, Figure, Measured, Tool, WORKLOADS, Workload};
use crate::bench::report::{Report, Table, cell};
use crate::test::net::{self as nettest, Guest};
use crate::testbed::{dom0, nginx_guest};
use crate::vmm::qemu::{self, Forward, Proto, RunOpts};
use crate::vmm::xl_run::{self, XlDomain};
use crate::{Failure, MachineArg, Outcome, Platform, build, fail, host};

/// Guest memory for every guest, MiB.
const MEMORY: u32 = 256;

/// How a guest of the benchmark boots: its image (for symbols) and its QEMU
/// arguments given the port forward to its port 80.
struct Setup<'a> {
    what: &'a str,
    image: &'a Path,
    qemu_args: Box<dyn Fn(Forward) -> Result<Vec<String>, String> + 'a>,
    probe_path: &'a str,
}

impl<'a> Setup<'a> {
    /// A KVM-platform image (or a Linux kernel with `extra` arguments) on `-M pc`.
    fn kvm(what: &'a str, image: &'a Path, cmdline: &'a str, extra: Vec<String>) -> Self {
        Setup {
            what,
            image,
            qemu_args: Box::new(move |fwd| {
                let mut opts = RunOpts::for_tests(MachineArg::Qboot, 0);
                opts.memory = MEMORY;
                opts.extra = extra.clone();
                opts.forwards = vec![fwd];
                Ok(qemu::qemu_args(image, cmdline, &opts))
            }),
            probe_path: "/index.html",
        }
    }

    /// An xl domU with a vif (and optionally a ramdisk).
    fn xen(what: &'a str, image: &'a Path, cmdline: &'a str, ramdisk: Option<PathBuf>) -> Self {
        Setup {
            what,
            image,
            qemu_args: Box::new(move |fwd| {
                let tb = dom0::ensure_xl_testbed().map_err(|f| f.message)?;
                let domain = XlDomain {
                    image: image.to_path_buf(),
                    cmdline: cmdline.to_string(),
                    memory_mb: MEMORY,
                    actions: Vec::new(),
                    timeout_secs: 1800,
                    stream: true,
                    settle: false,
                    net: Some(vec![fwd]),
                    ramdisk: ramdisk.clone(),
                    vcpus: 1,
                };
                xl_run::xl_run_qemu_args(&tb, &[domain])
                    .map(|r| r.qemu_args)
                    .map_err(|f| f.message)
            }),
            probe_path: "/index.html",
        }
    }
}

/// Rounds of every workload per pair of guests: Upcall and nginx run alternately, one
/// workload at a time, both booted, and each figure is the median of its rounds (wall
/// time on a shared host drifts; interleaving spreads the drift over both).
const ROUNDS: usize = 3;

/// A booted guest of the benchmark.
struct Live<'a> {
    what: &'a str,
    guest: Guest,
    pid: u32,
    port: u16,
    /// Upcall's interface in `/status` (Linux has no such page).
    iface: Option<&'a str>,
}

impl<'a> Live<'a> {
    /// Boots `setup` and waits until its probe path answers.
    fn boot(setup: &Setup<'a>, iface: Option<&'a str>) -> Result<Live<'a>, String> {
        let port = nettest::free_port(Proto::Tcp)?;
        let fwd = Forward {
            proto: Proto::Tcp,
            host: port,
            guest: 80,
        };
        eprintln!("bench net: booting {}", setup.what);
        let mut guest = Guest::boot(setup.image, (setup.qemu_args)(fwd)?)?;
        let pid = guest.pid();
        let mut live = Live {
            what: setup.what,
            guest,
            pid,
            port,
            iface,
        };
        let probe = setup.probe_path;
        match nettest::wait_until(&mut live.guest, port, &|p| nettest::http_get_ok(p, probe)) {
            Ok(()) => Ok(live),
            Err(e) => Err(live.stop_with(e)),
        }
    }

    /// Upcall's frame count (rx + tx) from its `/status` page.
    fn frames(&self) -> Option<u64> {
        let iface = self.iface?;
        let page = nettest::curl(self.port, "/status").ok()?;
        let page = String::from_utf8_lossy(&page);
        let v = |k: &str| nettest::status_value(&page, &format!("{iface}.{k}=")).ok();
        Some(v("rx_frames")? + v("tx_frames")?)
    }

    /// Runs `w` once: its figures, QEMU's CPU time and (Upcall) frames per request.
    fn run(&self, w: &Workload) -> Result<Measured, String> {
        eprintln!("bench net: {}: {}", self.what, w.name);
        let frames_before = self.frames();
        let cpu_before = netbench_load::cpu_seconds(self.pid)?;
        let (requests, errors, rps, mibps) = netbench_load::run(w, self.port)?;
        let cpu = netbench_load::cpu_seconds(self.pid)? - cpu_before;
        let frames_after = self.frames();
        // Reported, not fatal: the tests judge correctness; a benchmark says what
        // happened (busybox's httpd occasionally answers one request badly).
        if errors != 0 {
            eprintln!(
                "bench net: {}: {}: warning: {errors} errors",
                self.what, w.name
            );
        }
        let per = |x: f64| {
            if requests == 0 {
                f64::NAN
            } else {
                x / requests as f64
            }
        };
        Ok(Measured {
            requests,
            errors,
            requests_per_second: rps,
            mib_per_second: mibps,
            cpu_us_per_request: per(cpu * 1e6),
            frames_per_request: frames_before
                .zip(frames_after)
                .map(|(b, a)| per(a.saturating_sub(b) as f64)),
        })
    }

    /// Stops the guest; an error if it had ended by itself.
    fn stop(self) -> Result<(), String> {
        let what = self.what;
        match self.guest.stop() {
            (console, Some(how)) => Err(format!("{what} stopped by itself ({how}):\n{console}")),
            _ => Ok(()),
        }
    }

    /// Stops the guest and returns `e` with its console.
    fn stop_with(self, e: String) -> String {
        let what = self.what;
        let (console, _) = self.guest.stop();
        format!("{e}\n--- {what} console ---\n{console}")
    }
}

/// Runs `workloads` on every guest of `live`, alternating guests workload by workload,
/// [`ROUNDS`] times; returns each guest's per-workload medians, then stops the guests.
fn interleaved(live: Vec<Live<'_>>, workloads: &[&Workload]) -> Result<Vec<Vec<Measured>>, String> {
    let mut runs: Vec<Vec<Vec<Measured>>> = vec![vec![Vec::new(); workloads.len()]; live.len()];
    let mut result = Ok(());
    'rounds: for _ in 0..ROUNDS {
        for (wi, w) in workloads.iter().enumerate() {
            for (gi, g) in live.iter().enumerate() {
                match g.run(w) {
                    Ok(m) => runs[gi][wi].push(m),
                    Err(e) => {
                        result = Err((gi, e));
                        break 'rounds;
                    }
                }
            }
        }
    }
    let mut stopped = Ok(());
    for (gi, g) in live.into_iter().enumerate() {
        match &result {
            Err((failed, e)) if *failed == gi => stopped = Err(g.stop_with(e.clone())),
            _ => {
                if let Err(e) = g.stop() {
                    stopped = stopped.and(Err(e));
                }
            }
        }
    }
    stopped?;
    Ok(runs
        .into_iter()
        .map(|per_w| per_w.iter().map(|r| netbench_load::median(r)).collect())
        .collect())
}

/// One bed's guests, measured and tabled.
struct Comparison {
    bed: String,
    workloads: Table,
    goals: Table,
    busybox: Table,
    /// Goals met, goals checked.
    met: (usize, usize),
}

impl Comparison {
    /// Its section of the report, its tables under `{key}_…`.
    fn add_to(&self, report: &mut Report, key: &str) {
        report
            .text(format!("## {}\n\n", self.bed))
            .value(&format!("{key}_bed"), self.bed.clone())
            .table(&format!("{key}_workloads"), &self.workloads)
            .text("\n")
            .table(&format!("{key}_goals"), &self.goals)
            .text(
                "\nbusybox `httpd` (Linux, a process per request, no keep-alive), `ab` rows \
                 only:\n\n",
            )
            .table(&format!("{key}_busybox"), &self.busybox)
            .text("\n");
    }
}

/// The three servers of one bed.
struct Bed<'a> {
    name: String,
    upcall: Setup<'a>,
    nginx: Setup<'a>,
    busybox: Setup<'a>,
    /// Upcall's interface name in `/status`.
    iface: &'a str,
}

fn compare(bed: &Bed<'_>) -> Result<Comparison, Failure> {
    let all: Vec<&Workload> = WORKLOADS.iter().collect();
    let ab_only: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| matches!(w.tool, Tool::Ab { .. }))
        .collect();
    let measured = (|| {
        let upcall = Live::boot(&bed.upcall, Some(bed.iface))?;
        let nginx = match Live::boot(&bed.nginx, None) {
            Ok(n) => n,
            Err(e) => return Err(upcall.stop_with(e)),
        };
        let mut pair = interleaved(vec![upcall, nginx], &all)?.into_iter();
        let busybox = Live::boot(&bed.busybox, None)?;
        let b = interleaved(vec![busybox], &ab_only)?.remove(0);
        Ok((
            pair.next().unwrap_or_default(),
            pair.next().unwrap_or_default(),
            b,
        ))
    })();
    let (u, n, b) = measured.or_else(|e: String| fail(format!("bench net: {e}")))?;
    let mut workloads = Table::new(&[
        ("workload", "workload"),
        ("upcall req/s", "upcall_requests_per_second"),
        ("nginx req/s", "nginx_requests_per_second"),
        ("ratio", "ratio_requests_per_second"),
        ("upcall MiB/s", "upcall_mib_per_second"),
        ("nginx MiB/s", "nginx_mib_per_second"),
        ("ratio", "ratio_mib_per_second"),
        ("upcall CPU µs/req", "upcall_cpu_us_per_request"),
        ("nginx CPU µs/req", "nginx_cpu_us_per_request"),
        ("ratio", "ratio_cpu_per_request"),
        ("upcall frames/req", "upcall_frames_per_request"),
        ("errors (upcall / nginx)", "errors"),
        ("", "upcall"),
        ("", "nginx"),
    ]);
    let mut goals = Table::new(&[
        ("goal (issue 18)", "goal"),
        ("value", "value"),
        ("goal", "target"),
        ("met", "met"),
    ]);
    let (mut met, mut checked) = (0, 0);
    let n0 = |v: f64| cell(format!("{v:.0}"), v);
    let n2 = |v: f64| cell(format!("{v:.2}"), v);
    for ((w, u), n) in WORKLOADS.iter().zip(&u).zip(&n) {
        let rps = u.requests_per_second / n.requests_per_second;
        let mib = u.mib_per_second / n.mib_per_second;
        let cpu = u.cpu_us_per_request / n.cpu_us_per_request;
        workloads.row([
            cell(
                format!("{} ({})", w.name, load_of(w)),
                json!({ "name": w.name, "path": w.path, "load": load_of(w) }),
            ),
            n0(u.requests_per_second),
            n0(n.requests_per_second),
            n2(rps),
            n2(u.mib_per_second),
            n2(n.mib_per_second),
            n2(mib),
            n0(u.cpu_us_per_request),
            n0(n.cpu_us_per_request),
            n2(cpu),
            cell(
                u.frames_per_request
                    .map_or("—".to_string(), |f| format!("{f:.1}")),
                u.frames_per_request,
            ),
            cell(
                format!("{} / {}", u.errors, n.errors),
                json!({ "upcall": u.errors, "nginx": n.errors }),
            ),
            cell("", measured_json(u)),
            cell("", measured_json(n)),
        ]);
        let mut check = |measure: String, value: f64, goal: &str, ok: bool| {
            checked += 1;
            met += usize::from(ok);
            goals.row([
                measure.into(),
                n2(value),
                goal.into(),
                cell(if ok { "met" } else { "**not met**" }, ok),
            ]);
        };
        if let Some(g) = w.goal {
            let (figure, value) = match g.what {
                Figure::RequestsPerSecond => ("requests/s", rps),
                Figure::MibPerSecond => ("MiB/s", mib),
            };
            check(
                format!("{}: {figure}, upcall / nginx", w.name),
                value,
                &format!("≥ {:.1}", g.ratio),
                value.is_finite() && value >= g.ratio,
            );
        }
        check(
            format!("{}: CPU per request, upcall / nginx", w.name),
            cpu,
            "≤ 1.0",
            cpu.is_finite() && cpu <= 1.0,
        );
    }
    let mut busybox = Table::new(&[
        ("workload", "workload"),
        ("busybox req/s", "busybox_requests_per_second"),
        ("busybox MiB/s", "busybox_mib_per_second"),
        ("busybox CPU µs/req", "busybox_cpu_us_per_request"),
        ("upcall / busybox req/s", "ratio_requests_per_second"),
        ("upcall / busybox MiB/s", "ratio_mib_per_second"),
        ("", "busybox"),
    ]);
    let ab_upcall = WORKLOADS
        .iter()
        .zip(&u)
        .filter(|(w, _)| matches!(w.tool, Tool::Ab { .. }));
    for ((w, u), b) in ab_upcall.zip(&b) {
        busybox.row([
            cell(format!("{} ({})", w.name, load_of(w)), w.name),
            n0(b.requests_per_second),
            n2(b.mib_per_second),
            n0(b.cpu_us_per_request),
            n2(u.requests_per_second / b.requests_per_second),
            n2(u.mib_per_second / b.mib_per_second),
            cell("", measured_json(b)),
        ]);
    }
    Ok(Comparison {
        bed: bed.name.clone(),
        workloads,
        goals,
        busybox,
        met: (met, checked),
    })
}

/// How a workload loads the server, for the tables.
fn load_of(w: &Workload) -> String {
    match w.tool {
        Tool::Wrk { seconds } => format!("{seconds} s, {} connections", w.concurrency),
        Tool::Ab { requests } => format!("{requests} requests, concurrency {}", w.concurrency),
    }
}

fn measured_json(m: &Measured) -> serde_json::Value {
    json!({
        "requests": m.requests, "errors": m.errors,
        "requests_per_second": m.requests_per_second, "mib_per_second": m.mib_per_second,
        "cpu_us_per_request": m.cpu_us_per_request, "frames_per_request": m.frames_per_request,
    })
}

/// `cargo xtask bench net [--kvm-only]`.
pub fn net(kvm_only: bool) -> Outcome {
    qemu::ensure_qemu()?;
    host::ensure_program("ab", &["apache2-utils"])?;
    host::ensure_program("wrk", &["wrk"])?;
    let (kernel, initrd) = nginx_guest::build()?;
    let mut report = Report::new("net");
    report.text(format!(
        "# bench net: upcall httpd vs Linux + nginx (Debian 12), and busybox httpd\n\n\
         Same run, same setup per platform, {MEMORY} MiB and one vCPU each; Upcall and nginx \
         booted together and measured alternately, {ROUNDS} rounds, medians. `wrk` keeps \
         connections alive; `ab` opens one per request. Ratios > 1 favour Upcall, except \
         CPU per request (QEMU's user + system time on the host divided by the requests \
         completed), where < 1 does.\n\n"
    ));
    report.value("memory_mib", MEMORY);
    let mut goals = (0, 0);
    let httpd = build::build("httpd", Platform::Kvm, true)?;
    let initrd_arg = vec!["-initrd".to_string(), initrd.display().to_string()];
    const LINUX_KVM: &str = "console=ttyS0 quiet rdinit=/init";
    let busybox_kvm = format!("{LINUX_KVM} {}", nginx_guest::BUSYBOX);
    let kvm = compare(&Bed {
        name: format!(
            "KVM platform: QEMU -M pc + qboot ({:?}), virtio-net-pci on user networking",
            qemu::pick_accel(None)
        ),
        upcall: Setup::kvm("upcall httpd (kvm)", &httpd, "loglevel=quiet", Vec::new()),
        nginx: Setup::kvm("linux nginx (kvm)", &kernel, LINUX_KVM, initrd_arg.clone()),
        busybox: Setup::kvm(
            "linux busybox httpd (kvm)",
            &kernel,
            &busybox_kvm,
            initrd_arg,
        ),
        iface: "eth0",
    })?;
    kvm.add_to(&mut report, "kvm");
    goals = (goals.0 + kvm.met.0, goals.1 + kvm.met.1);
    if !kvm_only {
        let httpd_xen = build::build("httpd", Platform::Xen, true)?;
        let tb = dom0::ensure_xl_testbed()?;
        const LINUX_XEN: &str = "console=hvc0 quiet rdinit=/init";
        let busybox_xen = format!("{LINUX_XEN} {}", nginx_guest::BUSYBOX);
        let xen = compare(&Bed {
            name: "Xen: xl domUs of the Linux dom0 test bed (TCG), netfront vs netback bridged to user networking".into(),
            upcall: Setup::xen("upcall httpd (xen domU)", &httpd_xen, "loglevel=quiet", None),
            nginx: Setup::xen(
                "linux nginx (xen domU)",
                &tb.vmlinux,
                LINUX_XEN,
                Some(initrd.clone()),
            ),
            busybox: Setup::xen(
                "linux busybox httpd (xen domU)",
                &tb.vmlinux,
                &busybox_xen,
                Some(initrd.clone()),
            ),
            iface: "netfront",
        })?;
        xen.add_to(&mut report, "xen");
        goals = (goals.0 + xen.met.0, goals.1 + xen.met.1);
    }
    report
        .text(format!("Goals met: {} of {}.\n", goals.0, goals.1))
        .value("goals_met", goals.0)
        .value("goals_checked", goals.1)
        .write()
}
