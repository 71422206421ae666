//! Hostile clients over a TAP device: half-open floods from a raw socket, thousands of
//! idle and slow connections, a client that stops reading, a server held at its cap
//! or out of heap, a UDP flood. The guest gets a /24 of its own on a fresh TAP device
//! (removed afterwards, also on failure); the clients are `clients.py` (python3,
//! standard library) next to this file, plus `curl` and `ab`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use upcall_tests::net::{self, NetCase, NetCheck, Proto};

use super::{Guest, curl_at, echo_over, finish, run_check, status_value, wait_ready};
use crate::MachineArg;
use crate::vmm::qemu::{self, Forward, RunOpts};

/// The client programs.
const CLIENTS: &str = include_str!("clients.py");
/// How long the server may take to settle after a wave of clients (its idle and
/// queue timeouts are a few seconds in these cases; TCG is slow).
const SETTLE: Duration = Duration::from_secs(60);

/// A TAP device with the host at `.1` of a /24 no other interface uses.
pub(crate) struct Tap {
    /// The device's name.
    pub(crate) name: String,
    /// The guest's address (`.2`).
    pub(crate) guest: String,
    /// The guest's MAC (raw-socket clients address their frames to it).
    pub(crate) guest_mac: &'static str,
}

/// Where a TAP case boots.
#[derive(Debug, Clone, Copy)]
pub(super) enum TapBed {
    /// The KVM platform on this QEMU machine, its card on the TAP device.
    Kvm(MachineArg),
    /// An xl domU; dom0's bridge holds a second card on the TAP device.
    XenXl,
}

