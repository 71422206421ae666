//! The processes xtask starts, and stopping them when xtask is stopped.
//!
//! Scripts, CI runners and service managers stop a program with SIGTERM (a terminal
//! with SIGINT, a closed session with SIGHUP). A VM that xtask started must not outlive
//! it: it would keep its forwarded ports and a CPU. So:
//!
//! - every long-running process (QEMU, uhyve, cargo, the Xen test bed's QEMU) is
//!   started with [`spawn`], which records it as live until it is reaped;
//! - [`install`] (called first thing in `main`) catches SIGINT, SIGTERM and SIGHUP on
//!   a thread of its own, forwards the signal to every live process, waits until they
//!   are reaped (10 s, then SIGKILL), and ends xtask by the same signal;
//! - each VM process also gets a parent-death signal (`PR_SET_PDEATHSIG` = SIGKILL), so
//!   it dies with xtask even when xtask cannot forward anything (SIGKILL, a crash).
//!   Tools (cargo, rustup, apt-get) do not: a SIGKILL could break an installation.
//!
//! Reaping happens under the same lock the forwarding takes, so a signal never goes to
//! a process ID that was already reaped (and possibly reused).

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Process IDs of the started, not yet reaped processes.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// The signal xtask is stopping on (0: running).
static STOPPING: AtomicI32 = AtomicI32::new(0);
/// How long stopped processes get to end before they are killed.
const GRACE: Duration = Duration::from_secs(10);

/// Starts forwarding SIGINT, SIGTERM and SIGHUP (see the module doc).
pub fn install() {
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "xtask: warning: cannot catch signals ({e}); a stopped xtask may leave its VM running"
            );
            return;
        }
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let deferred = DEFERRED.lock().ok().and_then(|d| d.clone());
            match deferred {
                Some(flag) => flag.store(true, Ordering::SeqCst),
                None => stop(sig),
            }
        }
    });
}

/// While set, a signal only raises this flag (see [`defer_signals_to`]).
static DEFERRED: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);

/// From now on SIGINT, SIGTERM and SIGHUP only set `flag`: the running command stops
/// on its own, for it has cleanup to do that forwarding a signal cannot (destroying a
/// libvirt domain, removing a tap).
pub fn defer_signals_to(flag: Arc<AtomicBool>) {
    if let Ok(mut d) = DEFERRED.lock() {
        *d = Some(flag);
    }
}

/// Forwards `sig` to every live process, waits for them, and ends xtask by `sig`.
fn stop(sig: i32) -> ! {
    STOPPING.store(sig, Ordering::SeqCst);
    let n = send(sig);
    if n > 0 {
        eprintln!(
            "xtask: {}; stopping the {n} process(es) it started",
            signal_name(sig)
        );
    }
    if !wait_reaped(GRACE) {
        eprintln!(
            "xtask: still running after {} s; killing them",
            GRACE.as_secs()
        );
        send(libc::SIGKILL);
        wait_reaped(GRACE);
    }
    // End as the signal would have ended xtask, so the caller sees it.
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    std::process::exit(128 + sig);
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "interrupted (SIGINT)",
        SIGTERM => "terminated (SIGTERM)",
        SIGHUP => "hung up (SIGHUP)",
        _ => "stopped",
    }
}

/// Sends `sig` to every live process; returns how many there were.
fn send(sig: i32) -> usize {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in live.iter() {
        // SAFETY: kill has no memory effects; `pid` is a child not yet reaped (reaping
        // takes this lock), so the ID still names it.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
    live.len()
}

/// Waits until every live process was reaped (by the threads waiting for them), up to
/// `limit`; returns whether they all were.
fn wait_reaped(limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if LIVE.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Once xtask is stopping, a thread that reaped its process (or wants to start one)
/// waits here for the signal thread to end xtask, instead of carrying on.
fn park_if_stopping() {
    if STOPPING.load(Ordering::SeqCst) != 0 {
        loop {
            std::thread::park();
        }
    }
}

/// A started process, live until reaped through [`Tracked::try_wait`] or
/// [`Tracked::wait`]; dropping it un-reaped kills it.
#[derive(Debug)]
pub struct Tracked {
    child: Child,
    reaped: bool,
}

/// Starts `cmd` (a VM) as a tracked process with a parent-death signal (see the module
/// doc).
pub fn spawn(cmd: &mut Command) -> io::Result<Tracked> {
    spawn_as(cmd, true)
}

/// Starts `cmd` (a tool such as cargo, rustup or apt-get) as a tracked process: it gets
/// xtask's SIGINT/SIGTERM/SIGHUP, but no parent-death SIGKILL, which could cut a
/// package installation short.
pub fn spawn_tool(cmd: &mut Command) -> io::Result<Tracked> {
    spawn_as(cmd, false)
}

fn spawn_as(cmd: &mut Command, parent_death_kill: bool) -> io::Result<Tracked> {
    park_if_stopping();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit), touching no locks or heap.
    unsafe {
        cmd.pre_exec(move || {
            if !parent_death_kill {
                return Ok(());
            }
            // The process gets SIGKILL when the thread that started it ends. If xtask
            // ended before this line, the signal will never come: end now instead.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    live.push(child.id());
    Ok(Tracked {
        child,
        reaped: false,
    })
}

/// Runs `cmd` (a tool, see [`spawn_tool`]) to completion; returns its exit status.
pub fn status(cmd: &mut Command) -> io::Result<ExitStatus> {
    spawn_tool(cmd)?.wait()
}

/// Runs `cmd` (a tool, see [`spawn_tool`]) to completion with its stdout piped (stderr and
/// stdin as `cmd` sets them); returns what it printed and its status.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    let mut t = spawn_tool(cmd.stdout(Stdio::piped()))?;
    let mut stdout = Vec::new();
    if let Some(mut out) = t.child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    let status = t.wait()?;
    Ok(Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

impl Tracked {
    /// The process's piped stdout, stderr and stdin (as `Child`'s fields).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has ended (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.reaped {
            return self.child.try_wait();
        }
        let result = {
            let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            let r = self.child.try_wait();
            if matches!(r, Ok(Some(_)) | Err(_)) {
                live.retain(|&p| p != self.child.id());
                self.reaped = true;
            }
            r
        };
        if self.reaped {
            park_if_stopping();
        }
        result
    }

    /// Waits for it to end (polling, so that it is reaped under the lock).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills it (SIGKILL); reap it with [`Tracked::wait`].
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.wait();
        }
    }
}
