//! `cargo xtask bench net`: `httpd` against a Linux guest serving the same files on the
//! same QEMU setup, in the same run.
//!
//! On KVM both guests boot on `-M pc` with qboot, TCG, the same memory and a
//! virtio-net-pci card on QEMU user networking; on Xen both are xl domUs of the Linux
//! dom0 test bed with a vif on its bridge (netfront against netback). The Linux guest
//! is Debian's kernel with busybox's `httpd` in an initramfs (packages fetched and unpacked by the Xen test bed's
//! functions, archive written by `initramfs`). `ab` (one connection per request:
//! busybox's httpd has no keep-alive) fetches a small page and a 256 KiB file from
//! each. Wall time is noisy here, so the figures of merit are the ratios measured in
//! this run; beside them, Upcall's frames per request from its `/status` counters.
//! Results go to `target/bench/net.{json,md}`.

use std::path::{Path, PathBuf};

use serde_json::json;
use upcall_tests::net::{LoadResult, parse_ab};

use crate::bench::report::{Report, Table, cell};
use crate::test::net::{self as nettest, Guest};
use crate::testbed::initramfs::{Node, Tree};
use crate::testbed::{debian, dom0};
use crate::vmm::qemu::{self, Forward, Proto, RunOpts};
use crate::vmm::xl_run::{self, XlDomain};
use crate::{Failure, MachineArg, Outcome, Platform, build, fail, host};

/// Guest memory for both guests, MiB.
const MEMORY: u32 = 256;
/// The Linux guest's boot script: load virtio-net, configure QEMU's user network the
/// way its DHCP would, serve `/www`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# virtio-net on KVM, xen-netfront on Xen; the other card's modules find no device.
for m in failover net_failover virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_net xen-netfront; do
    [ -f /modules/$m.ko ] && /bin/busybox insmod /modules/$m.ko 2>/dev/null
done
n=0
until /bin/busybox ip link show eth0 >/dev/null 2>&1 || [ $n -ge 100 ]; do
    n=$((n + 1)); /bin/busybox usleep 50000
done
/bin/busybox ip link set lo up
/bin/busybox ip link set eth0 up
/bin/busybox ip addr add 10.0.2.15/24 dev eth0
/bin/busybox ip route add default via 10.0.2.2
echo "linux-guest: serving /www on port 80"
exec /bin/busybox httpd -f -p 80 -h /www
"#;
/// Kernel modules the Linux guest loads (those Debian builds as modules), by file name,
/// in dependency order.
const MODULES: &[&str] = &[
    "failover.ko",
    "net_failover.ko",
    "virtio_ring.ko",
    "virtio.ko",
    "virtio_pci_legacy_dev.ko",
    "virtio_pci_modern_dev.ko",
    "virtio_pci.ko",
    "virtio_net.ko",
    "xen-netfront.ko",
];
/// The files both servers serve (same bytes): (URL path, repository file).
const FILES: &[(&str, &str)] = &[
    ("/index.html", "apps/httpd/www/index.html"),
    ("/big.txt", "apps/httpd/www/big.txt"),
];

/// One workload: a path fetched `requests` times at `concurrency`.
struct Workload {
    name: &'static str,
    path: &'static str,
    requests: u32,
    concurrency: u32,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "small page (420 B)",
        path: "/index.html",
        requests: 2000,
        concurrency: 16,
    },
    Workload {
        name: "large file (256 KiB)",
        path: "/big.txt",
        requests: 200,
        concurrency: 4,
    },
];

