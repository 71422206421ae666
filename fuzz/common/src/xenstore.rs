//! The xenstore client's protocol path: `xs_proto` encoding and parsing, the shared
//! byte `ring`, and `xs_client`'s request/reply matching, against a model xenstored
//! that answers honestly most of the time and sometimes sends unsolicited replies,
//! garbage, watch events or corrupt ring indices.

use alloc::vec;
use alloc::vec::Vec;

use upcall_xen::ring;
use upcall_xen::xs_client::{Matcher, Route};
use upcall_xen::xs_proto::{self as proto, Error, HEADER_LEN, MsgType};

use crate::input::Input;

const RING: u32 = 1024;

/// One direction of the shared page: bytes and free-running indices.
struct Ring {
    bytes: Vec<u8>,
    prod: u32,
    cons: u32,
}

impl Ring {
    fn new() -> Self {
        Ring {
            bytes: vec![0; RING as usize],
            prod: 0,
            cons: 0,
        }
    }

    /// Producer side: queues what fits.
    fn put(&mut self, data: &[u8]) -> Result<usize, ring::Corrupt> {
        let (p, n) = ring::produce(&mut self.bytes, self.prod, self.cons, data)?;
        self.prod = p;
        Ok(n)
    }

    /// Producer side: queues all of `data` or nothing (a server writes whole messages).
    fn put_all(&mut self, data: &[u8]) -> bool {
        match self.waiting() {
            Some(w) if RING as usize - w >= data.len() => {
                assert_eq!(self.put(data), Ok(data.len()));
                true
            }
            _ => false,
        }
    }

    /// Consumer side: takes exactly `n` bytes if they are there.
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, ring::Corrupt> {
        let avail = ring::space(self.prod, self.cons, RING).map(|free| (RING - free) as usize)?;
        if avail < n {
            return Ok(None);
        }
        let mut out = vec![0u8; n];
        let (c, got) = ring::consume(&self.bytes, self.cons, self.prod, &mut out)?;
        assert_eq!(got, n);
        self.cons = c;
        Ok(Some(out))
    }

    /// Bytes waiting.
    fn waiting(&self) -> Option<usize> {
        ring::space(self.prod, self.cons, RING)
            .ok()
            .map(|free| (RING - free) as usize)
    }
}

const TYPES: [MsgType; 6] = [
    MsgType::Read,
    MsgType::Write,
    MsgType::Directory,
    MsgType::Watch,
    MsgType::TransactionStart,
    MsgType::TransactionEnd,
];

