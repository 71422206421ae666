//! The xenstore wire protocol (pure; host-tested).
//!
//! Every message is a 16-byte header `{u32 type, u32 req_id, u32 tx_id, u32 len}`
//! (little-endian) followed by `len` bytes of payload. Requests carry NUL-terminated
//! strings; replies carry the value (`XS_READ`, not NUL-terminated), a NUL-separated
//! list (`XS_DIRECTORY`), `"OK\0"`, or for `XS_ERROR` an errno name such as `"ENOENT\0"`.
//! Anything malformed from xenstored is an [`Error`], never a panic.
#![forbid(unsafe_code)]

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Header bytes.
pub const HEADER_LEN: usize = 16;
/// The largest payload xenstored sends or accepts (XENSTORE_PAYLOAD_MAX).
pub const MAX_PAYLOAD: usize = 4096;

/// Message types used here (xen/include/public/io/xs_wire.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs, reason = "named after the protocol's XS_* constants")]
pub enum MsgType {
    Directory = 1,
    Read = 2,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Write = 11,
    WatchEvent = 15,
    Error = 16,
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `XS_*` type (raw: unknown types are reported, not rejected here).
    pub ty: u32,
    /// Request id echoed by the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

/// What can go wrong talking to xenstored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// xenstored answered `XS_ERROR` with this errno name (e.g. `ENOENT`).
    Xenstored(String),
    /// A header claims more payload than the protocol allows.
    Oversized(u32),
    /// A reply of another type than the request (and not an error).
    UnexpectedType {
        /// What we sent.
        sent: u32,
        /// What came back.
        got: u32,
    },
    /// A reply payload that does not parse (bad UTF-8, missing NUL, ...).
    Malformed(&'static str),
    /// A request too large to send.
    RequestTooLarge,
    /// The shared ring's indices are impossible.
    CorruptRing,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xenstored(e) => write!(f, "xenstored: {e}"),
            Error::Oversized(n) => write!(f, "xenstore reply of {n} bytes exceeds {MAX_PAYLOAD}"),
            Error::UnexpectedType { sent, got } => write!(
                f,
                "xenstore reply of type {got} to a request of type {sent}"
            ),
            Error::Malformed(what) => write!(f, "malformed xenstore reply: {what}"),
            Error::RequestTooLarge => write!(f, "xenstore request exceeds {MAX_PAYLOAD} bytes"),
            Error::CorruptRing => write!(f, "xenstore ring indices are corrupt"),
        }
    }
}

/// Encodes a request whose payload is `parts`, each followed by a NUL unless it is the
/// value of an `XS_WRITE` (`last_raw`).
pub fn encode(
    ty: MsgType,
    req_id: u32,
    tx_id: u32,
    parts: &[&str],
    last_raw: bool,
) -> Result<Vec<u8>, Error> {
    let mut payload = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        payload.extend_from_slice(p.as_bytes());
        if !(last_raw && i + 1 == parts.len()) {
            payload.push(0);
        }
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::RequestTooLarge);
    }
    let mut msg = Vec::with_capacity(HEADER_LEN + payload.len());
    for v in [ty as u32, req_id, tx_id, payload.len() as u32] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(&payload);
    Ok(msg)
}

/// Parses a header.
pub fn parse_header(b: &[u8; HEADER_LEN]) -> Result<Header, Error> {
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let h = Header {
        ty: w(0),
        req_id: w(4),
        tx_id: w(8),
        len: w(12),
    };
    if h.len as usize > MAX_PAYLOAD {
        return Err(Error::Oversized(h.len));
    }
    Ok(h)
}

/// Checks a reply against the request type; returns its payload or xenstored's error.
pub fn check_reply(sent: MsgType, header: &Header, payload: &[u8]) -> Result<(), Error> {
    if header.ty == MsgType::Error as u32 {
        let name = payload.strip_suffix(&[0]).unwrap_or(payload);
        let name =
            core::str::from_utf8(name).map_err(|_| Error::Malformed("error name is not UTF-8"))?;
        return Err(Error::Xenstored(name.to_string()));
    }
    if header.ty != sent as u32 {
        return Err(Error::UnexpectedType {
            sent: sent as u32,
            got: header.ty,
        });
    }
    Ok(())
}

/// The value of an `XS_READ` reply.
pub fn value(payload: &[u8]) -> Result<String, Error> {
    core::str::from_utf8(payload)
        .map(ToString::to_string)
        .map_err(|_| Error::Malformed("value is not UTF-8"))
}

