//! Integration cases for the user's path through xtask itself: stopping `cargo xtask
//! run` with a signal, apps outside the repository, `--gdb`. Each runs this very xtask
//! binary as a user would run `cargo xtask …` (cargo `exec`s it, so the user's process
//! *is* this binary) and judges what is left afterwards with real programs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::test::net::{free_port, http_get_ok};
use crate::vmm::child::{self, Tracked};
use crate::vmm::qemu::Proto;

/// How long a booted app has to show it is up.
const READY: Duration = Duration::from_secs(120);
/// How long a stopped xtask has to end (it waits for its VM to end).
const STOPPED: Duration = Duration::from_secs(30);

/// A case: its name and what runs it (`Ok` carries a note printed after the name).
type UserCase = (&'static str, fn(&'static str) -> Result<String, String>);

/// Runs every case `wanted` selects; reports each through `record`.
pub fn run(wanted: &dyn Fn(&str) -> bool, record: &mut dyn FnMut(&str, Result<String, String>)) {
    let cases: [UserCase; 6] = [
        ("user/toolchain/adds-missing-target", toolchain_recovers),
        ("user/sigterm/qemu-httpd-forward", sigterm_qemu),
        ("user/sigterm/xen-dom0", sigterm_xen_dom0),
        ("user/new-app/outside-repo-qemu-and-xen-dom0", new_app),
        ("user/gdb/qemu-hello-main", |c| gdb_hello(c, &[])),
        ("user/gdb/xen-dom0-hello-main", |c| {
            gdb_hello(c, &["--platform", "xen", "--dom0"])
        }),
    ];
    for (name, f) in cases {
        if wanted(name) {
            let _ = std::fs::remove_file(crate::test::log_path(name));
            record(name, f(name));
        }
    }
}

/// This xtask as a tracked process running `args`, its stdout and stderr collected
/// (and saved as the case's log when dropped).
struct Xtask {
    case: &'static str,
    args: String,
    proc: Tracked,
    output: Arc<Mutex<String>>,
}

impl Drop for Xtask {
    fn drop(&mut self) {
        // A case may run xtask several times: the log holds each run after its command.
        let path = crate::test::log_path(self.case);
        let before = std::fs::read_to_string(&path).unwrap_or_default();
        crate::test::save_log(
            self.case,
            &format!("{before}$ {}\n{}\n", self.args, self.output()),
        );
    }
}

impl Xtask {
    fn start(case: &'static str, args: &[&str]) -> Result<Xtask, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut x = Xtask::start_program(case, &exe.display().to_string(), args, &[])?;
        x.args = format!("cargo xtask {}", args.join(" "));
        Ok(x)
    }

