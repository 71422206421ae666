//! Just enough HTTP/1.1: request heads up to 8 KiB, keep-alive, no request bodies.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use libos::net::{NetError, TcpStream};

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, without a query string.
    pub path: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// Bytes read from a connection and not yet parsed (pipelined requests).
#[derive(Debug)]
pub struct Connection {
    buf: Vec<u8>,
}

impl Connection {
    /// A fresh connection.
    pub fn new() -> Self {
        Connection { buf: Vec::new() }
    }

    /// Reads the next request head; `Ok(None)` when the client closed the connection
    /// between requests; `Err(status)` for a request to refuse.
    pub fn next_request(&mut self, stream: &mut TcpStream) -> Result<Option<Request>, u16> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse(&head).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(431);
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(400),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn parse(head: &[u8]) -> Result<Request, u16> {
    let text = core::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().ok_or(400u16)?.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(505),
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        if name.trim().eq_ignore_ascii_case("connection") {
            let value = value.trim();
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request {
        method: method.into(),
        path: path.into(),
        keep_alive,
    })
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    status: u16,
    content_type: &'static str,
    body: Cow<'static, [u8]>,
    /// Send the headers only (HEAD).
    head_only: bool,
}

impl Response {
    /// A file built into the image.
    pub fn file(content_type: &'static str, body: &'static [u8], head_only: bool) -> Self {
        Response {
            status: 200,
            content_type,
            body: Cow::Borrowed(body),
            head_only,
        }
    }

    /// A generated body.
    pub fn owned(status: u16, content_type: &'static str, body: Vec<u8>, head_only: bool) -> Self {
        Response {
            status,
            content_type,
            body: Cow::Owned(body),
            head_only,
        }
    }

    /// An error page.
    pub fn error(status: u16) -> Self {
        let body = format!("{status} {}\n", reason(status)).into_bytes();
        Response::owned(status, "text/plain; charset=utf-8", body, false)
    }

    /// Writes the response.
    pub fn send(&self, stream: &mut TcpStream, keep_alive: bool) -> Result<(), NetError> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nServer: upcall-httpd\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        stream.write_all(head.as_bytes())?;
        if !self.head_only {
            stream.write_all(&self.body)?;
        }
        Ok(())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}