/// The Linux guest: (kernel, initramfs), assembled under `target/bench/linux-guest`.
fn linux_guest() -> Result<(PathBuf, PathBuf), Failure> {
    let dir = host::target_dir().join("bench/linux-guest-2");
    let kernel_pkg = debian::kernel_package()?;
    let debs = debian::ensure_debs(&[kernel_pkg, "busybox-static".to_string()])?;
    let unpacked = dir.join("unpacked");
    if !unpacked.join("bin/busybox").is_file() {
        std::fs::create_dir_all(&unpacked)
            .or_else(|e| fail(format!("create {}: {e}", unpacked.display())))?;
        debian::extract(
            &debs[0],
            &[
                "./boot/vmlinuz-*",
                "./lib/modules/*/kernel/drivers/virtio/*",
                "./lib/modules/*/kernel/drivers/net/virtio_net.ko",
                "./lib/modules/*/kernel/drivers/net/net_failover.ko",
                "./lib/modules/*/kernel/net/core/failover.ko",
                "./lib/modules/*/kernel/drivers/net/xen-netfront.ko",
            ],
            &unpacked,
        )?;
        debian::extract(&debs[1], &["./bin/busybox"], &unpacked)?;
    }
    let kernel =
        find_file(&unpacked.join("boot"), &|n| n.starts_with("vmlinuz-"))?.ok_or_else(|| {
            Failure {
                message: "bench net: no vmlinuz in the kernel package".into(),
                status: 1,
            }
        })?;
    let mut t = Tree::default();
    for d in ["proc", "sys", "dev", "www"] {
        t.insert(d, Node::Dir);
    }
    t.insert("dev/console", Node::CharDev(5, 1));
    t.insert("init", Node::Data(INIT.as_bytes().to_vec(), 0o755));
    t.add_file(&unpacked, "bin/busybox")?;
    for (path, file) in FILES {
        t.insert(
            &format!("www{path}"),
            Node::File(host::root().join(file), 0o644),
        );
    }
    for m in MODULES {
        if let Some(p) = find_file(&unpacked.join("lib/modules"), &|n| n == *m)? {
            t.insert(&format!("modules/{m}"), Node::File(p, 0o644));
        }
    }
    let initrd = dir.join("initramfs.cpio");
    t.write(&initrd)?;
    Ok((kernel, initrd))
}

/// The first file under `dir` (recursively) whose name passes `want`.
fn find_file(dir: &Path, want: &dyn Fn(&str) -> bool) -> Result<Option<PathBuf>, Failure> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, want)? {
                return Ok(Some(found));
            }
        } else if want(&e.file_name().to_string_lossy()) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

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

/// Boots `setup`, waits until its probe path answers, runs every workload with `ab`,
/// returns the results and Upcall's `/status` page (if it has one).
fn measure(setup: &Setup<'_>) -> Result<(Vec<LoadResult>, Option<String>), String> {
    let what = setup.what;
    let probe_path = setup.probe_path;
    let host_port = nettest::free_port(Proto::Tcp)?;
    let fwd = Forward {
        proto: Proto::Tcp,
        host: host_port,
        guest: 80,
    };
    eprintln!("bench net: booting {what}");
    let mut guest = Guest::boot(setup.image, (setup.qemu_args)(fwd)?)?;
    let run = nettest::wait_until(&mut guest, host_port, &|p| {
        nettest::http_get_ok(p, probe_path)
    })
    .and_then(|()| {
        let mut results = Vec::new();
        for w in WORKLOADS {
            eprintln!(
                "bench net: {what}: ab -n {} -c {} {}",
                w.requests, w.concurrency, w.path
            );
            let url = format!("http://127.0.0.1:{host_port}{}", w.path);
            let out = nettest::client(
                "ab",
                &[
                    "-q".into(),
                    "-s".into(),
                    "60".into(),
                    "-n".into(),
                    w.requests.to_string(),
                    "-c".into(),
                    w.concurrency.to_string(),
                    url,
                ],
            )?;
            let r = parse_ab(&String::from_utf8_lossy(&out.stdout))?;
            // Reported, not fatal: the tests judge correctness; a benchmark says what
            // happened (busybox's httpd occasionally answers one request badly).
            if let Err(e) = upcall_tests::net::judge_load(&r, w.requests) {
                eprintln!("bench net: {what}: warning: {e}");
            }
            results.push(r);
        }
        // Upcall counts its frames; Linux's busybox httpd has no such page.
        let status = nettest::curl(host_port, "/status")
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok((results, status))
    });
    let (console, early) = guest.stop();
    if let Some(how) = early {
        return Err(format!("{what} stopped by itself ({how}):\n{console}"));
    }
    run.map_err(|e| format!("{e}\n--- {what} console ---\n{console}"))
}

/// One platform's pair of guests, measured and tabled.
struct Comparison {
    bed: String,
    table: Table,
    frames: u64,
    requests: u64,
}

impl Comparison {
    /// Its section of the report, its table under `{key}_workloads`.
    fn add_to(&self, report: &mut Report, key: &str) {
        report
            .text(format!("## {}\n\n", self.bed))
            .table(&format!("{key}_workloads"), &self.table)
            .text(format!(
                "\nUpcall frames (rx + tx) over the whole run: {} for {} requests ({:.1} per \
                 request).\n\n",
                self.frames,
                self.requests,
                self.frames as f64 / self.requests as f64
            ))
            .value(&format!("{key}_bed"), self.bed.clone())
            .value(&format!("{key}_upcall_frames"), self.frames)
            .value(&format!("{key}_upcall_requests"), self.requests);
    }
}

