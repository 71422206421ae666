//! The `bench boot` row for libvirt: from `virsh create` to the first console line of
//! `hello` (release, microvm), against plain QEMU's start to its first console line for
//! the same image, runs interleaved, ratio of medians (same run, same load).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::bench::report::{Table, cell};
use crate::testbed::libvirt as libvirt_testbed;
use crate::vmm::libvirt::{self, Opts};
use crate::vmm::qemu::{self, RunOpts};
use crate::{Failure, MachineArg, Platform, build, fail};

/// Medians in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// `virsh create` → first console line.
    pub libvirt_ms: f64,
    /// QEMU spawn → first console line.
    pub qemu_ms: f64,
    /// Runs of each.
    pub runs: usize,
}

impl Row {
    /// libvirt / plain QEMU.
    pub fn ratio(&self) -> f64 {
        self.libvirt_ms / self.qemu_ms
    }

    /// Its table in `target/bench/boot.{md,json}`.
    pub fn table(&self) -> Table {
        let ms = |v: f64| cell(format!("{v:.1} ms"), v);
        let mut t = Table::new(&[
            (
                "start → first console line, hello (release), microvm",
                "measure",
            ),
            ("median", "value"),
        ]);
        t.row([
            format!("libvirt (`virsh create`, {})", libvirt_testbed::URI).into(),
            ms(self.libvirt_ms),
        ]);
        t.row(["plain QEMU".into(), ms(self.qemu_ms)]);
        t.row([
            format!(
                "ratio libvirt / QEMU (same run, {} interleaved runs)",
                self.runs
            )
            .into(),
            cell(format!("{:.2}×", self.ratio()), self.ratio()),
        ]);
        t
    }
}

fn median_ms(v: Vec<Duration>) -> f64 {
    crate::bench::stats::median(v).as_secs_f64() * 1e3
}

fn qemu_first_line(image: &std::path::Path) -> Result<Duration, Failure> {
    let opts = RunOpts::for_tests(MachineArg::Microvm, 60);
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(qemu::qemu_args(image, "", &opts))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|e| fail(format!("cannot start QEMU: {e}")))?;
    let mut line = String::new();
    let n = BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .unwrap_or(0);
    let t = start.elapsed();
    let _ = child.wait();
    if n == 0 {
        return fail("plain QEMU: hello printed nothing");
    }
    Ok(t)
}

/// Measures the row; `None` (said on stderr) where libvirt cannot run.
pub fn boot_row(runs: usize) -> Result<Option<Row>, Failure> {
    if let Some(why) = libvirt_testbed::unavailable() {
        eprintln!("bench boot: libvirt row skipped: {why}");
        return Ok(None);
    }
    libvirt_testbed::ensure()?;
    let image = build::build("hello", Platform::Kvm, true)?;
    let o = Opts {
        platform: Platform::Kvm,
        machine: MachineArg::Microvm,
        smp: 1,
        memory_mb: Some(128),
        net: None,
        release: true,
        run: true,
        timeout: 60,
    };
    let (mut lv, mut qm) = (Vec::new(), Vec::new());
    for i in 0..runs {
        eprint!("\rbench boot: libvirt run {}/{runs}", i + 1);
        qm.push(qemu_first_line(&image)?);
        let d = libvirt::prepare("hello", &[], &o, i as u32)?;
        let xml = libvirt::domain_xml(&d).or_else(fail)?;
        let r = libvirt::run(&d, &xml, o.timeout, &AtomicBool::new(false), &mut |_| {})?;
        match (r.first_line, r.stop_reason()) {
            (Some(t), Some("Shutdown")) => lv.push(t),
            _ => return fail(format!("libvirt run of hello: {}", r.summary())),
        }
        let _ = std::fs::remove_file(&d.console);
        let _ = std::fs::remove_file(d.console.with_extension("xml"));
    }
    eprintln!();
    Ok(Some(Row {
        libvirt_ms: median_ms(lv),
        qemu_ms: median_ms(qm),
        runs,
    }))
}
