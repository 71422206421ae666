//! The host's side of the network cases: real clients (`curl`, HTTP probes, the TCP
//! and UDP echo clients, coreutils' `timeout` around client programs) and the listener
//! that apps connecting out reach.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{CLIENT_TIMEOUT_S, LOCALHOST};

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

pub(crate) fn echo_probe(host: &str, port: u16) -> Result<(), String> {
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

/// A one-connection server on the host's 127.0.0.1 for apps that connect out: it
/// reads a line, answers `pong <line>`, and keeps the line for the check.
pub(crate) struct HostListener {
    pub(crate) port: u16,
    got: Arc<Mutex<Option<Result<String, String>>>>,
}

impl HostListener {
    /// How long the app has to connect.
    const DEADLINE: Duration = Duration::from_secs(120);

    pub(crate) fn start() -> Result<HostListener, String> {
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
    pub(crate) fn wait(&self) -> Result<String, String> {
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

/// Pseudo-random bytes (xorshift64*, seeded from the clock: each run sends new data).
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
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

pub(crate) fn tcp_echo(host: &str, port: u16, bytes: usize) -> Result<String, String> {
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

/// `echo`'s counters: the answer to its status datagram (`apps/echo`), a few tries.
pub(crate) fn echo_status(host: &str, port: u16) -> Result<String, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    sock.connect((host, port)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let mut last = String::new();
    for _ in 0..4 {
        sock.send(b"upcall-echo-status?")
            .map_err(|e| format!("send: {e}"))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("echo's status datagram got no answer: {last}"))
}

pub(crate) fn udp_echo(host: &str, port: u16, count: usize) -> Result<String, String> {
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