/// The entries of an `XS_DIRECTORY` reply.
pub fn directory(payload: &[u8]) -> Result<Vec<String>, Error> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let body = payload
        .strip_suffix(&[0])
        .ok_or(Error::Malformed("directory list is not NUL-terminated"))?;
    body.split(|&b| b == 0).map(value).collect()
}

/// The (path, token) of an `XS_WATCH_EVENT`.
pub fn watch_event(payload: &[u8]) -> Result<(String, String), Error> {
    let mut it = payload.split(|&b| b == 0);
    let path = it
        .next()
        .ok_or(Error::Malformed("watch event without path"))?;
    let token = it
        .next()
        .ok_or(Error::Malformed("watch event without token"))?;
    Ok((value(path)?, value(token)?))
}

/// The transaction id of an `XS_TRANSACTION_START` reply (a decimal string).
pub fn transaction_id(payload: &[u8]) -> Result<u32, Error> {
    let text = value(payload.strip_suffix(&[0]).unwrap_or(payload))?;
    text.parse()
        .map_err(|_| Error::Malformed("transaction id is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_requests() {
        let m = encode(MsgType::Write, 7, 0, &["control/shutdown", ""], true).unwrap();
        assert_eq!(&m[..4], &11u32.to_le_bytes());
        assert_eq!(&m[4..8], &7u32.to_le_bytes());
        assert_eq!(&m[12..16], &17u32.to_le_bytes());
        assert_eq!(&m[16..], b"control/shutdown\0");
        let r = encode(MsgType::Read, 1, 3, &["name"], false).unwrap();
        assert_eq!(&r[16..], b"name\0");
        assert_eq!(
            encode(MsgType::Read, 1, 0, &[&"x".repeat(5000)], false),
            Err(Error::RequestTooLarge)
        );
    }

    #[test]
    fn interprets_replies() {
        let h = |ty: u32, len: u32| Header {
            ty,
            req_id: 1,
            tx_id: 0,
            len,
        };
        assert_eq!(check_reply(MsgType::Read, &h(2, 3), b"abc"), Ok(()));
        assert_eq!(
            check_reply(MsgType::Read, &h(16, 7), b"ENOENT\0"),
            Err(Error::Xenstored("ENOENT".into()))
        );
        assert_eq!(
            check_reply(MsgType::Read, &h(1, 0), b""),
            Err(Error::UnexpectedType { sent: 2, got: 1 })
        );
        assert_eq!(directory(b"a\0bb\0").unwrap(), ["a", "bb"]);
        assert_eq!(directory(b"").unwrap(), Vec::<String>::new());
        assert!(directory(b"a\0b").is_err());
        assert_eq!(
            watch_event(b"control/shutdown\0tok\0").unwrap(),
            ("control/shutdown".into(), "tok".into())
        );
        assert!(watch_event(b"nonul").is_err());
        assert_eq!(transaction_id(b"42\0"), Ok(42));
        assert!(transaction_id(b"x\0").is_err());
        let mut hdr = [0u8; HEADER_LEN];
        hdr[12..16].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(parse_header(&hdr), Err(Error::Oversized(5000)));
    }

    proptest! {
        #[test]
        fn hostile_replies_never_panic(ty in 0u32..20, payload in proptest::collection::vec(any::<u8>(), 0..200), hdr in any::<[u8; 16]>()) {
            let _ = parse_header(&hdr);
            let h = Header { ty, req_id: 0, tx_id: 0, len: payload.len() as u32 };
            let _ = check_reply(MsgType::Read, &h, &payload);
            let _ = directory(&payload);
            let _ = watch_event(&payload);
            let _ = transaction_id(&payload);
            let _ = value(&payload);
        }

        #[test]
        fn requests_round_trip(path in "[a-z/]{1,40}", id in any::<u32>(), tx in any::<u32>()) {
            let m = encode(MsgType::Read, id, tx, &[&path], false).unwrap();
            let h = parse_header(m[..HEADER_LEN].try_into().unwrap()).unwrap();
            prop_assert_eq!((h.ty, h.req_id, h.tx_id, h.len as usize), (2, id, tx, path.len() + 1));
            prop_assert_eq!(&m[HEADER_LEN..HEADER_LEN + path.len()], path.as_bytes());
        }
    }
}
