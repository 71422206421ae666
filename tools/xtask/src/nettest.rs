//! Network integration tests: boot an app with forwarded ports, wait until it answers,
//! run real host clients against it (`curl`, `ab`, the echo client below), then stop
//! the guest and judge its console. The cases are data in `upcall_tests::net`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use upcall_tests::Machine;
use upcall_tests::net::{self, NetBed, NetCase, NetCheck, Proto, Ready};

pub(crate) mod hostile;
mod xl_tap;

use crate::qemu::{self, Forward, RunOpts};
use crate::symbolize::Symbols;
use crate::{MachineArg, Platform, build, host, xen_testbed};

/// How long an app may take from QEMU start to answering (boot, DHCP; SeaBIOS).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Limit for one client command (the load run included).
const CLIENT_TIMEOUT_S: u32 = 240;

/// Runs every wanted network case, reporting each through `record`.
pub fn run(wanted: &dyn Fn(&str) -> bool, record: &mut dyn FnMut(&str, Result<String, String>)) {
    let cases: Vec<NetCase> = net::net_cases()
        .into_iter()
        .filter(|c| wanted(c.name))
        .collect();
    if cases.is_empty() {
        return;
    }
    println!("== networking: apps on QEMU user networking, real clients on 127.0.0.1");
    if let Err(f) = host::ensure_program("curl", &["curl"])
        .and_then(|()| host::ensure_program("ab", &["apache2-utils"]))
    {
        record("net clients available (curl, ab)", Err(f.message));
        return;
    }
    for case in &cases {
        let start = Instant::now();
        let result =
            run_case(case).map(|note| format!("{note} ({:.1} s)", start.elapsed().as_secs_f64()));
        record(case.name, result);
    }
}

fn machine_arg(m: Machine) -> MachineArg {
    match m {
        Machine::Microvm => MachineArg::Microvm,
        Machine::PcQboot => MachineArg::Qboot,
        Machine::PcSeabios => MachineArg::Pc,
    }
}

/// A free port on the host's 127.0.0.1 (the kernel picks it; QEMU binds it right after).
pub(crate) fn free_port(proto: qemu::Proto) -> Result<u16, String> {
    let port = match proto {
        qemu::Proto::Tcp => std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()),
        qemu::Proto::Udp => UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
    };
    port.map(|a| a.port())
        .map_err(|e| format!("no free host port: {e}"))
}

