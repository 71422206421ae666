//! `echo`: TCP and UDP echo (RFC 862) on port 7 (`port=N` to change). Each TCP
//! connection gets its own task; UDP datagrams go back to their sender. Serves until
//! the guest is stopped. With `connect=A.B.C.D:PORT` it first says hello to that
//! server over an outgoing TCP connection and prints the line it answers. With
//! `sleeper=MS` a task sleeps MS at a time and prints how late it woke (flood tests).
//! The one UDP datagram [`STATUS_REQUEST`] is answered with the interfaces' counters
//! (`NAME.COUNTER=N` lines, as httpd's `/status`) instead of itself.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use libos::net::{Endpoint, TcpListener, TcpStream, UdpSocket};
use libos::println;
use libos::sched::{self, Priority};

/// The UDP datagram answered with the counters instead of echoed.
pub const STATUS_REQUEST: &[u8] = b"upcall-echo-status?";

/// `NAME.COUNTER=N` lines for every interface's counters.
fn status() -> alloc::string::String {
    let mut s = alloc::string::String::new();
    for (name, n) in libos::net::stats() {
        for (key, v) in [
            ("rx_frames", n.rx_frames),
            ("tx_frames", n.tx_frames),
            ("rx_dropped", n.rx_dropped),
            ("device_errors", n.device_errors),
            ("tx_gso_frames", n.tx_gso_frames),
            ("multi_buffer_frames", n.multi_buffer_frames),
            ("rx_gso_frames", n.rx_gso_frames),
        ] {
            s += &alloc::format!("{name}.{key}={v}\n");
        }
    }
    s
}

/// Connections refused because no task could be started (heap short).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let mut port = 7u16;
    let mut hello_to = None;
    let mut sleeper_ms: Option<u64> = None;
    for arg in args.iter() {
        if let Some(p) = arg.strip_prefix("port=").and_then(|p| p.parse().ok()) {
            port = p;
        } else if let Some(e) = arg.strip_prefix("connect=").and_then(parse_endpoint) {
            hello_to = Some(e);
        } else if let Some(ms) = arg.strip_prefix("sleeper=").and_then(|m| m.parse().ok()) {
            sleeper_ms = Some(ms);
        } else {
            println!(
                "echo: unknown argument `{arg}` (expected port=N, connect=A.B.C.D:PORT or sleeper=MS)"
            );
            return 2;
        }
    }
    if let Some(to) = hello_to {
        match say_hello(to) {
            Ok(line) => println!("echo: outbound to {to}: got \"{line}\""),
            Err(e) => println!("echo: outbound to {to}: {e}"),
        }
    }
    let mut listener = match TcpListener::bind(port) {
        Ok(l) => l,
        Err(e) => {
            println!("echo: tcp port {port}: {e}");
            return 1;
        }
    };
    let mut udp = match UdpSocket::bind(port) {
        Ok(u) => u,
        Err(e) => {
            println!("echo: udp port {port}: {e}");
            return 1;
        }
    };
    drop(sched::spawn("udp-echo", Priority::Normal, move || {
        let mut buf = [0u8; 2048];
        loop {
            match udp.recv_from(&mut buf).and_then(|(n, from)| {
                if &buf[..n] == STATUS_REQUEST {
                    udp.send_to(status().as_bytes(), from)
                } else {
                    udp.send_to(&buf[..n], from)
                }
            }) {
                Ok(()) => {}
                Err(e) => println!("echo: udp: {e}"),
            }
        }
    }));
    if let Some(ms) = sleeper_ms {
        drop(sched::spawn("sleeper", Priority::Normal, move || {
            sleeper(ms)
        }));
    }
    println!("echo: serving tcp and udp port {port}");
    loop {
        match listener.accept() {
            // A short heap refuses this one connection instead of ending the image.
            Ok(stream) => {
                if sched::try_spawn("tcp-echo", Priority::Normal, move || serve(stream)).is_err()
                    && REFUSED.fetch_add(1, Relaxed) == 0
                {
                    // Once: a flood of refusals must not flood the console too.
                    println!("echo: out of memory: connection refused (reported once)");
                }
            }
            Err(e) => {
                println!("echo: accept: {e}");
                return 1;
            }
        }
    }
}

fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let (addr, port) = s.split_once(':')?;
    Some(Endpoint {
        addr: libos::net::config::parse_ipv4(addr)?,
        port: port.parse().ok()?,
    })
}

/// Sends one line to `to` and returns the line it answers.
fn say_hello(to: Endpoint) -> Result<alloc::string::String, libos::net::NetError> {
    let mut s = TcpStream::connect(to)?;
    s.write_all(b"hello from upcall\n")?;
    let mut line = alloc::vec::Vec::new();
    let mut buf = [0u8; 256];
    while !line.ends_with(b"\n") {
        match s.read(&mut buf)? {
            0 => break,
            n => line.extend_from_slice(&buf[..n]),
        }
    }
    Ok(alloc::string::String::from_utf8_lossy(&line)
        .trim_end()
        .into())
}

/// Sleeps `ms` at a time forever; every 100 wake-ups prints how late the wake-ups
/// were (the worst and the mean, in microseconds), so a test can see that a flood
/// leaves time for other tasks (reported, not judged on wall time).
fn sleeper(ms: u64) {
    let period = ms * 1_000_000;
    let mut round = 0u64;
    loop {
        let (mut worst, mut sum) = (0u64, 0u64);
        for _ in 0..100 {
            let due = libos::time::now_ns() + period;
            sched::sleep_until(due);
            let late = libos::time::now_ns().saturating_sub(due);
            worst = worst.max(late);
            sum += late;
        }
        round += 1;
        println!(
            "echo: sleeper round {round}: 100 wake-ups, lateness max {} us mean {} us",
            worst / 1000,
            sum / 100 / 1000
        );
    }
}

/// Echoes one connection until the client closes it.
fn serve(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