fn reply(ty: u32, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
    for v in [ty, id, 0, payload.len() as u32] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

/// Drives client and model for as many steps as the input has.
pub fn xenstore(data: &[u8]) {
    let mut i = Input::new(data);
    let mut m = Matcher::new();
    let (mut req, mut rsp) = (Ring::new(), Ring::new());
    // What the honest server answered for each id: (id, payload).
    let mut expected: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut outstanding: Option<u32> = None;
    let mut reader_dead = false;
    // Once the model has written junk or moved `rsp_prod` itself, the stream can carry
    // a forged reply that is indistinguishable from the real one: from then on only
    // the client's own invariants are checked, not the payloads.
    let mut forged = false;
    while !i.is_empty() {
        match i.u8() % 8 {
            // The client sends a request.
            0 | 1 => {
                let ty = TYPES[usize::from(i.u8()) % TYPES.len()];
                match m.begin(ty) {
                    Ok(id) => {
                        assert!(outstanding.is_none() && !reader_dead);
                        let n = usize::from(i.u8() % 40);
                        let path = i.bytes(n);
                        let path = core::str::from_utf8(path).unwrap_or("p");
                        let msg = proto::encode(ty, id, 0, &[path], false).expect("short");
                        match req.waiting() {
                            // Room for all of it: sent.
                            Some(w) if RING as usize - w >= msg.len() => {
                                assert_eq!(req.put(&msg), Ok(msg.len()));
                                outstanding = Some(id);
                            }
                            // The real writer waits for room; the model gives up.
                            Some(_) => assert!(m.abandon(id)),
                            // Corrupt indices: the writer fails the client.
                            None => {
                                outstanding = Some(id);
                                fail(
                                    &mut m,
                                    &mut outstanding,
                                    &mut reader_dead,
                                    Error::CorruptRing,
                                );
                            }
                        }
                    }
                    Err(e) => {
                        if reader_dead {
                            assert!(m.broken().is_some(), "{e}");
                        } else {
                            assert!(outstanding.is_some(), "refused without cause: {e}");
                        }
                    }
                }
            }
            // The server answers the next request honestly (or with an error).
            2 | 3 => {
                let Ok(Some(h)) = req.take(HEADER_LEN) else {
                    continue;
                };
                // (Garbage only after the model corrupted `req_cons` itself.)
                let Ok(h) = proto::parse_header(h.as_slice().try_into().unwrap()) else {
                    continue;
                };
                let Ok(Some(_)) = req.take(h.len as usize) else {
                    continue;
                };
                let payload: Vec<u8> = if i.one_in(4) {
                    b"ENOENT\0".to_vec()
                } else {
                    let n = usize::from(i.u8() % 64);
                    i.bytes(n).to_vec()
                };
                let ty = if payload == b"ENOENT\0" {
                    MsgType::Error as u32
                } else {
                    h.ty
                };
                if rsp.put_all(&reply(ty, h.req_id, &payload)) {
                    expected.push((h.req_id, payload));
                }
            }
            // Hostile: an unsolicited reply, a watch event, garbage, or corrupt indices.
            4 => match i.u8() % 5 {
                0 => {
                    // (Ids with the top bit set: a forged reply with the id of a real request
                    // cannot be told from the real one, by design.)
                    let _ = rsp.put_all(&reply(MsgType::Read as u32, i.u32() | 1 << 31, b"stray"));
                }
                1 => {
                    let _ = rsp.put_all(&reply(MsgType::WatchEvent as u32, 0, b"a/b\0tok\0"));
                }
                2 => {
                    let n = usize::from(i.u8() % 32);
                    let junk = i.bytes(n).to_vec();
                    let _ = rsp.put(&junk);
                    forged = true;
                }
                3 => {
                    rsp.prod = rsp.prod.wrapping_add(i.u32());
                    forged = true;
                }
                // (The server then reads garbage as requests and may answer one with
                // the id of a real request.)
                _ => {
                    req.cons = req.cons.wrapping_add(i.u32());
                    forged = true;
                }
            },
            // The client's reader takes one message.
            _ => {
                if reader_dead {
                    continue;
                }
                let msg = rsp
                    .take(HEADER_LEN)
                    .map(|h| h.map(|h| proto::parse_header(h.as_slice().try_into().unwrap())));
                let h = match msg {
                    Ok(None) => continue,
                    Ok(Some(Ok(h))) => h,
                    Ok(Some(Err(e))) => {
                        fail(&mut m, &mut outstanding, &mut reader_dead, e);
                        continue;
                    }
                    Err(_) => {
                        fail(
                            &mut m,
                            &mut outstanding,
                            &mut reader_dead,
                            Error::CorruptRing,
                        );
                        continue;
                    }
                };
                // The real reader waits for the rest of a message; the model's server
                // sends whole messages, so a short one means junk in the stream, and
                // this reader gives up as on a ring error.
                let payload = rsp.take(h.len as usize).ok().flatten();
                let Some(payload) = payload else {
                    fail(
                        &mut m,
                        &mut outstanding,
                        &mut reader_dead,
                        Error::CorruptRing,
                    );
                    continue;
                };
                match m.on_message(&h, &payload) {
                    Route::Reply(r) => {
                        let id = outstanding
                            .take()
                            .expect("a reply with nothing outstanding");
                        assert_eq!(id, h.req_id, "a reply went to another request");
                        if let Some(pos) = expected.iter().position(|(e, _)| *e == id)
                            && !forged
                        {
                            let (_, want) = expected.remove(pos);
                            match r {
                                Ok(p) => assert_eq!(p, want),
                                Err(Error::Xenstored(e)) => assert_eq!(e.as_bytes(), b"ENOENT"),
                                Err(_) => {}
                            }
                        }
                    }
                    Route::Watch(..) | Route::Dropped(_) => {}
                }
            }
        }
        assert_eq!(m.outstanding(), outstanding.is_some());
        let _ = rsp.waiting();
    }
}

fn fail(m: &mut Matcher, outstanding: &mut Option<u32>, dead: &mut bool, e: Error) {
    let had = m.fail(e);
    assert_eq!(
        had,
        outstanding.take().is_some(),
        "the requester must be told"
    );
    *dead = true;
    assert!(
        m.begin(MsgType::Read).is_err(),
        "requests after a ring error must fail"
    );
}
