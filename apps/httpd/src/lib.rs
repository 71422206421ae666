//! `httpd`: a static-file HTTP/1.1 server with keep-alive, port 80 by default.
//!
//! Serves the files built into the image (`www/`, with `include_bytes!`), `/10m.bin`
//! (10 MiB of deterministic bytes from [`pattern`], generated on first use) and `/status`
//! (uptime, request and connection counters, heap, network counters). Each connection
//! gets its own task. Serves until the guest is stopped.
//!
//! Arguments (all optional; times in milliseconds):
//! `port=N` (80), `max-conn=N` (from the heap size), `backlog=N` (32),
//! `half-open-ms=N` (5000: a handshake not completed in time frees its backlog slot),
//! `idle-ms=N` (15000: a keep-alive connection idle this long is closed),
//! `head-ms=N` (10000: a request head must arrive completely within this),
//! `write-ms=N` (20000: a client that reads nothing for this long is dropped),
//! `queue-ms=N` (10000: a connection waiting at the cap this long is reset),
//! `max-body=N` (1 MiB: a longer `Content-Length` is answered with 413).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod http;
pub mod pattern;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use core::time::Duration;

use libos::net::{ListenOptions, NetError, TcpListener, TcpStream, Timeouts};
use libos::println;
use libos::sched::{self, Priority};

use http::{Limits, Parser, Request, Response};

/// The files served, by path.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../www/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../www/index.html"),
    ),
    (
        "/big.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../www/big.txt"),
    ),
];

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);
static BAD_REQUESTS: AtomicU64 = AtomicU64::new(0);
static NOT_FOUND: AtomicU64 = AtomicU64::new(0);
/// Connections closed because the client was idle or too slow (head, write).
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);
/// Connections refused because no task could be started (heap short).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The server's settings (from the arguments).
#[derive(Debug, Clone, Copy)]
struct Config {
    port: u16,
    listen: ListenOptions,
    idle: Duration,
    head: Duration,
    limits: Limits,
}

fn parse_args(args: &libos::Args) -> Result<Config, String> {
    let mut c = Config {
        port: 80,
        listen: ListenOptions::default(),
        idle: Duration::from_secs(15),
        head: Duration::from_secs(10),
        limits: Limits::default(),
    };
    c.listen.stream = Timeouts {
        read: None,
        write: Some(Duration::from_secs(20)),
        keep_alive: None,
    };
    for arg in args.iter() {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("unknown argument `{arg}`"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("`{arg}`: expected a number"))?;
        let ms = Duration::from_millis(n);
        let size = usize::try_from(n).map_err(|_| format!("`{arg}`: too large"))?;
        match name {
            "port" => c.port = u16::try_from(n).map_err(|_| format!("`{arg}`: bad port"))?,
            "max-conn" => c.listen.max_connections = size,
            "backlog" => c.listen.backlog = size,
            "half-open-ms" => c.listen.half_open_timeout = ms,
            "queue-ms" => c.listen.queue_timeout = ms,
            "write-ms" => c.listen.stream.write = Some(ms),
            "idle-ms" => c.idle = ms,
            "head-ms" => c.head = ms,
            "max-body" => c.limits.max_body = size,
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    Ok(c)
}

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let config = match parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "httpd: {e} (expected port= max-conn= backlog= half-open-ms= idle-ms= head-ms= write-ms= queue-ms= max-body=)"
            );
            return 2;
        }
    };
    let port = config.port;
    let mut listener = match TcpListener::bind_with(port, config.listen) {
        Ok(l) => l,
        Err(e) => {
            println!("httpd: port {port}: {e}");
            return 1;
        }
    };
    let l = &config.listen;
    println!(
        "httpd: serving {} files on port {port} (max {} connections, backlog {}, half-open {} ms, idle {} ms)",
        FILES.len(),
        l.max_connections,
        l.backlog,
        l.half_open_timeout.as_millis(),
        config.idle.as_millis(),
    );
    loop {
        match listener.accept() {
            Ok(stream) => {
                CONNECTIONS.fetch_add(1, Relaxed);
                // A short heap refuses this one connection (the closure and its
                // stream are dropped) instead of ending the image.
                if sched::try_spawn("http", Priority::Normal, move || serve(stream, config))
                    .is_err()
                {
                    REFUSED.fetch_add(1, Relaxed);
                }
            }
            Err(e) => {
                println!("httpd: accept: {e}");
                return 1;
            }
        }
    }
}

