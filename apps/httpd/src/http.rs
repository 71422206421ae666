//! HTTP/1.1 requests from a byte stream: a pure, incremental parser (bytes in, request
//! heads out; no I/O), so unit, property and fuzz tests can drive it directly.
//!
//! Heads are parsed by `httparse`. The parser finds the end of a head by scanning only
//! the bytes that arrived since the last call (a head arriving a byte at a time costs
//! linear time), refuses heads over [`Limits::max_head`] with 431, honours
//! `Content-Length` (the body is skipped, never parsed as the next request; one over
//! [`Limits::max_body`] is refused with 413), and refuses `Transfer-Encoding` (501)
//! and malformed heads (400). After an error the connection must be closed.
#![forbid(unsafe_code)]

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Largest request head accepted by default (request line and headers, with the blank
/// line that ends them).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in a head.
pub const MAX_HEADERS: usize = 48;
/// Largest request body accepted (and skipped) by default.
pub const MAX_BODY: usize = 1024 * 1024;

/// Size limits of a [`Parser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head, in bytes.
    pub max_head: usize,
    /// Largest `Content-Length`.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: MAX_HEAD,
            max_body: MAX_BODY,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, without a query string.
    pub path: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The body's length (skipped by the parser before the next head).
    pub content_length: usize,
}

/// Why a request is refused; the connection is closed after the error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A malformed head (400).
    BadRequest,
    /// The head is longer than the limit or has too many headers (431).
    HeadTooLarge,
    /// The body is longer than the limit (413).
    BodyTooLarge,
    /// `Transfer-Encoding` (chunked bodies) is not supported (501).
    NotImplemented,
    /// Not HTTP/1.0 or 1.1 (505).
    Version,
}

impl Error {
    /// The response status.
    pub fn status(self) -> u16 {
        match self {
            Error::BadRequest => 400,
            Error::HeadTooLarge => 431,
            Error::BodyTooLarge => 413,
            Error::NotImplemented => 501,
            Error::Version => 505,
        }
    }
}

/// Bytes read from one connection and not yet consumed.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for the end of the head.
    scanned: usize,
    /// Body bytes still to skip.
    body_left: usize,
}

impl Parser {
    /// A parser for a fresh connection.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            buf: Vec::new(),
            scanned: 0,
            body_left: 0,
        }
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Body bytes are dropped as they come, never buffered.
        let skip = bytes.len().min(self.body_left);
        self.body_left -= skip;
        self.buf.extend_from_slice(&bytes[skip..]);
    }

    /// Whether the connection is between requests: no partial head or body pending
    /// (a close or time-out now is a clean end, not a truncated request).
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.body_left == 0
    }

    /// Body bytes still to skip before the next head.
    pub fn body_left(&self) -> usize {
        self.body_left
    }

    /// The next complete request head, `Ok(None)` if more bytes are needed.
    pub fn next_request(&mut self) -> Result<Option<Request>, Error> {
        if self.body_left > 0 {
            return Ok(None);
        }
        let Some(len) = self.head_end() else {
            if self.buf.len() > self.limits.max_head {
                return Err(Error::HeadTooLarge);
            }
            return Ok(None);
        };
        if len > self.limits.max_head {
            return Err(Error::HeadTooLarge);
        }
        let request = parse_head(&self.buf[..len], &self.limits)?;
        self.buf.drain(..len);
        self.scanned = 0;
        // Body bytes that came with the head.
        let skip = self.buf.len().min(request.content_length);
        self.buf.drain(..skip);
        self.body_left = request.content_length - skip;
        Ok(Some(request))
    }

    /// The length of the head at the start of `buf` (through its blank line: `\r\n\r\n`
    /// or a bare `\n\n`, which `httparse` also accepts), scanning only new bytes.
    fn head_end(&mut self) -> Option<usize> {
        // A terminator may straddle the old and new bytes: back up three.
        let from = self.scanned.saturating_sub(3);
        let found = self.buf[from..]
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .find_map(|(i, _)| {
                let rest = &self.buf[from + i + 1..];
                match rest {
                    [b'\n', ..] => Some(from + i + 2),
                    [b'\r', b'\n', ..] => Some(from + i + 3),
                    _ => None,
                }
            });
        if found.is_none() {
            self.scanned = self.buf.len();
        }
        found
    }
}

