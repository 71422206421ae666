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
    upcall_tests::kv::last(&r.output, "entry_to_main_tsc_cycles").map_or_else(
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