/// Counts an open connection while it lives.
struct OpenGuard;

impl OpenGuard {
    fn new() -> Self {
        OPEN.fetch_add(1, Relaxed);
        OpenGuard
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Relaxed);
    }
}

/// Answers requests on one connection until either side closes it or the client is
/// idle or slow past its timeout.
fn serve(mut stream: TcpStream, config: Config) {
    let _open = OpenGuard::new();
    let mut parser = Parser::new(config.limits);
    loop {
        let request = match next_request(&mut stream, &mut parser, &config) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(Some(status)) => {
                BAD_REQUESTS.fetch_add(1, Relaxed);
                let _ = send(&mut stream, &Response::error(status), false);
                return;
            }
            Err(None) => {
                TIMED_OUT.fetch_add(1, Relaxed);
                return;
            }
        };
        REQUESTS.fetch_add(1, Relaxed);
        let keep_alive = request.keep_alive;
        let sent = send(&mut stream, &respond(&request), keep_alive);
        if let Err(e) = sent {
            if e == NetError::TimedOut {
                TIMED_OUT.fetch_add(1, Relaxed);
            }
            return;
        }
        if !keep_alive {
            return;
        }
    }
}

/// Reads until the parser has the next request. `Ok(None)`: the client closed or went
/// idle between requests; `Err(Some(status))`: refuse the request; `Err(None)`: the
/// client was too slow mid-request (the head deadline passed).
fn next_request(
    stream: &mut TcpStream,
    parser: &mut Parser,
    config: &Config,
) -> Result<Option<Request>, Option<u16>> {
    // The head (and a body to skip) must arrive by this deadline once it has begun:
    // a client sending a byte every few seconds cannot hold the connection.
    let mut deadline: Option<u64> = None;
    loop {
        match parser.next_request() {
            Ok(Some(r)) => return Ok(Some(r)),
            Ok(None) => {}
            Err(e) => return Err(Some(e.status())),
        }
        let now = libos::time::now_ns();
        let wait = if parser.is_idle() {
            deadline = None;
            config.idle
        } else {
            let d = *deadline.get_or_insert(now.saturating_add(nanos(config.head)));
            Duration::from_nanos(d.saturating_sub(now))
        };
        stream.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 2048];
        match stream.read(&mut chunk) {
            Ok(0) | Err(NetError::Reset | NetError::Closed) if parser.is_idle() => {
                return Ok(None);
            }
            Err(NetError::TimedOut) if parser.is_idle() => {
                TIMED_OUT.fetch_add(1, Relaxed);
                return Ok(None);
            }
            Err(NetError::TimedOut) => return Err(None),
            Ok(0) | Err(_) => return Err(Some(400)),
            Ok(n) => {
                if parser.is_idle() {
                    deadline = Some(now.saturating_add(nanos(config.head)));
                }
                parser.feed(&chunk[..n]);
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Responses up to this long (head and body) go out in one write ([`Response::whole`]).
const ONE_WRITE: usize = 4096;

fn send(stream: &mut TcpStream, r: &Response, keep_alive: bool) -> Result<(), NetError> {
    if let Some(all) = r.whole(keep_alive, ONE_WRITE) {
        return stream.write_all(&all);
    }
    stream.write_all(r.head(keep_alive).as_bytes())?;
    stream.write_all(r.body())
}

fn respond(req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::error(405);
    }
    let head = req.method == "HEAD";
    if req.path == "/status" {
        return Response::owned(
            200,
            "text/plain; charset=utf-8",
            status_page().into_bytes(),
            head,
        );
    }
    if req.path == pattern::PATH {
        return match generated() {
            Some(body) => Response::file("application/octet-stream", body, head),
            None => Response::error(503),
        };
    }
    match FILES.iter().find(|(p, ..)| *p == req.path) {
        Some((_, mime, body)) => Response::file(mime, body, head),
        None => {
            NOT_FOUND.fetch_add(1, Relaxed);
            Response::error(404)
        }
    }
}

/// [`pattern::PATH`]'s bytes, generated on its first request and kept (a heap too
/// short for them answers 503 and leaves the heap as it was).
fn generated() -> Option<&'static [u8]> {
    static BODY: libos::sync::Mutex<Option<&'static [u8]>> = libos::sync::Mutex::new(None);
    let mut body = BODY.lock();
    if body.is_none() {
        let mut v = alloc::vec::Vec::new();
        v.try_reserve_exact(pattern::LEN).ok()?;
        v.resize(pattern::LEN, 0);
        pattern::fill(0, &mut v);
        *body = Some(alloc::vec::Vec::leak(v));
    }
    *body
}

fn status_page() -> String {
    let uptime_ms = libos::time::now_ns() / 1_000_000;
    let tcp = libos::net::tcp_counters();
    let heap_total = libos::heap::total_bytes();
    let heap_used = libos::heap::used_bytes();
    let mut s = format!(
        "uptime_ms={uptime_ms}\nrequests={}\nconnections={}\nconnections_open={}\nrefused={}\ntimed_out={}\nbad_requests={}\nnot_found={}\n\
         heap_total={heap_total}\nheap_used={heap_used}\nheap_free={}\n\
         tcp.open={}\ntcp.accepted={}\ntcp.refused={}\ntcp.timed_out={}\ntcp.half_open_dropped={}\ntcp.no_memory={}\n",
        REQUESTS.load(Relaxed),
        CONNECTIONS.load(Relaxed),
        OPEN.load(Relaxed),
        REFUSED.load(Relaxed),
        TIMED_OUT.load(Relaxed),
        BAD_REQUESTS.load(Relaxed),
        NOT_FOUND.load(Relaxed),
        heap_total.saturating_sub(heap_used),
        tcp.open,
        tcp.accepted,
        tcp.refused,
        tcp.timed_out,
        tcp.half_open_dropped,
        tcp.no_memory,
    );
    for (name, n) in libos::net::stats() {
        s += &format!(
            "{name}.rx_frames={}\n{name}.tx_frames={}\n{name}.rx_bytes={}\n{name}.tx_bytes={}\n{name}.rx_dropped={}\n{name}.tx_dropped={}\n{name}.device_errors={}\n{name}.wakeups={}\n{name}.deferrals={}\n{name}.syn_dropped={}\n\
             {name}.tx_gso_frames={}\n{name}.tx_gso_segments={}\n{name}.multi_buffer_frames={}\n{name}.rx_gso_frames={}\n",
            n.rx_frames,
            n.tx_frames,
            n.rx_bytes,
            n.tx_bytes,
            n.rx_dropped,
            n.tx_dropped,
            n.device_errors,
            n.wakeups,
            n.deferrals,
            n.syn_dropped,
            n.tx_gso_frames,
            n.tx_gso_segments,
            n.multi_buffer_frames,
            n.rx_gso_frames,
        );
    }
    // Passes of the bottom halves and of the platform's event scan that stopped at
    // their budget with work left (the net poll's are each interface's `deferrals`).
    s += &format!(
        "budget.bottom_half_deferrals={}\nbudget.event_scan_deferrals={}\n",
        libos::budget::deferrals(libos::budget::Loop::BottomHalves),
        libos::budget::deferrals(libos::budget::Loop::EventScan)
    );
    for t in libos::net::tcp_states() {
        for (state, n) in t.states {
            s += &format!("{}.tcp.{state}={n}\n", t.interface);
        }
        s += &format!("{}.tcp.closing_by_app={}\n", t.interface, t.closing);
    }
    s
}
