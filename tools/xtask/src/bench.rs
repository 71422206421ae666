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
use crate::{MachineArg, Outcome, Platform, build, fail, host, stub_elf};

/// The ratio we aim for (`hello` / do-nothing).
const GOAL_RATIO: f64 = 1.10;

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
    opts.extra = vec!["-icount".into(), "shift=0".into()];
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
    std::fs::write(&stub, stub_elf::do_nothing_image())
        .or_else(|e| fail(format!("write stub: {e}")))?;

    let opts = RunOpts::for_tests(MachineArg::Microvm, 60);
    let accel = qemu::pick_accel(None);
    let (mut t_hello, mut t_stub) = (Vec::new(), Vec::new());
    for i in 0..runs {
        eprint!("\rbench boot: run {}/{runs} (microvm, {accel:?})", i + 1);
        for (image, times) in [(&stub, &mut t_stub), (&hello, &mut t_hello)] {
            let r = qemu::run_image(image, "", &opts, false)?;
            if r.status != Some(0) {
                return fail(format!(
                    "{} exited with {:?} during the benchmark",
                    image.display(),
                    r.status
                ));
            }
            times.push(r.elapsed);
        }
    }
    eprintln!();
    let (m_hello, m_stub) = (median(t_hello), median(t_stub));
    let ratio = m_hello.as_secs_f64() / m_stub.as_secs_f64();
    let first = entry_to_main_instructions(&hello)?;
    let second = entry_to_main_instructions(&hello)?;
    let size = std::fs::metadata(&hello).map_or(0, |m| m.len());
    let loaded = loaded_bytes(&hello);

    let report = json!({
        "vmm": "qemu -M microvm",
        "accel": format!("{accel:?}").to_lowercase(),
        "runs": runs,
        "median_ms": { "hello": m_hello.as_secs_f64() * 1e3, "do_nothing": m_stub.as_secs_f64() * 1e3 },
        "ratio_hello_over_do_nothing": ratio,
        "goal_ratio": GOAL_RATIO,
        "entry_to_main_instructions_icount": first,
        "icount_repeatable": first == second,
        "hello_release_bytes": size,
        "hello_loaded_bytes": loaded,
    });
    let md = format!(
        "| metric | value |\n|---|---|\n\
         | VMM | QEMU microvm, {accel:?}, {runs} interleaved runs |\n\
         | median boot-to-exit, hello | {:.1} ms |\n\
         | median boot-to-exit, do-nothing image | {:.1} ms |\n\
         | ratio hello / do-nothing | {ratio:.3} (goal ≤ {GOAL_RATIO:.2}) |\n\
         | instructions entry → main (-icount) | {first}{} |\n\
         | hello release image | {size} bytes ({loaded} loaded) |\n",
        m_hello.as_secs_f64() * 1e3,
        m_stub.as_secs_f64() * 1e3,
        if first == second {
            " (repeatable)"
        } else {
            " (NOT repeatable)"
        },
    );
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).or_else(|e| fail(format!("write {name}: {e}")))
    };
    write(
        "boot.json",
        &serde_json::to_string_pretty(&report).expect("JSON serializes"),
    )?;
    write("boot.md", &md)?;
    print!("{md}");
    println!("written: target/bench/boot.json, target/bench/boot.md");
    Ok(0)
}
