//! `echo`: TCP and UDP echo (RFC 862) on port 7 (`port=N` to change). Each TCP
//! connection gets its own task; UDP datagrams go back to their sender. Serves until
//! the guest is stopped. With `connect=A.B.C.D:PORT` it first says hello to that
//! server over an outgoing TCP connection and prints the line it answers.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use libos::net::{Endpoint, TcpListener, TcpStream, UdpSocket};
use libos::println;
use libos::sched::{self, Priority};

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let mut port = 7u16;
    let mut hello_to = None;
    for arg in args.iter() {
        if let Some(p) = arg.strip_prefix("port=").and_then(|p| p.parse().ok()) {
            port = p;
        } else if let Some(e) = arg.strip_prefix("connect=").and_then(parse_endpoint) {
            hello_to = Some(e);
        } else {
            println!("echo: unknown argument `{arg}` (expected port=N or connect=A.B.C.D:PORT)");
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
            match udp
                .recv_from(&mut buf)
                .and_then(|(n, from)| udp.send_to(&buf[..n], from))
            {
                Ok(()) => {}
                Err(e) => println!("echo: udp: {e}"),
            }
        }
    }));
    println!("echo: serving tcp and udp port {port}");
    loop {
        match listener.accept() {
            Ok(stream) => drop(sched::spawn("tcp-echo", Priority::Normal, move || {
                serve(stream)
            })),
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