fn run_case(case: &NetCase) -> Result<String, String> {
    let platform = match case.bed {
        NetBed::Qemu(_) | NetBed::Tap(_) => Platform::Kvm,
        NetBed::XenXl | NetBed::XenXlTap => Platform::Xen,
    };
    let image = build::build(case.app, platform, case.release).map_err(|f| f.message)?;
    match case.bed {
        NetBed::Tap(machine) => {
            let bed = hostile::TapBed::Kvm(machine_arg(machine));
            return hostile::run_tap_case(case, &image, bed);
        }
        NetBed::XenXlTap => return hostile::run_tap_case(case, &image, hostile::TapBed::XenXl),
        NetBed::Qemu(_) | NetBed::XenXl => {}
    }
    let forwards = case
        .ports
        .iter()
        .map(|&(proto, guest)| {
            let proto = match proto {
                Proto::Tcp => qemu::Proto::Tcp,
                Proto::Udp => qemu::Proto::Udp,
            };
            let host = free_port(proto)?;
            Ok(Forward { proto, host, guest })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let port = |p: qemu::Proto| forwards.iter().find(|f| f.proto == p).map(|f| f.host);
    let tcp = port(qemu::Proto::Tcp).ok_or("a network case needs a TCP port")?;
    let listener = if case.args.iter().any(|a| a.contains(net::HOST_LISTENER)) {
        Some(HostListener::start()?)
    } else {
        None
    };
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| match &listener {
            Some(l) => a.replace(net::HOST_LISTENER, &format!("10.0.2.2:{}", l.port)),
            None => a.to_string(),
        })
        .collect();
    let cmdline = qemu::kernel_cmdline(&args);
    let qemu_args = match case.bed {
        NetBed::Qemu(machine) => {
            let mut opts = RunOpts::for_tests(machine_arg(machine), 0);
            opts.forwards = forwards.clone();
            qemu::qemu_args(&image, &cmdline, &opts)
        }
        NetBed::Tap(_) | NetBed::XenXlTap => {
            unreachable!("TAP cases run in hostile::run_tap_case")
        }
        NetBed::XenXl => {
            let tb = xen_testbed::ensure_xl_testbed().map_err(|f| f.message)?;
            crate::xl_run::xl_qemu_args(
                &tb,
                &image,
                &cmdline,
                upcall_tests::XL_MEMORY_MB,
                1,
                &forwards,
            )
            .map_err(|f| f.message)?
        }
    };
    let mut qemu_args = qemu_args;
    add_device_properties(&mut qemu_args, case.device)?;
    let mut guest = Guest::boot(&image, qemu_args)?;
    let verdict = wait_ready(&mut guest, case.ready, LOCALHOST, tcp).and_then(|()| {
        let mut notes = Vec::new();
        for check in case.checks {
            notes.extend(run_check(
                check,
                LOCALHOST,
                tcp,
                port(qemu::Proto::Udp),
                listener.as_ref(),
            )?);
        }
        Ok(notes)
    });
    finish(case, guest, verdict)
}

const LOCALHOST: &str = "127.0.0.1";

/// Stops the guest and judges the run: the checks' verdict, no early exit, the console.
fn finish(
    case: &NetCase,
    guest: Guest,
    verdict: Result<Vec<String>, String>,
) -> Result<String, String> {
    let (console, early_exit) = guest.stop();
    crate::test::save_log(case.name, &console);
    let with_console = |why: String| {
        let tail: Vec<&str> = console.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{why}\n  --- last console lines ---\n  {}",
            tail.join("\n  ")
        )
    };
    let notes = verdict.map_err(with_console)?;
    if let Some(status) = early_exit {
        return Err(with_console(format!(
            "the guest stopped by itself ({status})"
        )));
    }
    net::judge_console(case.console, &console).map_err(with_console)?;
    Ok(if notes.is_empty() {
        String::new()
    } else {
        format!(" [{}]", notes.join("; "))
    })
}

/// Appends `props` (e.g. `csum=off,guest_csum=off`) to the virtio-net `-device` of
/// `qemu_args`; nothing if `props` is empty. An error if there is no such device (a
/// Xen bed: its card is netfront).
pub(crate) fn add_device_properties(qemu_args: &mut [String], props: &str) -> Result<(), String> {
    if props.is_empty() {
        return Ok(());
    }
    let device = qemu_args
        .iter_mut()
        .find(|a| a.starts_with("virtio-net-"))
        .ok_or_else(|| format!("device properties `{props}` but no virtio-net device"))?;
    device.push(',');
    device.push_str(props);
    Ok(())
}

/// A running guest whose console is collected in the background.
pub(crate) struct Guest {
    child: crate::child::Tracked,
    console: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Guest {
    /// Starts QEMU with `qemu_args` booting `image` (whose symbols name backtraces).
    pub(crate) fn boot(image: &Path, qemu_args: Vec<String>) -> Result<Guest, String> {
        qemu::ensure_qemu().map_err(|f| f.message)?;
        let symbols = Symbols::load(image).map_err(|f| f.message)?;
        let mut child = crate::child::spawn(
            Command::new(qemu::QEMU)
                .args(qemu_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| format!("cannot start {}: {e}", qemu::QEMU))?;
        let console = Arc::new(Mutex::new(String::new()));
        let stdout = child.child_mut().stdout.take().expect("stdout is piped");
        let stderr = child.child_mut().stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&console);
        let reader = std::thread::spawn(move || {
            let append = |line: &str| {
                let mut c = sink.lock().expect("console lock");
                c.push_str(line);
                c.push('\n');
            };
            let err_sink = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = BufReader::new(stderr).read_to_string(&mut s);
                s
            });
            let mut lines = BufReader::new(stdout);
            let mut raw = Vec::new();
            while lines.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&raw);
                append(&symbols.annotate(text.trim_end_matches(['\n', '\r'])));
                raw.clear();
            }
            let err = err_sink.join().unwrap_or_default();
            if !err.trim().is_empty() {
                append(&format!("[qemu stderr] {}", err.trim()));
            }
        });
        Ok(Guest {
            child,
            console,
            reader,
        })
    }

    /// QEMU's process id (for its CPU accounting in `/proc`).
    pub(crate) fn pid(&mut self) -> u32 {
        self.child.child_mut().id()
    }

    /// The guest's exit status if it already ended.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(match qemu::decode_status(s.code()) {
                Some(code) => format!("exit status {code}"),
                None => format!("QEMU {s}"),
            }),
            _ => None,
        }
    }

    /// Stops the guest; returns its console and how it ended if it ended by itself.
    pub(crate) fn stop(mut self) -> (String, Option<String>) {
        let early = self.exited();
        if early.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = self.reader.join();
        let console = self.console.lock().expect("console lock").clone();
        (console, early)
    }
}

