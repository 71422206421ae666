//! Running a VMM process: stream its console with symbolized backtraces, enforce a
//! timeout, collect what it printed. `qemu` and `uhyve` build the command lines and
//! decode the exit statuses.

pub mod child;
pub mod libvirt;
pub mod libvirt_xml;
pub mod qemu;
pub mod uhyve;
pub mod xl_batch;
pub mod xl_output;
pub mod xl_run;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::symbolize::Symbols;
use crate::{Failure, fail};

/// The KVM-platform VMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Vmm {
    /// QEMU (PVH boot; TCG or KVM).
    Qemu,
    /// uhyve (hermit-entry boot; needs /dev/kvm).
    Uhyve,
}

/// What a guest run produced.
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

/// A finished VMM process.
#[derive(Debug)]
pub struct Captured {
    /// Its stdout (the guest console), symbolized.
    pub stdout: String,
    /// Its stderr (the VMM's own messages).
    pub stderr: String,
    /// Its exit code (`None` if killed by a signal or the timeout).
    pub code: Option<i32>,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

impl Captured {
    /// Shows the VMM's own messages (its stderr) to the user and fails if `crashed`
    /// says they show the VMM failing; otherwise the run with the guest's exit status
    /// as `status` decodes it from the VMM's.
    pub fn into_result(
        self,
        crashed: impl Fn(&Captured) -> Option<String>,
        status: impl Fn(Option<i32>) -> Option<i32>,
    ) -> Result<RunResult, Failure> {
        if !self.stderr.trim().is_empty() {
            eprint!("{}", self.stderr);
            if let Some(why) = crashed(&self) {
                return fail(why);
            }
        }
        Ok(RunResult {
            status: status(self.code),
            output: self.stdout,
            timed_out: self.timed_out,
            elapsed: self.elapsed,
        })
    }
}

/// Runs `cmd` (a VMM booting `image`), streaming stdout when `echo`, killing it after
/// `timeout` seconds (0 = never).
pub fn run_captured(
    cmd: Command,
    image: &Path,
    timeout: u64,
    echo: bool,
) -> Result<Captured, Failure> {
    run_captured_filtered(cmd, image, timeout, echo, &[])
}

/// Like [`run_captured`], but lines starting with one of `quiet` are not echoed (they
/// are still captured): hypervisor chatter such as Xen's `(XEN)` log.
pub fn run_captured_filtered(
    cmd: Command,
    image: &Path,
    timeout: u64,
    echo: bool,
    quiet: &'static [&'static str],
) -> Result<Captured, Failure> {
    run_captured_symbols(cmd, Symbols::load(image)?, timeout, echo, quiet)
}

/// Like [`run_captured_filtered`], with the symbols to annotate backtraces with given
/// (`Symbols::default()` leaves them raw, e.g. when several images share one console).
pub fn run_captured_symbols(
    mut cmd: Command,
    symbols: Symbols,
    timeout: u64,
    echo: bool,
    quiet: &'static [&'static str],
) -> Result<Captured, Failure> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = crate::vmm::child::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .or_else(|e| fail(format!("cannot start {program}: {e}")))?;
    let stdout = child.child_mut().stdout.take().expect("stdout is piped");
    let mut stderr = child.child_mut().stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        let mut lines = BufReader::new(stdout);
        let mut raw = Vec::new();
        while lines.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&raw);
            let line = symbols.annotate(text.trim_end_matches(['\n', '\r']));
            if echo && !quiet.iter().any(|q| line.starts_with(q)) {
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
    let deadline = (timeout > 0).then(|| start + Duration::from_secs(timeout));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if deadline.is_some_and(|d| Instant::now() > d) => {
                timed_out = true;
                let _ = child.kill();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return fail(format!("waiting for {program}: {e}")),
        }
    };
    let elapsed = start.elapsed();
    Ok(Captured {
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        code: if timed_out { None } else { status.code() },
        timed_out,
        elapsed,
    })
}

/// Searches `PATH` (and cargo's bin directory) for `program`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|h| h.join("bin"));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(cargo_bin)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