impl Tap {
    pub(crate) fn create() -> Result<Tap, String> {
        let ip = |args: &[&str]| -> Result<String, String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let used = ip(&["-o", "-4", "addr"])?;
        let pid = std::process::id() as usize;
        let mut last = String::from("no free /24 in 10.213.0.0/16");
        for k in 0..250 {
            let n = (pid + k) % 250 + 1;
            let net = format!("10.213.{n}.");
            if used.contains(&net) {
                continue;
            }
            let name = format!("upcnt{n}");
            if let Err(e) = ip(&["tuntap", "add", "dev", &name, "mode", "tap"]) {
                last = e;
                continue;
            }
            // From here the device exists: dropping `tap` removes it.
            let tap = Tap {
                name,
                guest: format!("{net}2"),
                guest_mac: net::GUEST_MAC,
            };
            ip(&["addr", "add", &format!("{net}1/24"), "dev", &tap.name])?;
            ip(&["link", "set", &tap.name, "up"])?;
            return Ok(tap);
        }
        Err(format!(
            "cannot create a TAP device (needs root and /dev/net/tun): {last}"
        ))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// Boots `case` with a TAP card and runs its checks against the guest's address.
pub(super) fn run_tap_case(case: &NetCase, image: &Path, bed: TapBed) -> Result<String, String> {
    let (tap, mut guest) = match bed {
        TapBed::Kvm(machine) => boot_kvm_on_tap(
            image,
            case.args,
            case.memory_mb,
            machine,
            KvmTapOpts {
                icount_align: case.icount_align,
                device: case.device,
            },
        )?,
        TapBed::XenXl => super::xl_tap::boot(image, case.args)?,
    };
    let port = |p: Proto| case.ports.iter().find(|(q, _)| *q == p).map(|&(_, g)| g);
    let tcp = port(Proto::Tcp).ok_or("a network case needs a TCP port")?;
    let udp = port(Proto::Udp);
    let verdict = wait_ready(&mut guest, case.ready, &tap.guest, tcp).and_then(|()| {
        let mut notes = Vec::new();
        for check in case.checks {
            let note = match *check {
                NetCheck::HalfOpenFlood { syns } => half_open_flood(&tap, tcp, syns)?,
                NetCheck::IdleAndSlow {
                    idle,
                    slow,
                    requests,
                    concurrency,
                } => idle_and_slow(&tap.guest, tcp, idle, slow, requests, concurrency)?,
                NetCheck::StalledReader => stalled_reader(&tap.guest, tcp)?,
                NetCheck::CapHeld { hold, extra } => {
                    cap_held(Some(&mut guest), &tap.guest, tcp, hold, extra)?
                }
                NetCheck::HeapExhausted { clients } => {
                    heap_exhausted(&mut guest, &tap.guest, tcp, clients)?
                }
                NetCheck::UdpFlood { seconds, tcp_bytes } => {
                    let udp = udp.ok_or("a UDP flood needs a UDP port")?;
                    udp_flood(&guest, &tap.guest, tcp, udp, seconds, tcp_bytes)?
                }
                _ => match run_check(check, &tap.guest, tcp, udp, None)? {
                    Some(n) => n,
                    None => continue,
                },
            };
            notes.push(note);
        }
        Ok(notes)
    });
    let result = finish(case, guest, verdict);
    drop(tap);
    result
}

/// Creates a TAP device and boots `image` on it with `args` ([`net::TAP_GUEST`]
/// replaced by the guest's address) and `memory_mb`.
pub(crate) fn boot_on_tap(
    image: &Path,
    args: &[&str],
    memory_mb: u32,
    machine: MachineArg,
) -> Result<(Tap, Guest), String> {
    boot_kvm_on_tap(image, args, memory_mb, machine, KvmTapOpts::default())
}

/// How a KVM guest on a TAP differs from QEMU's defaults.
#[derive(Default)]
struct KvmTapOpts<'a> {
    /// `Some(N)`: run under `-icount shift=N,align=on`.
    icount_align: Option<u32>,
    /// Extra virtio-net device properties (may be empty).
    device: &'a str,
}

/// [`boot_on_tap`] with [`KvmTapOpts`].
fn boot_kvm_on_tap(
    image: &Path,
    args: &[&str],
    memory_mb: u32,
    machine: MachineArg,
    opts_tap: KvmTapOpts<'_>,
) -> Result<(Tap, Guest), String> {
    let tap = Tap::create()?;
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace(net::TAP_GUEST, &tap.guest))
        .collect();
    let cmdline = qemu::kernel_cmdline(&args);
    let mut opts = RunOpts::for_tests(machine, 0);
    opts.memory = memory_mb;
    if let Some(shift) = opts_tap.icount_align {
        opts.accel = Some(crate::Accel::Tcg);
        opts.extra = vec!["-icount".into(), format!("shift={shift},align=on")];
    }
    // A placeholder forward makes qemu_args add the card; its netdev becomes the TAP.
    opts.forwards = vec![Forward {
        proto: qemu::Proto::Tcp,
        host: 1,
        guest: 1,
    }];
    let mut qemu_args = qemu::qemu_args(image, &cmdline, &opts);
    let netdev = qemu_args
        .iter()
        .position(|a| a == "-netdev")
        .ok_or("qemu_args added no -netdev")?;
    qemu_args[netdev + 1] = format!("tap,id=net0,ifname={},script=no,downscript=no", tap.name);
    super::add_device_properties(&mut qemu_args, opts_tap.device)?;
    let guest = Guest::boot(image, qemu_args)?;
    Ok((tap, guest))
}

/// `python3 -c clients.py MODE ARGS…`.
fn clients(args: &[String]) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(CLIENTS).args(args);
    c
}

/// Runs a client to its end; returns its `result …` line.
fn run_client(args: &[String]) -> Result<String, String> {
    let out = clients(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    result_line(&out.stdout, &out.stderr, out.status.success(), args)
}

fn result_line(stdout: &[u8], stderr: &[u8], ok: bool, args: &[String]) -> Result<String, String> {
    let text = String::from_utf8_lossy(stdout);
    match text.lines().find_map(|l| l.strip_prefix("result ")) {
        Some(r) if ok => Ok(r.to_string()),
        _ => Err(format!(
            "client `{}` failed: {} {}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(stderr).trim()
        )),
    }
}

/// Starts a client in the background.
pub(crate) fn spawn_client(args: &[String]) -> Result<Child, String> {
    clients(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))
}

/// Waits for a background client; returns its `result …` line.
pub(crate) fn wait_client(child: Child, args: &[String]) -> Result<String, String> {
    let out = child
        .wait_with_output()
        .map_err(|e| format!("client: {e}"))?;
    result_line(&out.stdout, &out.stderr, out.status.success(), args)
}

