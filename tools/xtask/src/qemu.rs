//! Booting KVM-platform images on QEMU: the command line, streaming the console with
//! symbolized backtraces, a timeout, and decoding the exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::symbolize::Symbols;
use crate::{Accel, Failure, MachineArg, Outcome, Platform, build, fail, host};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The qboot firmware from Debian's qemu-system-data.
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// Status for "the guest ended without reporting an exit status".
pub const NO_STATUS: u8 = 125;

/// How to boot.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Accelerator; `None` = detect.
    pub accel: Option<Accel>,
    /// Machine type and firmware.
    pub machine: MachineArg,
    /// Guest RAM in MiB.
    pub memory: u32,
    /// Seconds before the guest is killed (0 = never).
    pub timeout: u64,
    /// Print the command instead of running it.
    pub dry_run: bool,
    /// Extra QEMU arguments (e.g. `-icount`).
    pub extra: Vec<String>,
}

impl RunOpts {
    /// Options for automated runs: detected accelerator, 128 MiB, a timeout.
    pub fn for_tests(machine: MachineArg, timeout: u64) -> Self {
        RunOpts {
            accel: None,
            machine,
            memory: 128,
            timeout,
            dry_run: false,
            extra: Vec::new(),
        }
    }
}

/// The accelerator to use: kvm only where the CPU shows hardware virtualization.
pub fn pick_accel(requested: Option<Accel>) -> Accel {
    requested.unwrap_or(if host::has_hw_virt() {
        Accel::Kvm
    } else {
        Accel::Tcg
    })
}

/// Makes sure QEMU is installed: on Debian as root, installs it (saying so); otherwise
/// fails with the exact command to run (exit status 2).
pub fn ensure_qemu() -> Result<(), Failure> {
    if which(QEMU).is_some() {
        return Ok(());
    }
    let debian = Path::new("/etc/debian_version").exists();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if debian && root {
        eprintln!(
            "xtask: {QEMU} not found; installing Debian package qemu-system-x86 (apt-get)..."
        );
        host::run_checked(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        host::run_checked(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "qemu-system-x86",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install qemu-system-x86",
        )?;
        return Ok(());
    }
    Err(Failure {
        message: format!("{QEMU} not found; install it with: sudo apt-get install qemu-system-x86"),
        status: 2,
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Joins app arguments into a kernel command line that libos splits back into the same
/// words (double quotes with `\"` and `\\` escapes).
pub fn kernel_cmdline(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && !a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
                a.clone()
            } else {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The full QEMU argument list for booting `image`.
pub fn qemu_args(image: &Path, cmdline: &str, opts: &RunOpts) -> Vec<String> {
    let accel = match pick_accel(opts.accel) {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    };
    let mut a: Vec<String> = match opts.machine {
        MachineArg::Microvm => vec!["-M".into(), "microvm".into()],
        MachineArg::Qboot => vec!["-M".into(), "pc".into(), "-bios".into(), QBOOT.into()],
        MachineArg::Pc => vec!["-M".into(), "pc".into()],
    };
    a.extend(["-accel", accel, "-m"].map(String::from));
    a.push(format!("{}M", opts.memory));
    if accel == "kvm" {
        // Plain `-cpu host` aborts on some nested/software KVMs (MSR 0x10a).
        a.extend(["-cpu", "host,-arch-capabilities"].map(String::from));
    }
    a.extend(
        [
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel",
        ]
        .map(String::from),
    );
    a.push(image.display().to_string());
    a.extend(opts.extra.iter().cloned());
    if !cmdline.is_empty() {
        a.push("-append".into());
        a.push(cmdline.into());
    }
    a
}

/// Quotes a QEMU command for the shell.
pub fn shell_words(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,./:+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// The app's exit status, decoded; `None` if the guest reported none.
    pub status: Option<i32>,
    /// Console output, symbolized.
    pub output: String,
    /// Whether the timeout killed the guest.
    pub timed_out: bool,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

/// Decodes QEMU's exit status: isa-debug-exit makes it `(v << 1) | 1`.
pub fn decode_status(qemu_status: Option<i32>) -> Option<i32> {
    qemu_status.filter(|s| s & 1 == 1).map(|s| s >> 1)
}

/// Boots `image` and collects (and, with `echo`, streams) its console.
pub fn run_image(
    image: &Path,
    cmdline: &str,
    opts: &RunOpts,
    echo: bool,
) -> Result<RunResult, Failure> {
    ensure_qemu()?;
    let symbols = Symbols::load(image)?;
    let args = qemu_args(image, cmdline, opts);
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .or_else(|e| fail(format!("cannot start {QEMU}: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        let mut lines = BufReader::new(stdout);
        let mut raw = Vec::new();
        while lines.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&raw);
            let line = symbols.annotate(text.trim_end_matches(['\n', '\r']));
            if echo {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            output.push_str(&line);
            output.push('\n');
            raw.clear();
        }
        output
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = (opts.timeout > 0).then(|| start + Duration::from_secs(opts.timeout));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if deadline.is_some_and(|d| Instant::now() > d) => {
                timed_out = true;
                let _ = child.kill();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return fail(format!("waiting for {QEMU}: {e}")),
        }
    };
    let elapsed = start.elapsed();
    let output = reader.join().unwrap_or_default();
    let errors = err_reader.join().unwrap_or_default();
    if !errors.trim().is_empty() {
        eprint!("{errors}");
        // QEMU's own failures (bad option, missing file) exit 1, which would decode as a
        // guest exit status 0: do not let them pass as success.
        if errors.contains(&format!("{QEMU}:")) && status.code() == Some(1) && output.is_empty() {
            return fail(format!("{QEMU} failed to start the guest"));
        }
    }
    let status = if timed_out {
        None
    } else {
        decode_status(status.code())
    };
    Ok(RunResult {
        status,
        output,
        timed_out,
        elapsed,
    })
}

/// `cargo xtask run`.
pub fn build_and_run(
    app: &str,
    platform: Platform,
    release: bool,
    args: &[String],
    opts: &RunOpts,
) -> Outcome {
    let image = build::build(app, platform, release)?;
    let cmdline = kernel_cmdline(args);
    if opts.dry_run {
        println!("{}", shell_words(QEMU, &qemu_args(&image, &cmdline, opts)));
        return Ok(0);
    }
    let r = run_image(&image, &cmdline, opts, true)?;
    if r.timed_out {
        eprintln!("xtask: guest killed after the {} s timeout", opts.timeout);
        return Ok(NO_STATUS);
    }
    match r.status {
        Some(code) => Ok(u8::try_from(code).unwrap_or(NO_STATUS)),
        None => {
            eprintln!(
                "xtask: the guest ended without reporting an exit status (triple fault or reset?)"
            );
            Ok(NO_STATUS)
        }
    }
}