fn compare(
    bed: &str,
    upcall: &Setup<'_>,
    linux: &Setup<'_>,
    iface: &str,
) -> Result<Comparison, Failure> {
    let (u_rows, status) = measure(upcall).or_else(|e| fail(format!("bench net: {e}")))?;
    let (l_rows, _) = measure(linux).or_else(|e| fail(format!("bench net: {e}")))?;
    let status = status.unwrap_or_default();
    let requests: u64 = WORKLOADS.iter().map(|w| u64::from(w.requests)).sum::<u64>() + 1;
    let frames = nettest::status_value(&status, &format!("{iface}.rx_frames=")).unwrap_or(0)
        + nettest::status_value(&status, &format!("{iface}.tx_frames=")).unwrap_or(0);
    let mut table = Table::new(&[
        ("workload", "workload"),
        ("upcall req/s", "upcall_requests_per_second"),
        ("linux req/s", "linux_requests_per_second"),
        ("ratio", "ratio_requests_per_second"),
        ("upcall KiB/s", "upcall_transfer_kib_per_second"),
        ("linux KiB/s", "linux_transfer_kib_per_second"),
        ("ratio", "ratio_transfer"),
        ("failed or non-2xx (upcall / linux)", "failed_or_non_2xx"),
    ]);
    for ((w, u), l) in WORKLOADS.iter().zip(&u_rows).zip(&l_rows) {
        let rps = u.requests_per_second / l.requests_per_second;
        let kib = u.transfer_kib_per_second / l.transfer_kib_per_second;
        let n = |v: f64| cell(format!("{v:.0}"), v);
        let ratio = |v: f64| cell(format!("{v:.2}"), v);
        table.row([
            cell(
                format!(
                    "{} ({} requests, concurrency {})",
                    w.name, w.requests, w.concurrency
                ),
                json!({ "name": w.name, "path": w.path, "requests": w.requests, "concurrency": w.concurrency }),
            ),
            n(u.requests_per_second),
            n(l.requests_per_second),
            ratio(rps),
            n(u.transfer_kib_per_second),
            n(l.transfer_kib_per_second),
            ratio(kib),
            cell(
                format!("{} / {}", u.failed + u.non_2xx, l.failed + l.non_2xx),
                json!({ "upcall": u.failed + u.non_2xx, "linux": l.failed + l.non_2xx }),
            ),
        ]);
    }
    Ok(Comparison {
        bed: bed.to_string(),
        table,
        frames,
        requests,
    })
}

/// `cargo xtask bench net [--kvm-only]`.
pub fn net(kvm_only: bool) -> Outcome {
    qemu::ensure_qemu()?;
    host::ensure_program("ab", &["apache2-utils"])?;
    let (kernel, initrd) = linux_guest()?;
    let mut report = Report::new("net");
    report
        .text(format!(
            "# bench net: upcall httpd vs Linux (Debian kernel, busybox httpd)\n\n\
             Same run, same setup per platform, {MEMORY} MiB each; `ab` without keep-alive \
             (busybox httpd has none). Ratios > 1 favour Upcall.\n\n"
        ))
        .value("memory_mib", MEMORY);
    let httpd = build::build("httpd", Platform::Kvm, true)?;
    let initrd_arg = vec!["-initrd".to_string(), initrd.display().to_string()];
    let kvm = compare(
        &format!(
            "KVM platform: QEMU -M pc + qboot ({:?}), virtio-net-pci on user networking",
            qemu::pick_accel(None)
        ),
        &Setup::kvm("upcall httpd (kvm)", &httpd, "loglevel=quiet", Vec::new()),
        &Setup::kvm(
            "linux busybox httpd (kvm)",
            &kernel,
            "console=ttyS0 quiet rdinit=/init",
            initrd_arg,
        ),
        "eth0",
    )?;
    kvm.add_to(&mut report, "kvm");
    if !kvm_only {
        let httpd_xen = build::build("httpd", Platform::Xen, true)?;
        let tb = dom0::ensure_xl_testbed()?;
        let xen = compare(
            "Xen: xl domUs of the Linux dom0 test bed (TCG), netfront vs netback bridged to user networking",
            &Setup::xen(
                "upcall httpd (xen domU)",
                &httpd_xen,
                "loglevel=quiet",
                None,
            ),
            &Setup::xen(
                "linux busybox httpd (xen domU)",
                &tb.vmlinux,
                "console=hvc0 quiet rdinit=/init",
                Some(initrd.clone()),
            ),
            "netfront",
        )?;
        xen.add_to(&mut report, "xen");
    }
    report.write()
}
