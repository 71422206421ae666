//! `cargo xtask fuzz`: coverage-guided fuzzing of the parsers and of the drivers'
//! ring logic against device/backend models (cargo-fuzz + libFuzzer).
//!
//! libFuzzer's instrumentation needs a nightly compiler: this command (and only this
//! one) uses the `nightly` toolchain, installing it and cargo-fuzz on first use; the
//! images and every other command stay on the pinned stable toolchain. The targets are
//! thin (`fuzz/fuzz_targets/`); their logic is `fuzz/common`, which the main workspace
//! also builds on stable to replay the committed inputs (`fuzz/regressions/`,
//! `fuzz/seeds/`) in `cargo xtask test`. A crash found here is copied into
//! `fuzz/regressions/<target>/`, so committing it makes it a regression test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::host::root;
use crate::{Failure, Outcome, fail};

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Targets to run (default: all of `fuzz/fuzz_targets/`).
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Check that the fuzzing has teeth instead: build with one bounds check removed
    /// (the `teeth` feature: the virtio-pci capability walk's config-space bound) and
    /// require `virtio_pci_caps` to find the crash within `--seconds`, from an empty
    /// corpus.
    #[arg(long)]
    teeth: bool,
}

/// The toolchain libFuzzer builds need.
const NIGHTLY: &str = "nightly";
/// The teeth check's target.
const TEETH_TARGET: &str = "virtio_pci_caps";

/// `cargo` through rustup's proxy with `+nightly`, free of the stable toolchain that
/// `cargo xtask` itself runs under.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{NIGHTLY}"));
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTC_WRAPPER",
    ] {
        c.env_remove(var);
    }
    c.current_dir(root().join("fuzz"));
    c
}

fn status(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the nightly toolchain and cargo-fuzz if missing (first use only).
fn ensure_tools() -> Result<(), Failure> {
    if !status(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--version"])) {
        println!("fuzz: installing the {NIGHTLY} toolchain (for `cargo xtask fuzz` only)...");
        crate::host::run_checked(
            Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]),
            "rustup toolchain install nightly",
        )?;
    }
    if !status(nightly_cargo().args(["fuzz", "--version"])) {
        println!("fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)...");
        crate::host::run_checked(
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
            "cargo install cargo-fuzz",
        )?;
    }
    Ok(())
}

