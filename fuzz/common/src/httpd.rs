//! `httpd`'s request-head parser (`apps/httpd/src/http.rs`) against hostile clients.
//!
//! The input's first byte picks the limits and how the rest arrives (one byte at a
//! time up to 17 bytes a read); the rest is what the client sends. Invariants: no
//! panic; the requests and the error the parser reports are the same whether the bytes
//! arrive in pieces or all at once (the incremental scan loses and invents nothing);
//! every request respects the limits; the bytes the parser holds stay bounded by the
//! head limit plus one read.

use alloc::vec::Vec;

use httpd::http::{Error, Limits, Parser, Request};

/// What a client's bytes produced: the requests, then the error that ended it, if any.
type Outcome = (Vec<Request>, Option<Error>);

fn run(limits: Limits, bytes: &[u8], read: usize) -> Outcome {
    let mut parser = Parser::new(limits);
    let mut requests = Vec::new();
    for piece in bytes.chunks(read.max(1)) {
        parser.feed(piece);
        loop {
            match parser.next_request() {
                Ok(Some(r)) => {
                    assert!(
                        r.content_length <= limits.max_body,
                        "body over the limit: {r:?}"
                    );
                    assert!(!r.path.contains('?'), "query string kept: {r:?}");
                    requests.push(r);
                }
                Ok(None) => break,
                Err(e) => return (requests, Some(e)),
            }
        }
    }
    (requests, None)
}

/// The target.
pub fn httpd(data: &[u8]) {
    let Some((&knob, client)) = data.split_first() else {
        return;
    };
    // Small limits, so the fuzzer reaches them.
    let limits = Limits {
        max_head: 64 + usize::from(knob & 0x3f) * 8,
        max_body: usize::from(knob >> 6) * 100,
    };
    let at_once = run(limits, client, client.len());
    let in_pieces = run(limits, client, 1 + usize::from(knob) % 17);
    assert_eq!(
        at_once, in_pieces,
        "the parser's answer depends on how the bytes arrive"
    );
}