/// Retries `ready`'s probe until it succeeds, the guest ends, or the deadline passes.
fn wait_ready(guest: &mut Guest, ready: Ready, host: &str, port: u16) -> Result<(), String> {
    match ready {
        Ready::Http => wait_until(guest, port, &|p| http_get_ok_at(host, p, "/status")),
        Ready::Echo => wait_until(guest, port, &|p| echo_probe(host, p)),
    }
}

/// Retries `probe(port)` until it succeeds, the guest ends, or [`READY_TIMEOUT`] passes.
pub(crate) fn wait_until(
    guest: &mut Guest,
    port: u16,
    probe: &dyn Fn(u16) -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let Err(last) = probe(port) else {
            return Ok(());
        };
        if let Some(how) = guest.exited() {
            return Err(format!("the guest ended ({how}) before it served"));
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "127.0.0.1:{port} did not answer within {} s (last attempt: {last})",
                READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `GET path` answers `200`. (QEMU accepts on a forwarded port at once, before the
/// guest runs, so readiness is an answer from the app, not a connection.)
pub(crate) fn http_get_ok(port: u16, path: &str) -> Result<(), String> {
    http_get_ok_at(LOCALHOST, port, path)
}

/// [`http_get_ok`] on `host`.
pub(crate) fn http_get_ok_at(host: &str, port: u16, path: &str) -> Result<(), String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    if reply.starts_with(b"HTTP/1.1 200") || reply.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "reply `{}`",
            String::from_utf8_lossy(&reply[..reply.len().min(40)])
        ))
    }
}

fn echo_probe(host: &str, port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back).map_err(|e| e.to_string())?;
    if &back == b"ping" {
        Ok(())
    } else {
        Err("echo probe got other bytes".into())
    }
}