/// Every target, from `fuzz/fuzz_targets/*.rs`.
fn all_targets() -> Vec<String> {
    let mut t: Vec<String> = fs::read_dir(root().join("fuzz/fuzz_targets"))
        .map(|d| {
            d.filter_map(|e| {
                let p = e.ok()?.path();
                (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(String::from))?
            })
            .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

/// The build options every run uses: optimized, with debug assertions and overflow
/// checks (an overflow is a bug the fuzzer must see), without a sanitizer (the code
/// under test is safe Rust; this keeps executions per second high).
const BUILD: &[&str] = &["-O", "--debug-assertions", "--sanitizer", "none"];

/// What one run found.
#[derive(Debug, Default)]
struct Stats {
    execs: u64,
    exec_per_sec: u64,
    edges: u64,
    features: u64,
    corpus: usize,
    crashes: Vec<PathBuf>,
    seconds: f64,
}

fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The last `cov: N ft: M` libFuzzer printed.
fn coverage(log: &str) -> (u64, u64) {
    let after = |l: &str, key: &str| -> Option<u64> {
        let rest = &l[l.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    log.lines()
        .rev()
        .find_map(|l| Some((after(l, " cov: ")?, after(l, " ft: ")?)))
        .unwrap_or((0, 0))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// Runs `target` for `seconds` over `corpus` (plus the committed seeds, if `seeds`).
fn run_target(
    target: &str,
    seconds: u64,
    corpus: &Path,
    seeds: bool,
    extra: &[&str],
    log_path: &Path,
) -> Result<Stats, Failure> {
    fs::create_dir_all(corpus).map_err(|e| Failure {
        message: format!("cannot create {}: {e}", corpus.display()),
        status: 1,
    })?;
    let artifacts = root().join("fuzz/artifacts").join(target);
    let before = files(&artifacts);
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz", "run"])
        .args(BUILD)
        .args(extra)
        .arg(target)
        .arg(corpus);
    let seed_dir = root().join("fuzz/seeds").join(target);
    if seeds && seed_dir.is_dir() {
        cmd.arg(&seed_dir);
    }
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        "-print_final_stats=1",
        "-max_len=4096",
    ]);
    let start = Instant::now();
    let out = cmd.output().map_err(|e| Failure {
        message: format!("cannot run cargo fuzz: {e}"),
        status: 1,
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = fs::write(log_path, &log);
    let (edges, features) = coverage(&log);
    let crashes: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !out.status.success() && crashes.is_empty() {
        return fail(format!(
            "fuzz target {target} failed without a crash artifact (see {})",
            log_path.display()
        ));
    }
    Ok(Stats {
        execs: stat(&log, "stat::number_of_executed_units:").unwrap_or_else(|| {
            // Ended by a crash: no final stats, but the last status line counts.
            log.lines()
                .rev()
                .find_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        }),
        exec_per_sec: stat(&log, "stat::average_exec_per_sec:").unwrap_or(0),
        edges,
        features,
        corpus: files(corpus).len(),
        crashes,
        seconds,
    })
}

/// `cargo xtask fuzz`.
pub fn command(args: Args) -> Outcome {
    ensure_tools()?;
    let out_dir = root().join("target/fuzz");
    let logs = out_dir.join("logs");
    fs::create_dir_all(&logs).map_err(|e| Failure {
        message: format!("cannot create {}: {e}", logs.display()),
        status: 1,
    })?;
    if args.teeth {
        return teeth(args.seconds, &out_dir);
    }
    let known = all_targets();
    let targets = if args.targets.is_empty() {
        known.clone()
    } else {
        args.targets.clone()
    };
    if let Some(t) = targets.iter().find(|t| !known.contains(t)) {
        return fail(format!(
            "no fuzz target `{t}` (targets: {})",
            known.join(", ")
        ));
    }
    println!(
        "fuzz: building {} target(s) with {NIGHTLY}...",
        targets.len()
    );
    crate::host::run_checked(
        nightly_cargo().args(["fuzz", "build"]).args(BUILD),
        "cargo fuzz build",
    )?;
    let mut rows = Vec::new();
    for t in &targets {
        println!("fuzz: {t} for {} s...", args.seconds);
        let corpus = root().join("fuzz/corpus").join(t);
        let s = run_target(
            t,
            args.seconds,
            &corpus,
            true,
            &[],
            &logs.join(format!("{t}.log")),
        )?;
        for c in &s.crashes {
            let dest = root().join("fuzz/regressions").join(t);
            let _ = fs::create_dir_all(&dest);
            let name = c.file_name().expect("a file");
            let _ = fs::copy(c, dest.join(name));
            println!(
                "fuzz: {t}: CRASH {} (copied to fuzz/regressions/{t}/; log {})",
                c.display(),
                logs.join(format!("{t}.log")).display()
            );
        }
        println!(
            "fuzz: {t}: {} executions, {} exec/s, {} edges, corpus {}, {} crash(es)",
            s.execs,
            s.exec_per_sec,
            s.edges,
            s.corpus,
            s.crashes.len()
        );
        rows.push((t.clone(), s));
    }
    let report = report(&rows, args.seconds);
    let path = out_dir.join("report.md");
    fs::write(&path, &report).map_err(|e| Failure {
        message: format!("cannot write {}: {e}", path.display()),
        status: 1,
    })?;
    println!("{report}");
    println!("fuzz: report in {}", path.display());
    let crashes: usize = rows.iter().map(|(_, s)| s.crashes.len()).sum();
    if crashes > 0 {
        return fail(format!(
            "{crashes} crash(es); inputs copied to fuzz/regressions/ (replayed by `cargo xtask test`)"
        ));
    }
    Ok(0)
}

fn report(rows: &[(String, Stats)], seconds: u64) -> String {
    let mut r = format!(
        "# Fuzzing report\n\n`cargo xtask fuzz --seconds {seconds}`: libFuzzer, optimized with debug \
         assertions and overflow checks, no sanitizer. Stateful targets (`xenstore`, \
         `netfront`, `virtio_net_rx`) run many driver/model steps per execution.\n\n\
         | target | executions | exec/s | edges (cov) | features | corpus | crashes | seconds |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (t, s) in rows {
        r += &format!(
            "| {t} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            s.execs,
            s.exec_per_sec,
            s.edges,
            s.features,
            s.corpus,
            s.crashes.len(),
            s.seconds
        );
    }
    r
}

/// The teeth check: one bounds check removed, the matching target must crash.
fn teeth(seconds: u64, out_dir: &Path) -> Outcome {
    let build_dir = out_dir.join("teeth-build");
    let target_dir = build_dir.to_string_lossy().into_owned();
    let extra = ["--features", "teeth", "--target-dir", &target_dir];
    println!(
        "fuzz: teeth check: building {TEETH_TARGET} with the `teeth` feature (config-space bound removed)..."
    );
    crate::host::run_checked(
        nightly_cargo()
            .args(["fuzz", "build"])
            .args(BUILD)
            .args(extra)
            .arg(TEETH_TARGET),
        "cargo fuzz build --features teeth",
    )?;
    // A fresh, empty corpus and no seeds: the fuzzer must find its way alone.
    let corpus = out_dir.join("teeth-corpus");
    let _ = fs::remove_dir_all(&corpus);
    let log_path = out_dir.join("logs/teeth.log");
    let s = run_target(TEETH_TARGET, seconds, &corpus, false, &extra, &log_path)?;
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let found = !s.crashes.is_empty() && log.contains("index out of bounds");
    // The crash inputs crash the teeth build only: kept aside, not as new regressions
    // (one is committed as fuzz/regressions/virtio_pci_caps/teeth-*, which the normal
    // build must handle).
    let kept = out_dir.join("teeth-crashes");
    let _ = fs::create_dir_all(&kept);
    for c in &s.crashes {
        if let Some(name) = c.file_name() {
            let _ = fs::rename(c, kept.join(name));
        }
    }
    if found {
        println!(
            "fuzz: teeth check passed: {TEETH_TARGET} found the out-of-bounds read after {} executions ({:.0} s)",
            s.execs, s.seconds
        );
        Ok(0)
    } else {
        fail(format!(
            "teeth check failed: {TEETH_TARGET} found no crash in {seconds} s with the bound removed (log {})",
            log_path.display()
        ))
    }
}
