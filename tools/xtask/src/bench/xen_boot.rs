//! `cargo xtask bench xen-boot`: time from `xl create` to the first console output of
//! the app, for `hello` (release) against the minimal PV kernel of [`xen_stub_elf`],
//! both as xl domUs of the same Linux-dom0 boot, runs interleaved.
//!
//! Measured inside dom0, by the test bed's init (see `testbed::dom0::INIT`): the shell's
//! `$EPOCHREALTIME` (microseconds, no process started) just before `xl create` is
//! forked, and again when the domain's xenconsoled log first becomes non-empty (polled
//! every 2 ms with shell builtins only). So a run covers the toolstack building the
//! domain (ELF loading, memory population, page tables), Xen starting it, the kernel's
//! boot up to its first line, and xenconsoled moving that line into its log; the poll
//! adds at most ~2 ms. Results go to `target/bench/xen-boot.{json,md}`.

use std::path::{Path, PathBuf};

use crate::bench::report::{Report, Table, cell};
use crate::bench::stats::median;
use crate::vmm::xl_run::XlDomain;
use crate::vmm::{xl_batch, xl_output};
use crate::{Outcome, Platform, build, fail, host, xen_stub_elf};

/// The ratio we aim for (`hello` / minimal PV kernel).
const GOAL_RATIO: f64 = 1.05;
/// Seconds a single domain may take.
const DOMAIN_TIMEOUT: u32 = 60;

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `cargo xtask bench xen-boot`.
pub fn run(runs: usize, memory_mb: u32) -> Outcome {
    if runs == 0 {
        return fail("--runs must be at least 1");
    }
    if memory_mb < 16 {
        return fail("--memory must be at least 16 (MiB)");
    }
    let hello = build::build("hello", Platform::Xen, true)?;
    let dir = host::target_dir().join("bench");
    std::fs::create_dir_all(&dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
    let stub = dir.join("xen-boot-stub.elf");
    std::fs::write(&stub, xen_stub_elf::image()?)
        .or_else(|e| fail(format!("write {}: {e}", stub.display())))?;
    let images: [(&str, &PathBuf); 2] = [("minimal PV kernel", &stub), ("hello", &hello)];
    // Interleaved: stub, hello, stub, hello, … so slow phases of the host hit both.
    let domains: Vec<XlDomain> = (0..runs)
        .flat_map(|_| images.iter())
        .map(|(_, image)| XlDomain {
            image: image.to_path_buf(),
            cmdline: String::new(),
            memory_mb,
            vcpus: 1,
            actions: Vec::new(),
            timeout_secs: DOMAIN_TIMEOUT,
            net: None,
            ramdisk: None,
            stream: false,
            settle: false,
        })
        .collect();
    eprintln!(
        "bench xen-boot: {} domains ({runs} runs of each image, {memory_mb} MiB each) in one \
         Xen + Linux-dom0 boot under QEMU TCG; this takes a minute or two...",
        domains.len()
    );
    let batch = xl_batch::boot(&domains)?;
    // times[0] = minimal kernel, [1] = hello, in seconds.
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for (k, d) in batch.domains.iter().enumerate() {
        let which = k % 2;
        let (name, _) = images[which];
        if d.status != Some(0) {
            return fail(format!(
                "bench xen-boot: {name} (domain {}) ended with {:?}, want 0:\n{}",
                k + 1,
                d.status,
                d.output
            ));
        }
        let Some((created, first)) = xl_output::timing(&d.output) else {
            return fail(format!(
                "bench xen-boot: {name} (domain {}) printed no timing line",
                k + 1
            ));
        };
        times[which].push(first - created);
    }
    let [stub_t, hello_t] = times;
    let (m_stub, m_hello) = (median(stub_t.clone()), median(hello_t.clone()));
    let ratio = m_hello / m_stub;
    let (stub_bytes, hello_bytes) = (size_of(&stub), size_of(&hello));
    let ms_list = |v: &[f64]| {
        let ms: Vec<f64> = v.iter().map(|t| t * 1e3).collect();
        let text = ms
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        cell(text, ms)
    };
    let median_ms = |t: f64| cell(format!("{:.1} ms", t * 1e3), t * 1e3);
    let mut images = Table::new(&[
        ("image", "image"),
        ("median", "median_ms"),
        ("runs (ms)", "runs_ms"),
        ("image size", "bytes"),
    ]);
    images.row([
        "minimal PV kernel (xtask-generated)".into(),
        median_ms(m_stub),
        ms_list(&stub_t),
        cell(format!("{stub_bytes} bytes"), stub_bytes),
    ]);
    images.row([
        "hello (release)".into(),
        median_ms(m_hello),
        ms_list(&hello_t),
        cell(format!("{hello_bytes} bytes"), hello_bytes),
    ]);
    Report::new("xen-boot")
        .text(format!(
            "Time from `xl create` to the domain's first console output, measured in the Linux \
             dom0 with the shell's `$EPOCHREALTIME` (µs) around `xl create` and a 2 ms poll \
             of the xenconsoled log (builtins only); both images as xl domUs of {memory_mb} MiB \
             in one dom0 boot, {runs} interleaved runs each (Xen 4.17 in QEMU TCG, dom0 on \
             CPU 0, domUs on CPU 1).\n\n"
        ))
        .table("images", &images)
        .text(format!(
            "\nratio of medians hello / minimal: **{ratio:.3}** (goal ≤ {GOAL_RATIO:.2}; {})\n",
            if ratio <= GOAL_RATIO {
                "met"
            } else {
                "NOT met"
            },
        ))
        .value(
            "what",
            "xl create to first console output, dom0 EPOCHREALTIME, 2 ms log poll",
        )
        .value("runs", runs)
        .value("memory_mib", memory_mb)
        .value("goal_ratio", GOAL_RATIO)
        .value("ratio_hello_over_minimal", ratio)
        .value("dom0_boot_and_all_runs_s", batch.elapsed.as_secs_f64())
        .write()
}
