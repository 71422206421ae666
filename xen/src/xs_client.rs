//! The xenstore client's request/reply matching (pure; host-tested and fuzzed).
//!
//! One request is outstanding at a time (the client serializes them). Every message
//! the reader takes off the response ring goes through [`Matcher::on_message`]: a watch
//! event goes to its watcher; a reply goes to the outstanding request only if its id
//! matches; anything else (a reply nobody asked for, a late reply to an abandoned
//! request) is dropped and counted, so one stray message cannot shift every later
//! reply onto the wrong request. A ring error ([`Matcher::fail`]) ends the client: the
//! outstanding request gets the error, and every later one fails at once instead of
//! waiting for a reader that is gone.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use crate::xs_proto::{self as proto, Error, Header, MsgType};

/// Where a message from xenstored goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The outstanding request's answer (its payload, or xenstored's or a protocol
    /// error).
    Reply(Result<Vec<u8>, Error>),
    /// A watch fired: (path, token).
    Watch(String, String),
    /// Dropped (counted): why.
    Dropped(&'static str),
}

/// The outstanding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    id: u32,
    ty: MsgType,
}

/// Request/reply bookkeeping.
#[derive(Debug, Default)]
pub struct Matcher {
    next_id: u32,
    pending: Option<Pending>,
    broken: Option<Error>,
    dropped: u64,
}

impl Matcher {
    /// A matcher with no request outstanding.
    pub const fn new() -> Self {
        Matcher {
            next_id: 0,
            pending: None,
            broken: None,
            dropped: 0,
        }
    }

    /// Starts a request of type `ty`; returns its id. An error if the client broke
    /// (the error that broke it) or a request is still outstanding.
    pub fn begin(&mut self, ty: MsgType) -> Result<u32, Error> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if self.pending.is_some() {
            return Err(Error::Malformed("a request is already outstanding"));
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.pending = Some(Pending {
            id: self.next_id,
            ty,
        });
        Ok(self.next_id)
    }

    /// Gives up request `id` (its request could not be sent completely); a reply that
    /// still comes is dropped. Returns `false` if the reply was already routed (the
    /// caller must then take it, so it cannot be mistaken for a later one).
    pub fn abandon(&mut self, id: u32) -> bool {
        match self.pending {
            Some(p) if p.id == id => {
                self.pending = None;
                true
            }
            _ => false,
        }
    }

    /// Routes one message (header and payload as read off the ring).
    pub fn on_message(&mut self, h: &Header, payload: &[u8]) -> Route {
        if h.ty == MsgType::WatchEvent as u32 {
            return match proto::watch_event(payload) {
                Ok((path, token)) => Route::Watch(path, token),
                Err(_) => self.drop_one("malformed watch event"),
            };
        }
        match self.pending {
            Some(p) if p.id == h.req_id => {
                self.pending = None;
                Route::Reply(proto::check_reply(p.ty, h, payload).map(|()| payload.to_vec()))
            }
            Some(_) => self.drop_one("reply to another request"),
            None => self.drop_one("reply with no request outstanding"),
        }
    }

    fn drop_one(&mut self, why: &'static str) -> Route {
        self.dropped += 1;
        Route::Dropped(why)
    }

    /// The ring broke with `e`: every later request fails with it. Returns whether a
    /// request was outstanding (its requester must be told `e`).
    pub fn fail(&mut self, e: Error) -> bool {
        if self.broken.is_none() {
            self.broken = Some(e);
        }
        self.pending.take().is_some()
    }

    /// Whether the client broke.
    pub fn broken(&self) -> Option<&Error> {
        self.broken.as_ref()
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether a request is outstanding.
    pub fn outstanding(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(ty: MsgType, req_id: u32, len: usize) -> Header {
        Header {
            ty: ty as u32,
            req_id,
            tx_id: 0,
            len: len as u32,
        }
    }

    #[test]
    fn an_unsolicited_reply_does_not_shift_later_replies() {
        let mut m = Matcher::new();
        // A reply nobody asked for arrives first.
        assert!(matches!(
            m.on_message(&hdr(MsgType::Read, 77, 3), b"old"),
            Route::Dropped(_)
        ));
        for round in 0..3u8 {
            let id = m.begin(MsgType::Read).unwrap();
            // Another stray reply while the request is outstanding.
            assert!(matches!(
                m.on_message(&hdr(MsgType::Read, id.wrapping_add(9), 1), b"x"),
                Route::Dropped(_)
            ));
            assert_eq!(
                m.on_message(&hdr(MsgType::Read, id, 1), &[round]),
                Route::Reply(Ok(vec![round])),
                "round {round}"
            );
        }
        assert_eq!(m.dropped(), 4);
    }

    #[test]
    fn a_ring_error_fails_the_outstanding_request_and_every_later_one() {
        let mut m = Matcher::new();
        let id = m.begin(MsgType::Read).unwrap();
        assert!(m.fail(Error::CorruptRing));
        assert!(!m.abandon(id));
        assert_eq!(m.begin(MsgType::Write), Err(Error::CorruptRing));
        assert_eq!(m.begin(MsgType::Directory), Err(Error::CorruptRing));
        assert!(!m.fail(Error::Oversized(1)), "nothing outstanding any more");
        assert_eq!(m.broken(), Some(&Error::CorruptRing));
    }

    #[test]
    fn an_abandoned_request_drops_its_late_reply() {
        let mut m = Matcher::new();
        let id = m.begin(MsgType::Write).unwrap();
        assert!(m.abandon(id));
        assert!(matches!(
            m.on_message(&hdr(MsgType::Write, id, 3), b"OK\0"),
            Route::Dropped(_)
        ));
        let id2 = m.begin(MsgType::Write).unwrap();
        assert_ne!(id, id2);
        assert_eq!(
            m.on_message(&hdr(MsgType::Error, id2, 7), b"EACCES\0"),
            Route::Reply(Err(Error::Xenstored("EACCES".into())))
        );
    }
}