/// Parses one complete head.
fn parse_head(head: &[u8], limits: &Limits) -> Result<Request, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(Error::BadRequest),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(Error::Version),
        Err(_) => return Err(Error::BadRequest),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Error::BadRequest);
    };
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)?;
            // Repeated lengths must agree (RFC 9112 §6.3): a smuggling attempt otherwise.
            if content_length.is_some_and(|c| c != n) {
                return Err(Error::BadRequest);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Error::NotImplemented);
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > limits.max_body {
        return Err(Error::BodyTooLarge);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request {
        method: method.into(),
        path: path.into(),
        keep_alive,
        content_length,
    })
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces inside).
fn parse_length(v: &[u8]) -> Result<usize, Error> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadRequest);
    }
    v.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(Error::BodyTooLarge)
    })
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
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

    /// The head to send.
    pub fn head(&self, keep_alive: bool) -> String {
        format!(
            "HTTP/1.1 {} {}\r\nServer: upcall-httpd\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        )
    }

    /// The body to send after the head (empty for HEAD).
    pub fn body(&self) -> &[u8] {
        if self.head_only { &[] } else { &self.body }
    }

    /// Head and body in one buffer, if together they are at most `limit` bytes. Sent
    /// in one write, a small response leaves in as few frames as fit; written as head
    /// then body, the net task sends the head alone in a frame of its own (about 5 frames
    /// per small keep-alive request instead of 2.4, measured with `bench net`).
    pub fn whole(&self, keep_alive: bool, limit: usize) -> Option<Vec<u8>> {
        let head = self.head(keep_alive);
        let body = self.body();
        if head.len().checked_add(body.len())? > limit {
            return None;
        }
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        Some(all)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn a_small_response_is_whole_a_large_one_is_not() {
        let r = Response::file("text/plain", b"hello", false);
        let whole = r.whole(true, 4096).expect("small");
        let mut want = r.head(true).into_bytes();
        want.extend_from_slice(b"hello");
        assert_eq!(whole, want);
        // Exactly at the limit still fits; one byte over does not.
        assert_eq!(r.whole(true, want.len()), Some(want.clone()));
        assert_eq!(r.whole(true, want.len() - 1), None);
        // HEAD: the head alone.
        let h = Response::file("text/plain", b"hello", true);
        assert_eq!(h.whole(false, 4096), Some(h.head(false).into_bytes()));
        static BIG: [u8; 8192] = [b'x'; 8192];
        assert_eq!(
            Response::file("text/plain", &BIG, false).whole(true, 4096),
            None
        );
    }

    fn parse_all(input: &[u8]) -> (Vec<Request>, Option<Error>) {
        let mut p = Parser::new(Limits::default());
        p.feed(input);
        let mut out = Vec::new();
        loop {
            match p.next_request() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn a_simple_get() {
        let (reqs, err) = parse_all(b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(err, None);
        assert_eq!(
            reqs,
            vec![Request {
                method: "GET".into(),
                path: "/index.html".into(),
                keep_alive: true,
                content_length: 0,
            }]
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let (r, _) = parse_all(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r[0].keep_alive);
        let (r, _) = parse_all(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r[0].keep_alive);
        let (r, _) = parse_all(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
        assert!(!r[0].keep_alive);
    }

    #[test]
    fn a_body_is_skipped_not_parsed_as_a_request() {
        let body = b"GET /evil HTTP/1.1\r\n\r\n";
        let mut input =
            format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET /b HTTP/1.1\r\n\r\n");
        let (reqs, err) = parse_all(&input);
        assert_eq!(err, None);
        let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b"]);
    }

    #[test]
    fn a_body_arriving_later_is_skipped_too() {
        let mut p = Parser::new(Limits::default());
        p.feed(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345");
        assert_eq!(p.next_request().unwrap().unwrap().path, "/a");
        assert_eq!((p.body_left(), p.is_idle()), (5, false));
        p.feed(b"67890GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(p.next_request().unwrap().unwrap().path, "/b");
        assert!(p.is_idle());
    }

    #[test]
    fn limits_give_431_and_413() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_all(&long).1, Some(Error::HeadTooLarge));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_all(&long).1, Some(Error::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&many).1, Some(Error::HeadTooLarge));
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse_all(big.as_bytes()).1, Some(Error::BodyTooLarge));
        let huge = "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(parse_all(huge.as_bytes()).1, Some(Error::BodyTooLarge));
    }

    #[test]
    fn bad_heads_give_400_501_505() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            assert_eq!(parse_all(bad).1, Some(Error::BadRequest), "{bad:?}");
        }
        assert_eq!(
            parse_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").1,
            Some(Error::NotImplemented)
        );
        assert_eq!(parse_all(b"GET / HTTP/2.0\r\n\r\n").1, Some(Error::Version));
    }

    #[test]
    fn bare_lf_heads_end_too() {
        let (reqs, err) = parse_all(b"GET /x HTTP/1.1\nHost: a\n\n");
        assert_eq!((reqs.len(), err), (1, None));
    }

    #[test]
    fn a_head_byte_by_byte_is_scanned_once() {
        // Each feed scans only the new bytes (plus three): linear in the head's size.
        let input = b"GET /slow HTTP/1.1\r\nHost: a\r\nX: yz\r\n\r\n";
        let mut p = Parser::new(Limits::default());
        for (i, b) in input.iter().enumerate() {
            p.feed(&[*b]);
            let r = p.next_request().unwrap();
            assert_eq!(r.is_some(), i == input.len() - 1);
            assert!(p.scanned == 0 || p.scanned == i + 1);
        }
    }

    proptest! {
        /// Any bytes, split anywhere: the parser never panics, and what it returns does
        /// not depend on how the bytes were split.
        #[test]
        fn hostile_bytes_split_anywhere(data in proptest::collection::vec(any::<u8>(), 0..600),
                                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let whole = parse_all(&data);
            let mut p = Parser::new(Limits::default());
            let mut pieces = Vec::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut last = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                pieces.push(&data[last..c]);
                last = c;
            }
            let mut got = Vec::new();
            let mut err = None;
            'feed: for piece in pieces {
                p.feed(piece);
                loop {
                    match p.next_request() {
                        Ok(Some(r)) => got.push(r),
                        Ok(None) => break,
                        Err(e) => { err = Some(e); break 'feed; }
                    }
                }
            }
            prop_assert_eq!((got, err), whole);
        }

        /// Well-formed requests with bodies, pipelined: each is found, bodies skipped.
        #[test]
        fn pipelined_requests_with_bodies(reqs in proptest::collection::vec(
            ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 1..6)) {
            let mut input = Vec::new();
            for (path, body, close) in &reqs {
                input.extend_from_slice(format!(
                    "POST /{path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
                    body.len(), if *close { "close" } else { "keep-alive" }).as_bytes());
                input.extend_from_slice(body);
            }
            let (got, err) = parse_all(&input);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got.len(), reqs.len());
            for (g, (path, body, close)) in got.iter().zip(&reqs) {
                prop_assert_eq!(&g.path[1..], path.as_str());
                prop_assert_eq!(g.content_length, body.len());
                prop_assert_eq!(g.keep_alive, !close);
            }
        }
    }
}