/// Runs a command under coreutils' `timeout`, returning its output.
pub(crate) fn client(program: &str, args: &[String]) -> Result<std::process::Output, String> {
    Command::new("timeout")
        .arg(CLIENT_TIMEOUT_S.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

pub(crate) fn curl(port: u16, path: &str) -> Result<Vec<u8>, String> {
    curl_at(LOCALHOST, port, path)
}

/// [`curl`] on `host`.
pub(crate) fn curl_at(host: &str, port: u16, path: &str) -> Result<Vec<u8>, String> {
    let url = format!("http://{host}:{port}{path}");
    let out = client(
        "curl",
        &[
            "-sS".into(),
            "--fail".into(),
            "--max-time".into(),
            "60".into(),
            url.clone(),
        ],
    )?;
    if !out.status.success() {
        return Err(format!(
            "curl {url}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Runs one check; `Some(note)` is printed with the result.
fn run_check(
    check: &NetCheck,
    host: &str,
    tcp: u16,
    udp: Option<u16>,
    listener: Option<&HostListener>,
) -> Result<Option<String>, String> {
    let curl = |port: u16, path: &str| curl_at(host, port, path);
    match *check {
        NetCheck::Outbound { line } => {
            let l = listener.ok_or("an outbound check needs @HOST_LISTENER@ in the args")?;
            let got = l.wait()?;
            if got != line {
                return Err(format!("the host listener got `{got}`, want `{line}`"));
            }
            Ok(Some(format!(
                "guest connected out to 127.0.0.1:{}, sent `{got}`",
                l.port
            )))
        }
        NetCheck::HttpGenerated => {
            use upcall_tests::pattern;
            let mut want = vec![0u8; pattern::LEN];
            pattern::fill(0, &mut want);
            let want = Sha256::digest(&want);
            let got = curl(tcp, pattern::PATH)?;
            let digest = Sha256::digest(&got);
            if got.len() != pattern::LEN || digest != want {
                return Err(format!(
                    "GET {}: {} bytes, sha256 {digest:x}; want {} bytes, sha256 {want:x}",
                    pattern::PATH,
                    got.len(),
                    pattern::LEN
                ));
            }
            Ok(Some(format!(
                "GET {} = {} bytes, sha256 {:.16}… matches",
                pattern::PATH,
                got.len(),
                format!("{digest:x}")
            )))
        }
        NetCheck::HttpFile { path, file } => {
            let want =
                std::fs::read(host::root().join(file)).map_err(|e| format!("read {file}: {e}"))?;
            let got = curl(tcp, path)?;
            if got != want {
                return Err(format!(
                    "GET {path}: {} bytes differ from {file} ({} bytes)",
                    got.len(),
                    want.len()
                ));
            }
            Ok(Some(format!("GET {path} = {file}, {} bytes", got.len())))
        }
        NetCheck::HttpStatus => {
            let page = String::from_utf8_lossy(&curl(tcp, "/status")?).into_owned();
            status_value(&page, "uptime_ms=")?;
            let requests = status_value(&page, "requests=")?;
            if requests == 0 {
                return Err("/status counts no requests".into());
            }
            let bottom_halves = status_value(&page, "budget.bottom_half_deferrals=")?;
            let event_scans = status_value(&page, "budget.event_scan_deferrals=")?;
            Ok(Some(format!(
                "/status requests={requests} budget deferrals: bottom halves {bottom_halves}, event scans {event_scans}"
            )))
        }
        NetCheck::HttpIdle {
            seconds,
            max_wakeups,
        } => {
            let wakeups = || -> Result<u64, String> {
                let page = String::from_utf8_lossy(&curl(tcp, "/status")?).into_owned();
                net_task_wakeups(&page)
            };
            let before = wakeups()?;
            std::thread::sleep(Duration::from_secs(seconds));
            let woke = wakeups()?.saturating_sub(before);
            if woke > max_wakeups {
                return Err(format!(
                    "the net task woke {woke} times across {seconds} s idle (at most {max_wakeups}): polling?"
                ));
            }
            Ok(Some(format!(
                "{woke} net-task wake-ups across {seconds} s idle"
            )))
        }
        NetCheck::HttpLoad {
            requests,
            concurrency,
            keep_alive,
        } => {
            let url = format!("http://{host}:{tcp}/");
            let started = Instant::now();
            let mut args: Vec<String> = vec!["-q".into(), "-s".into(), "60".into()];
            if keep_alive {
                args.push("-k".into());
            }
            args.extend([
                "-n".into(),
                requests.to_string(),
                "-c".into(),
                concurrency.to_string(),
                url,
            ]);
            let out = client("ab", &args)?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "ab failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let r = net::parse_ab(&text)?;
            net::judge_load(&r, requests)?;
            Ok(Some(format!(
                "ab {} -n {requests} -c {concurrency}: {} ok in {:.1} s, {:.0} req/s, {:.0} KiB/s",
                if keep_alive { "-k" } else { "(no keep-alive)" },
                r.complete,
                started.elapsed().as_secs_f64(),
                r.requests_per_second,
                r.transfer_kib_per_second
            )))
        }
        NetCheck::TcpEcho { bytes } => tcp_echo(host, tcp, bytes).map(Some),
        NetCheck::UdpEcho { count } => {
            let port = udp.ok_or("UDP echo needs a UDP port")?;
            udp_echo(host, port, count).map(Some)
        }
        // These two need only TCP to the app: they run on forwarded ports too.
        NetCheck::StalledReader => hostile::stalled_reader(host, tcp).map(Some),
        NetCheck::CapHeld { hold, extra } => {
            hostile::cap_held(None, host, tcp, hold, extra).map(Some)
        }
        NetCheck::HalfOpenFlood { .. }
        | NetCheck::IdleAndSlow { .. }
        | NetCheck::HeapExhausted { .. }
        | NetCheck::UdpFlood { .. } => {
            Err("a hostile-client check runs on the TAP bed only".into())
        }
    }
}

/// A one-connection server on the host's 127.0.0.1 for apps that connect out: it
/// reads a line, answers `pong <line>`, and keeps the line for the check.
struct HostListener {
    port: u16,
    got: Arc<Mutex<Option<Result<String, String>>>>,
}

impl HostListener {
    /// How long the app has to connect.
    const DEADLINE: Duration = Duration::from_secs(120);

    fn start() -> Result<HostListener, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let got = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&got);
        std::thread::spawn(move || {
            let start = Instant::now();
            let result = loop {
                match listener.accept() {
                    Ok((s, _)) => break Self::serve(s),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if start.elapsed() > Self::DEADLINE {
                            break Err("no connection from the guest".into());
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => break Err(format!("accept: {e}")),
                }
            };
            *slot.lock().expect("listener lock") = Some(result);
        });
        Ok(HostListener { port, got })
    }

    fn serve(s: TcpStream) -> Result<String, String> {
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let line = line.trim_end().to_string();
        (&s).write_all(format!("pong {line}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        Ok(line)
    }

    /// The line the guest sent, waiting for it.
    fn wait(&self) -> Result<String, String> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.got.lock().expect("listener lock").clone() {
                return r;
            }
            if start.elapsed() > Self::DEADLINE + Duration::from_secs(5) {
                return Err("the host listener thread did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The number after `key` on a line of a `/status` page.
/// The net-task wake-ups of every interface on a `/status` page (`NAME.wakeups=N`).
fn net_task_wakeups(page: &str) -> Result<u64, String> {
    let counts: Vec<u64> = page
        .lines()
        .filter_map(|l| {
            let (key, n) = l.split_once('=')?;
            key.ends_with(".wakeups").then(|| n.trim().parse().ok())?
        })
        .collect();
    if counts.is_empty() {
        return Err(format!("/status lacks `INTERFACE.wakeups=N`: {page}"));
    }
    Ok(counts.iter().sum())
}

pub(crate) fn status_value(page: &str, key: &str) -> Result<u64, String> {
    page.lines()
        .find_map(|l| l.strip_prefix(key)?.parse::<u64>().ok())
        .ok_or_else(|| format!("/status lacks `{key}N`: {page}"))
}

/// Pseudo-random bytes (xorshift64*, seeded from the clock: each run sends new data).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

fn tcp_echo(host: &str, port: u16, bytes: usize) -> Result<String, String> {
    let stream = TcpStream::connect((host, port)).map_err(|e| format!("connect: {e}"))?;
    echo_over(stream, bytes)
}

/// [`tcp_echo`] over a connected `stream`.
pub(crate) fn echo_over(stream: TcpStream, bytes: usize) -> Result<String, String> {
    let payload = random_bytes(bytes);
    let want = Sha256::digest(&payload);
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> Result<(), String> {
        writer
            .write_all(&payload)
            .map_err(|e| format!("send: {e}"))?;
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))
    });
    let mut received = Vec::with_capacity(bytes);
    let mut reader = stream;
    let mut buf = [0u8; 64 * 1024];
    while received.len() < bytes {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("receive after {} bytes: {e}", received.len())),
        }
    }
    sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())??;
    let got = Sha256::digest(&received);
    if received.len() != bytes || got != want {
        return Err(format!(
            "echoed {} of {bytes} bytes, sha256 {got:x} != sent {want:x}",
            received.len()
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "tcp echo {} KiB sha256 {:.16}… matches in {secs:.1} s ({:.0} KiB/s)",
        bytes / 1024,
        format!("{got:x}"),
        bytes as f64 / 1024.0 / secs
    ))
}

fn udp_echo(host: &str, port: u16, count: usize) -> Result<String, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    sock.connect((host, port)).map_err(|e| e.to_string())?;
    let mut retries = 0;
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let len = 1 + (i * 97) % 1400;
        let datagram = random_bytes(len);
        let mut attempts = 0;
        loop {
            sock.send(&datagram).map_err(|e| format!("send: {e}"))?;
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n] == datagram[..] => break,
                Ok(n) => {
                    return Err(format!(
                        "datagram {i}: {n} bytes came back different from the {len} sent"
                    ));
                }
                // A datagram may be lost on the way (UDP); a few retries are fair.
                Err(_) if attempts < 3 => {
                    attempts += 1;
                    retries += 1;
                }
                Err(e) => {
                    return Err(format!(
                        "datagram {i} ({len} bytes): no echo after 4 tries: {e}"
                    ));
                }
            }
        }
    }
    Ok(format!(
        "udp echo {count} datagrams of 1-1400 bytes ({retries} retried)"
    ))
}