/// A `key=N` field of a client's result line.
pub(crate) fn field(line: &str, key: &str) -> Result<f64, String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .ok_or_else(|| format!("client result `{line}` lacks {key}="))
}

pub(crate) fn strings(words: &[&dyn std::fmt::Display]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

pub(crate) fn status(host: &str, port: u16) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&curl_at(host, port, "/status")?).into_owned())
}

/// Closed sockets waiting for their connection to end, over every interface
/// (`NAME.tcp.closing_by_app=N`).
fn closing_by_app(page: &str) -> Result<u64, String> {
    interface_sum(page, "tcp.closing_by_app")
}

/// The sum of an interface counter over every interface (`NAME.counter=N`: `eth0` on
/// KVM, `netfront` on Xen).
pub(crate) fn interface_sum(page: &str, counter: &str) -> Result<u64, String> {
    let suffix = format!(".{counter}");
    let counts: Vec<u64> = page
        .lines()
        .filter_map(|l| {
            let (key, n) = l.split_once('=')?;
            key.ends_with(&suffix).then(|| n.trim().parse().ok())?
        })
        .collect();
    if counts.is_empty() {
        return Err(format!("/status lacks `NAME.{counter}=N`: {page}"));
    }
    Ok(counts.iter().sum())
}

/// Polls `/status` until the server has no connection open but the one asking
/// (`connections_open=1`) and no closed socket waiting for its connection to end
/// (`NAME.tcp.closing_by_app=0`: their buffers are still heap in use), or [`SETTLE`]
/// passes; returns the last page.
pub(crate) fn settle(host: &str, port: u16) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let page = status(host, port)?;
        let open = status_value(&page, "connections_open=")?;
        let closing = closing_by_app(&page)?;
        if open <= 1 && closing == 0 {
            return Ok(page);
        }
        if start.elapsed() > SETTLE {
            return Err(format!(
                "the server still has {open} connections open and {closing} closing {} s after the clients left",
                SETTLE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn half_open_flood(tap: &Tap, port: u16, syns: u32) -> Result<String, String> {
    let before = status(&tap.guest, port)?;
    let dropped0 = status_value(&before, "tcp.half_open_dropped=")?;
    run_client(&strings(&[
        &"synflood",
        &tap.name,
        &tap.guest,
        &tap.guest_mac,
        &port,
        &syns,
    ]))?;
    // A normal client right after: its SYN finds every slot half-open (dropped, so
    // the host's TCP retries) until the half-open timeout frees them.
    let started = Instant::now();
    curl_at(&tap.guest, port, "/").map_err(|e| format!("after the flood: {e}"))?;
    let took = started.elapsed().as_secs_f64();
    let page = status(&tap.guest, port)?;
    let dropped = status_value(&page, "tcp.half_open_dropped=")? - dropped0;
    let syn_dropped = interface_sum(&page, "syn_dropped")?;
    // The default backlog (libos::net::DEFAULT_BACKLOG) is 32 slots.
    if dropped < 32 || syn_dropped == 0 {
        return Err(format!(
            "the flood did not fill the backlog: {dropped} half-open dropped, {syn_dropped} SYNs dropped"
        ));
    }
    Ok(format!(
        "{syns} spoofed SYNs: {dropped} half-open connections timed out, {syn_dropped} SYNs dropped at the full backlog; curl answered {took:.1} s after the flood"
    ))
}

/// How long the idle and slow clients stay (then they all go away).
const WAVE_S: u32 = 20;

/// One wave of idle and slow clients for [`WAVE_S`], optionally with `ab` and `curl`
/// alongside (started once the wave's clients had a few seconds to connect).
fn wave(
    host: &str,
    port: u16,
    idle: u32,
    slow: u32,
    load: Option<(u32, u32)>,
) -> Result<String, String> {
    let args = strings(&[&"idle", &host, &port, &idle, &slow, &WAVE_S]);
    let child = spawn_client(&args)?;
    let mut notes = Vec::new();
    if let Some((requests, concurrency)) = load {
        std::thread::sleep(Duration::from_secs(3));
        let url = format!("http://{host}:{port}/");
        let ab = std::thread::spawn(move || {
            super::client(
                "ab",
                &strings(&[
                    &"-q",
                    &"-s",
                    &"60",
                    &"-n",
                    &requests,
                    &"-c",
                    &concurrency,
                    &url,
                ]),
            )
        });
        let mut curls = 0;
        while !ab.is_finished() || curls < 3 {
            curl_at(host, port, "/").map_err(|e| format!("curl during the wave: {e}"))?;
            curls += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = ab.join().map_err(|_| "ab thread panicked")??;
        let r = net::parse_ab(&String::from_utf8_lossy(&out.stdout))?;
        net::judge_load(&r, requests)?;
        notes.push(format!(
            "ab -n {requests} -c {concurrency}: {} ok, 0 failed; {curls} curls ok",
            r.complete
        ));
    }
    let r = wait_client(child, &args)?;
    notes.insert(
        0,
        format!(
            "{idle} idle + {slow} slow: {} connected, {} closed by the server, {} reset, {} refused, {} left open, {:.0} s",
            field(&r, "connected")?,
            field(&r, "closed_by_server")?,
            field(&r, "reset")?,
            field(&r, "refused")?,
            field(&r, "left_open")?,
            field(&r, "seconds")?
        ),
    );
    Ok(notes.join(", "))
}

fn idle_and_slow(
    host: &str,
    port: u16,
    idle: u32,
    slow: u32,
    requests: u32,
    concurrency: u32,
) -> Result<String, String> {
    let page = settle(host, port)?;
    let heap1 = status_value(&page, "heap_used=")?;
    let main = wave(host, port, idle, slow, Some((requests, concurrency)))?;
    let page = settle(host, port)?;
    let heap2 = status_value(&page, "heap_used=")?;
    let growth = (heap2 as f64 - heap1 as f64) / heap1 as f64 * 100.0;
    if growth.abs() > 5.0 {
        return Err(format!(
            "heap in use {heap1} B before the clients, {heap2} B after they left ({growth:+.1} %, more than 5 %); {main}; /status after: {}",
            page.replace('\n', " ")
        ));
    }
    Ok(format!(
        "{main}; then no connection open or closing; heap in use {heap1} B before, {heap2} B after ({growth:+.1} %); timed_out={} tcp.refused={} eth0.syn_dropped={} eth0.deferrals={}",
        status_value(&page, "timed_out=")?,
        status_value(&page, "tcp.refused=")?,
        status_value(&page, "eth0.syn_dropped=")?,
        status_value(&page, "eth0.deferrals=")?
    ))
}

pub(super) fn stalled_reader(host: &str, port: u16) -> Result<String, String> {
    let before = status(host, port)?;
    let timed0 = status_value(&before, "timed_out=")?;
    let args = strings(&[&"stall", &host, &port, &"/big.txt", &90]);
    let mut child = spawn_client(&args)?;
    let mut ready = String::new();
    let stdout = child.stdout.take().ok_or("client stdout")?;
    let mut lines = BufReader::new(stdout);
    let _ = lines.read_line(&mut ready);
    let outcome = (|| {
        if ready.trim() != "ready" {
            return Err(format!("stall client did not start: `{}`", ready.trim()));
        }
        let start = Instant::now();
        // The client still holds its connection and reads nothing.
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let page = status(host, port)?;
            let open = status_value(&page, "connections_open=")?;
            let timed = status_value(&page, "timed_out=")?;
            if open <= 1 && timed > timed0 {
                return Ok(format!(
                    "a client that stopped reading /big.txt: the server's write timed out and its task ended after {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
            }
            if start.elapsed() > SETTLE {
                return Err(format!(
                    "the server still serves the stalled client after {} s ({open} open, timed_out {timed})",
                    SETTLE.as_secs()
                ));
            }
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

pub(super) fn cap_held(
    guest: Option<&mut Guest>,
    host: &str,
    port: u16,
    hold: u32,
    extra: u32,
) -> Result<String, String> {
    let before = status(host, port)?;
    let refused0 = status_value(&before, "tcp.refused=")?;
    let args = strings(&[&"hold", &host, &port, &(hold + extra), &8]);
    let r = run_client(&args)?;
    // (Without the guest at hand, the caller's final judgement still catches an exit.)
    if let Some(how) = guest.and_then(Guest::exited) {
        return Err(format!("the server ended ({how}) while held at its cap"));
    }
    let page = settle(host, port)?;
    let refused = status_value(&page, "tcp.refused=")? - refused0;
    if refused == 0 {
        return Err(format!(
            "nothing was refused with {} connections against a cap of {hold}",
            hold + extra
        ));
    }
    Ok(format!(
        "{} connections held 8 s against a cap of {hold}: the server stayed up, reset {refused} queued past its queue timeout, and serves again",
        field(&r, "opened")?
    ))
}

fn heap_exhausted(
    guest: &mut Guest,
    host: &str,
    port: u16,
    clients: u32,
) -> Result<String, String> {
    let args = strings(&[&"hold", &host, &port, &clients, &12]);
    let r = run_client(&args)?;
    if let Some(how) = guest.exited() {
        return Err(format!("the server ended ({how}) when its heap ran out"));
    }
    let page = settle(host, port)?;
    let refused = status_value(&page, "refused=")?;
    let no_memory = status_value(&page, "tcp.no_memory=")?;
    if refused + no_memory == 0 {
        return Err(format!(
            "{clients} connections did not exhaust the heap (nothing refused): raise the count"
        ));
    }
    Ok(format!(
        "{} connections against an uncapped server: {refused} refused for want of a task stack, {no_memory} socket buffers unavailable; it stayed up and serves again (heap used {} of {} B)",
        field(&r, "opened")?,
        status_value(&page, "heap_used=")?,
        status_value(&page, "heap_total=")?
    ))
}

/// A connection to the echo server whose first bytes came back (its server task has it).
fn served_connection(host: &str, port: u16) -> Result<std::net::TcpStream, String> {
    let mut s = std::net::TcpStream::connect((host, port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").map_err(|e| format!("send: {e}"))?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back)
        .map_err(|e| format!("no echo before the flood: {e}"))?;
    if &back != b"ping" {
        return Err("the echo before the flood came back different".into());
    }
    Ok(s)
}

/// The sleeper's report lines on the console so far.
fn sleeper_lines(guest: &Guest) -> Vec<String> {
    guest
        .console
        .lock()
        .expect("console lock")
        .lines()
        .filter(|l| l.contains("echo: sleeper round"))
        .map(str::to_string)
        .collect()
}

fn udp_flood(
    guest: &Guest,
    host: &str,
    tcp: u16,
    udp: u16,
    seconds: u32,
    tcp_bytes: usize,
) -> Result<String, String> {
    // Connected and served before the flood: a handshake whose last ACK the flood
    // keeps from the guest longer than the half-open timeout is reset (by design).
    let stream = served_connection(host, tcp)?;
    let seen = sleeper_lines(guest).len();
    let args = strings(&[&"udpflood", &host, &udp, &seconds]);
    let child = spawn_client(&args)?;
    std::thread::sleep(Duration::from_millis(500));
    let echo = std::thread::spawn(move || echo_over(stream, tcp_bytes));
    let r = wait_client(child, &args)?;
    // The rounds reported while the flood lasted (the echo may take longer).
    let during: Vec<String> = sleeper_lines(guest).split_off(seen);
    let echo = echo
        .join()
        .map_err(|_| "the TCP echo thread panicked".to_string())?
        .map_err(|e| format!("TCP echo during the flood: {e}"))?;
    // The first round reported during the flood may have begun before it.
    if during.len() < 2 {
        return Err(format!(
            "the sleeper task completed no round of 100 wake-ups within a {seconds} s flood (starved): {during:?}"
        ));
    }
    let lateness: Vec<&str> = during
        .iter()
        .filter_map(|l| l.split_once("lateness ").map(|(_, t)| t))
        .collect();
    Ok(format!(
        "{} datagrams in {seconds} s at udp/{udp}; {echo}; sleeper rounds during the flood: {}",
        field(&r, "sent")?,
        lateness.join(" | ")
    ))
}
