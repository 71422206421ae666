//! Network integration tests: boot an app with forwarded ports, wait until it answers,
//! run real host clients against it (`curl`, `ab`, the echo client below), then stop
//! the guest and judge its console. The cases are data in `upcall_tests::net`.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use upcall_tests::net::{self, NetBed, NetCase, NetCheck, Proto, Ready};

mod clients;
pub(crate) mod hostile;
mod xl_tap;

pub(crate) use clients::{
    HostListener, client, curl, curl_at, echo_over, echo_probe, http_get_ok, http_get_ok_at,
    tcp_echo, udp_echo,
};

use crate::symbolize::Symbols;
use crate::testbed::dom0;
use crate::vmm::qemu::{self, Forward, RunOpts};
use crate::{Platform, build, host};

/// How long an app may take from QEMU start to answering (boot, DHCP; SeaBIOS).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Limit for one client command (the load run included).
pub(crate) const CLIENT_TIMEOUT_S: u32 = 240;

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
            let bed = hostile::TapBed::Kvm(machine.into());
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
            let mut opts = RunOpts::for_tests(machine.into(), 0);
            opts.forwards = forwards.clone();
            qemu::qemu_args(&image, &cmdline, &opts)
        }
        NetBed::Tap(_) | NetBed::XenXlTap => {
            unreachable!("TAP cases run in hostile::run_tap_case")
        }
        NetBed::XenXl => {
            let tb = dom0::ensure_xl_testbed().map_err(|f| f.message)?;
            crate::vmm::xl_run::xl_qemu_args(
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

pub(crate) const LOCALHOST: &str = "127.0.0.1";

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
    child: crate::vmm::child::Tracked,
    console: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Guest {
    /// Starts QEMU with `qemu_args` booting `image` (whose symbols name backtraces).
    pub(crate) fn boot(image: &Path, qemu_args: Vec<String>) -> Result<Guest, String> {
        qemu::ensure_qemu().map_err(|f| f.message)?;
        let symbols = Symbols::load(image).map_err(|f| f.message)?;
        let mut child = crate::vmm::child::spawn(
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
        NetCheck::StatusCounter { key, min, max } => {
            let page = String::from_utf8_lossy(&curl(tcp, "/status")?).into_owned();
            let v = status_value(&page, &format!("{key}="))?;
            if !(min..=max).contains(&v) {
                return Err(format!("/status {key}={v}, expected {min}..={max}"));
            }
            Ok(Some(format!("/status {key}={v}")))
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
        NetCheck::EchoCounter { key, min, max } => {
            let port = udp.ok_or("echo's counters need a UDP port")?;
            let page = clients::echo_status(host, port)?;
            let v = status_value(&page, &format!("{key}="))?;
            if !(min..=max).contains(&v) {
                return Err(format!("echo {key}={v}, expected {min}..={max}"));
            }
            Ok(Some(format!("echo {key}={v}")))
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

/// The number `/status` reports as `key` (given with its `=`, e.g. `requests=`).
pub(crate) fn status_value(page: &str, key: &str) -> Result<u64, String> {
    upcall_tests::kv::last(page, key.trim_end_matches('='))
        .ok_or_else(|| format!("/status lacks `{key}N`: {page}"))
}
