//! `httpd`: a static-file HTTP/1.1 server with keep-alive, port 80 by default.
//!
//! Serves the files built into the image (`www/`, with `include_bytes!`) and `/status`
//! (uptime, request counters, network counters). Each connection gets its own task.
//! Arguments: `port=N`. Serves until the guest is stopped.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod http;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use libos::net::{TcpListener, TcpStream};
use libos::println;
use libos::sched::{self, Priority};

use http::{Request, Response};

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
static BAD_REQUESTS: AtomicU64 = AtomicU64::new(0);
static NOT_FOUND: AtomicU64 = AtomicU64::new(0);

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let mut port = 80u16;
    for arg in args.iter() {
        match arg.strip_prefix("port=").map(str::parse) {
            Some(Ok(p)) => port = p,
            _ => {
                println!("httpd: unknown argument `{arg}` (expected port=N)");
                return 2;
            }
        }
    }
    let mut listener = match TcpListener::bind(port) {
        Ok(l) => l,
        Err(e) => {
            println!("httpd: port {port}: {e}");
            return 1;
        }
    };
    println!("httpd: serving {} files on port {port}", FILES.len());
    loop {
        match listener.accept() {
            Ok(stream) => {
                CONNECTIONS.fetch_add(1, Relaxed);
                drop(sched::spawn("http", Priority::Normal, move || {
                    serve(stream)
                }));
            }
            Err(e) => {
                println!("httpd: accept: {e}");
                return 1;
            }
        }
    }
}

/// Answers requests on one connection until either side closes it.
fn serve(mut stream: TcpStream) {
    let mut conn = http::Connection::new();
    loop {
        let request = match conn.next_request(&mut stream) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                BAD_REQUESTS.fetch_add(1, Relaxed);
                let _ = Response::error(status).send(&mut stream, false);
                return;
            }
        };
        REQUESTS.fetch_add(1, Relaxed);
        let keep_alive = request.keep_alive;
        let sent = respond(&request).send(&mut stream, keep_alive);
        if sent.is_err() || !keep_alive {
            return;
        }
    }
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
    match FILES.iter().find(|(p, ..)| *p == req.path) {
        Some((_, mime, body)) => Response::file(mime, body, head),
        None => {
            NOT_FOUND.fetch_add(1, Relaxed);
            Response::error(404)
        }
    }
}

fn status_page() -> String {
    let uptime_ms = libos::time::now_ns() / 1_000_000;
    let mut s = format!(
        "uptime_ms={uptime_ms}\nrequests={}\nconnections={}\nbad_requests={}\nnot_found={}\n",
        REQUESTS.load(Relaxed),
        CONNECTIONS.load(Relaxed),
        BAD_REQUESTS.load(Relaxed),
        NOT_FOUND.load(Relaxed),
    );
    for (name, n) in libos::net::stats() {
        s += &format!(
            "{name}.rx_frames={}\n{name}.tx_frames={}\n{name}.rx_bytes={}\n{name}.tx_bytes={}\n{name}.rx_dropped={}\n{name}.tx_dropped={}\n{name}.device_errors={}\n{name}.wakeups={}\n",
            n.rx_frames,
            n.tx_frames,
            n.rx_bytes,
            n.tx_bytes,
            n.rx_dropped,
            n.tx_dropped,
            n.device_errors,
            n.wakeups
        );
    }
    for t in libos::net::tcp_states() {
        for (state, n) in t.states {
            s += &format!("{}.tcp.{state}={n}\n", t.interface);
        }
        s += &format!("{}.tcp.closing_by_app={}\n", t.interface, t.closing);
    }
    s
}
