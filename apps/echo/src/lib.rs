//! `echo`: TCP and UDP echo (RFC 862) on port 7 (`port=N` to change). Each TCP
//! connection gets its own task; UDP datagrams go back to their sender. Serves until
//! the guest is stopped.
#![no_std]
#![forbid(unsafe_code)]

use libos::net::{TcpListener, TcpStream, UdpSocket};
use libos::println;
use libos::sched::{self, Priority};

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let mut port = 7u16;
    for arg in args.iter() {
        match arg.strip_prefix("port=").map(str::parse) {
            Some(Ok(p)) => port = p,
            _ => {
                println!("echo: unknown argument `{arg}` (expected port=N)");
                return 2;
            }
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