    /// Runs `program args` (e.g. `cargo xtask …`) with `env` added.
    fn start_program(
        case: &'static str,
        program: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Xtask, String> {
        let mut proc = child::spawn(
            Command::new(program)
                .args(args)
                .envs(env.iter().copied())
                .current_dir(crate::host::root())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| format!("cannot start xtask: {e}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(proc.child_mut().stdout.take().expect("piped")),
            Box::new(proc.child_mut().stderr.take().expect("piped")),
        ];
        for s in streams {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    let mut o = sink.lock().expect("output lock");
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Ok(Xtask {
            case,
            args: format!("{program} {}", args.join(" ")),
            proc,
            output,
        })
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits until its output contains `text` (or `probe` succeeds), it ends, or
    /// [`READY`] passes.
    fn wait_for(&mut self, what: &str, ready: &dyn Fn(&str) -> bool) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if ready(&self.output()) {
                return Ok(());
            }
            if let Ok(Some(s)) = self.proc.try_wait() {
                return Err(self.with_output(format!("xtask ended ({s}) before {what}")));
            }
            if start.elapsed() > READY {
                return Err(self.with_output(format!("no {what} within {} s", READY.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for it to end ([`READY`] at most); returns its exit code.
    fn finish(&mut self) -> Result<i32, String> {
        let start = Instant::now();
        loop {
            match self.proc.try_wait() {
                Ok(Some(s)) => {
                    // Let the readers take the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    return s
                        .code()
                        .ok_or_else(|| self.with_output(format!("xtask ended by {s}")));
                }
                Err(e) => return Err(format!("waiting for xtask: {e}")),
                Ok(None) if start.elapsed() > READY => {
                    return Err(
                        self.with_output(format!("xtask did not end within {} s", READY.as_secs()))
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `why` and the last lines xtask printed.
    fn with_output(&self, why: String) -> String {
        let out = self.output();
        let tail: Vec<&str> = out.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{why}\n  --- xtask's last lines ---\n  {}",
            tail.join("\n  ")
        )
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            // The fields after the command name (which may hold spaces): state ppid …
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
            && rest.split_whitespace().nth(1) == Some(&pid.to_string())
        {
            kids.push(p);
        }
    }
    kids
}

/// Whether process `pid` still exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// The command line of process `pid`, for messages.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect()
}

/// Sends SIGTERM to `x` and checks that it ends by it, and that none of the processes
/// it had started (`vms`) is left.
fn terminate_and_check(mut x: Xtask, vms: &[u32]) -> Result<(), String> {
    // SAFETY: kill has no memory effects; `x` is our unreaped child.
    unsafe { libc::kill(x.proc.child_mut().id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = x.proc.try_wait() {
            break s;
        }
        if start.elapsed() > STOPPED {
            return Err(x.with_output(format!(
                "xtask did not end within {} s of SIGTERM",
                STOPPED.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    if status.signal() != Some(libc::SIGTERM) {
        return Err(x.with_output(format!("xtask ended with {status}, not by SIGTERM")));
    }
    // A process reparented to init is reaped by it soon after it ends.
    let start = Instant::now();
    while vms.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = vms
        .iter()
        .filter(|&&p| alive(p))
        .map(|&p| format!("{p} ({})", cmdline(p)))
        .collect();
    if !left.is_empty() {
        // Do not leave it running for the next case.
        for p in vms {
            // SAFETY: as above; the IDs were xtask's children a moment ago.
            unsafe { libc::kill(*p as libc::pid_t, libc::SIGKILL) };
        }
        return Err(x.with_output(format!(
            "still running after xtask ended: {}",
            left.join(", ")
        )));
    }
    Ok(())
}

/// `kill -TERM` of `cargo xtask run httpd --forward P:80` ends QEMU and frees P.
fn sigterm_qemu(case: &'static str) -> Result<String, String> {
    crate::build::build("httpd", crate::Platform::Kvm, false).map_err(|f| f.message)?;
    let port = free_port(Proto::Tcp)?;
    let fwd = format!("{port}:80");
    let mut x = Xtask::start(case, &["run", "httpd", "--forward", &fwd])?;
    x.wait_for("an HTTP answer on the forwarded port", &|_| {
        http_get_ok(port, "/").is_ok()
    })?;
    let vms = children_of(x.proc.child_mut().id());
    if vms.is_empty() {
        return Err(x.with_output("xtask serves but has no child process".into()));
    }
    terminate_and_check(x, &vms)?;
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("port {port} still taken after xtask ended: {e}"))?;
    Ok(format!(" (QEMU ended, port {port} free)"))
}

/// `kill -TERM` of `cargo xtask run sleeper --platform xen --dom0` ends the Xen bed's
/// QEMU.
fn sigterm_xen_dom0(case: &'static str) -> Result<String, String> {
    crate::build::build("sleeper", crate::Platform::Xen, false).map_err(|f| f.message)?;
    crate::testbed::xen::ensure_hypervisor().map_err(|f| f.message)?;
    let mut x = Xtask::start(case, &["run", "sleeper", "--platform", "xen", "--dom0"])?;
    x.wait_for("`sleeper: ready`", &|out| out.contains("sleeper: ready"))?;
    let vms = children_of(x.proc.child_mut().id());
    if vms.is_empty() {
        return Err(x.with_output("the app runs but xtask has no child process".into()));
    }
    terminate_and_check(x, &vms)?;
    Ok(" (Xen's QEMU ended)".into())
}

/// A temporary directory outside the repository, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, String> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("upcall-{what}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        if dir.starts_with(crate::host::root()) {
            return Err(format!("{} is inside the repository", dir.display()));
        }
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cargo xtask new greeter --path /tmp/…/greeter`, then `cargo xtask run
/// --manifest-path /tmp/…/greeter/Cargo.toml` on QEMU and as Xen dom0: the app builds,
/// boots, greets and gets its argument, and exits 0.
fn new_app(case: &'static str) -> Result<String, String> {
    let tmp = TempDir::new("new-app")?;
    let dir = tmp.0.join("greeter");
    let dir_s = dir.display().to_string();
    let mut x = Xtask::start(case, &["new", "greeter", "--path", &dir_s])?;
    if x.finish()? != 0 {
        return Err(x.with_output("`xtask new` failed".into()));
    }
    drop(x);
    let manifest = dir.join("Cargo.toml").display().to_string();
    let mut notes = Vec::new();
    for (platform, extra) in [
        ("kvm", &[][..]),
        ("xen", &["--platform", "xen", "--dom0"][..]),
    ] {
        let mut args = vec!["run", "--manifest-path", &manifest];
        args.extend(extra);
        args.extend(["--", "from-the-test"]);
        let mut x = Xtask::start(case, &args)?;
        let code = x.finish()?;
        let out = x.output();
        let greeting = format!("Hello from greeter on {platform}");
        if code != 0 || !out.contains(&greeting) || !out.contains("arg[0] = from-the-test") {
            return Err(x.with_output(format!(
                "on {platform}: exit status {code}; wanted 0, `{greeting}` and `arg[0] = from-the-test`"
            )));
        }
        notes.push(platform);
    }
    Ok(format!(" (greeted on {})", notes.join(" and ")))
}

/// `cargo xtask run hello --gdb …`, then the gdb command it prints, in batch mode with
/// `bt` added: the breakpoint on `hello::main` is hit with a backtrace through libos's
/// boot, and after gdb detaches the app runs to its end and exits 0.
fn gdb_hello(case: &'static str, extra: &[&str]) -> Result<String, String> {
    crate::host::ensure_program("gdb", &["gdb"]).map_err(|f| f.message)?;
    let mut args = vec!["run", "hello", "--gdb"];
    args.extend(extra);
    let mut x = Xtask::start(case, &args)?;
    x.wait_for("the gdb command", &|out| {
        out.lines().any(|l| l.starts_with("  gdb "))
    })?;
    let out = x.output();
    let line = out
        .lines()
        .find(|l| l.starts_with("  gdb "))
        .expect("waited for it")
        .trim();
    let gdb = child::output(
        Command::new("timeout")
            .arg("120")
            .arg("sh")
            .arg("-c")
            .arg(format!("{line} -batch -ex bt 2>&1"))
            .stdin(Stdio::null()),
    )
    .map_err(|e| format!("cannot run gdb: {e}"))?;
    let said = String::from_utf8_lossy(&gdb.stdout).into_owned();
    let log = crate::test::log_path(case).with_extension("gdb.log");
    let _ = std::fs::write(&log, format!("$ {line} -batch -ex bt\n{said}"));
    let wanted = [
        "Breakpoint 1, hello::main",
        "#0  hello::main",
        "libos::boot::start",
    ];
    if let Some(w) = wanted.iter().find(|w| !said.contains(*w)) {
        return Err(x.with_output(format!(
            "gdb's output lacks `{w}` (it is in {}):\n  {}",
            log.display(),
            said.lines().collect::<Vec<_>>().join("\n  ")
        )));
    }
    let code = x.finish()?;
    if code != 0 || !x.output().contains("Hello from Upcall on") {
        return Err(x.with_output(format!(
            "after gdb detached, the app ended with status {code}, not 0 after its greeting"
        )));
    }
    Ok(" (breakpoint hit, backtrace through libos::boot::start)".into())
}

/// A toolchain named like the pinned one but without the image target, in a scratch
/// `RUSTUP_HOME` (a hard-linked copy of the real one, under `target/`): `cargo xtask
/// build hello` there must add the target itself, say so, and build.
fn toolchain_recovers(case: &'static str) -> Result<String, String> {
    let target = crate::host::IMAGE_TARGET;
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .ok_or("neither RUSTUP_HOME nor HOME is set")?;
    let name = match std::env::var("RUSTUP_TOOLCHAIN") {
        Ok(n) => n,
        Err(_) => {
            let out = Command::new("rustup")
                .args(["show", "active-toolchain"])
                .current_dir(crate::host::root())
                .output()
                .map_err(|e| format!("rustup: {e}"))?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .ok_or("rustup names no active toolchain")?
                .to_string()
        }
    };
    let real = home
        .join("toolchains")
        .join(&name)
        .canonicalize()
        .map_err(|e| format!("toolchain {name} under {}: {e}", home.display()))?;
    let scratch = crate::host::target_dir().join("toolchain-check");
    let _ = std::fs::remove_dir_all(&scratch);
    let tc = scratch.join("toolchains").join(&name);
    std::fs::create_dir_all(scratch.join("toolchains"))
        .and_then(|()| std::fs::create_dir_all(scratch.join("update-hashes")))
        .map_err(|e| format!("create {}: {e}", scratch.display()))?;
    for f in ["settings.toml", &format!("update-hashes/{name}")] {
        let _ = std::fs::copy(home.join(f), scratch.join(f));
    }
    let ok = Command::new("cp")
        .arg("-al")
        .arg(&real)
        .arg(&tc)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "cannot hard-link {} into {} (same file system needed)",
            real.display(),
            tc.display()
        ));
    }
    // Take the target out the way rustup would have left it never installed. The
    // bookkeeping files get fresh copies first: rustup rewrites them in place, and they
    // are hard links into the real toolchain.
    let rustlib = tc.join("lib/rustlib");
    for e in std::fs::read_dir(&rustlib)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let p = e.path();
        if p.is_file() {
            let text = std::fs::read(&p).map_err(|e| e.to_string())?;
            std::fs::remove_file(&p).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&text)
                .replace(&format!("rust-std-{target}\n"), "")
                .replace(
                    &format!(
                        "[[components]]\npkg = \"rust-std\"\ntarget = \"{target}\"\nis_extension = false\n\n"
                    ),
                    "",
                );
            std::fs::write(&p, text).map_err(|e| e.to_string())?;
        }
    }
    let _ = std::fs::remove_dir_all(rustlib.join(target));
    let _ = std::fs::remove_file(rustlib.join(format!("manifest-rust-std-{target}")));
    let listed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", &name])
        .env("RUSTUP_HOME", &scratch)
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if String::from_utf8_lossy(&listed.stdout).contains(&format!("rust-std-{target}")) {
        return Err("the scratch toolchain still lists the target".into());
    }
    // The user's command, through rustup's cargo proxy, in the scratch RUSTUP_HOME.
    let mut x = Xtask::start_program(
        case,
        "cargo",
        &["xtask", "build", "hello"],
        &[("RUSTUP_HOME", scratch.as_os_str())],
    )?;
    let code = x.finish()?;
    let out = x.output();
    let added = rustlib.join(target).join("lib").is_dir();
    drop(x);
    let _ = std::fs::remove_dir_all(&scratch);
    if code != 0 || !out.contains(&format!("lacks target(s) {target}")) || !added {
        return Err(format!(
            "wanted the message, the target added and status 0; got status {code}, target {}:\n  {}",
            if added { "added" } else { "not added" },
            out.lines().collect::<Vec<_>>().join("\n  ")
        ));
    }
    Ok(" (target added by xtask, hello built)".into())
}
