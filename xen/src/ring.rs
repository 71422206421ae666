//! Byte rings shared with a backend: the PV console's and xenstore's (pure; host-tested).
//!
//! Indices are free-running u32s; the position is the index modulo the ring size (a
//! power of two). The producer only advances `prod`, the consumer only `cons`; an
//! outstanding count above the ring size means a corrupt (or hostile) peer.
//!
//! The pages' layouts are [`abi::xencons_interface`] and
//! [`abi::xenstore_domain_interface`].
#![forbid(unsafe_code)]

use core::mem::offset_of;

use crate::abi::{self, xencons_interface};

/// Size of the console's output ring.
pub const OUT_SIZE: u32 = abi::XENCONS_OUT_SIZE as u32;
/// Byte offset of `out` in the console page.
pub const OUT_OFFSET: usize = offset_of!(xencons_interface, out);
/// Byte offset of `out_cons`.
pub const OUT_CONS_OFFSET: usize = offset_of!(xencons_interface, out_cons);
/// Byte offset of `out_prod`.
pub const OUT_PROD_OFFSET: usize = offset_of!(xencons_interface, out_prod);

/// A producer state that is impossible (the backend claims to have consumed more than
/// was produced, or more than the ring holds is outstanding): a hostile or broken peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt {
    /// The producer index we hold.
    pub prod: u32,
    /// The consumer index the backend shows.
    pub cons: u32,
}

/// Free bytes for the producer at `prod` when the consumer shows `cons`, in a ring of
/// `size` bytes; an error when the indices are impossible (so a writer waiting for
/// room fails instead of waiting for ever on a corrupt consumer index).
pub fn space(prod: u32, cons: u32, size: u32) -> Result<u32, Corrupt> {
    let used = prod.wrapping_sub(cons);
    if used > size {
        return Err(Corrupt { prod, cons });
    }
    Ok(size - used)
}

/// The producer side of a byte ring whose consumer (the backend) may stall.
pub trait Producer {
    /// The shared (`prod`, `cons`) indices.
    fn indices(&self) -> (u32, u32);
    /// The ring's bytes.
    fn ring(&mut self) -> &mut [u8];
    /// Publishes a new producer index and notifies the backend.
    fn publish(&mut self, prod: u32);
    /// Gives the backend time to drain (one bounded wait, e.g. a yield).
    fn wait(&mut self);
}

/// How [`write_bounded`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEnd {
    /// Everything was queued.
    Done,
    /// The backend consumed nothing across `max_stalls` waits in a row: the rest
    /// (after `written` bytes) was dropped.
    Stalled {
        /// Bytes queued before giving up.
        written: usize,
    },
    /// The indices are impossible; nothing more was written.
    Corrupt(Corrupt),
}

/// Queues `data`, waiting while the ring is full, but at most `max_stalls` waits in a
/// row without the backend consuming anything: a stuck backend delays the writer by a
/// bounded time, never for ever (the panic path writes through here too).
pub fn write_bounded(port: &mut impl Producer, data: &[u8], max_stalls: u32) -> WriteEnd {
    let mut rest = data;
    let mut stalls = 0;
    while !rest.is_empty() {
        let (prod, cons) = port.indices();
        let (p, n) = match produce(port.ring(), prod, cons, rest) {
            Ok(r) => r,
            Err(c) => return WriteEnd::Corrupt(c),
        };
        if n > 0 {
            port.publish(p);
            rest = &rest[n..];
            stalls = 0;
            continue;
        }
        if stalls == max_stalls {
            return WriteEnd::Stalled {
                written: data.len() - rest.len(),
            };
        }
        stalls += 1;
        port.wait();
    }
    WriteEnd::Done
}

/// The waits the next [`write_bounded`] may spend: none while the backend still shows
/// the consumer index `stalled_at` at which an earlier write gave up (a stuck backend
/// costs one bounded wait in all, not one per write: a panic report is many writes),
/// else `max`.
pub fn stall_budget(stalled_at: Option<u32>, cons: u32, max: u32) -> u32 {
    if stalled_at == Some(cons) { 0 } else { max }
}

/// What to remember after a write ended as `end` with the backend at `cons`.
pub fn stalled_at_after(end: WriteEnd, before: Option<u32>, cons: u32) -> Option<u32> {
    match end {
        WriteEnd::Done => None,
        WriteEnd::Stalled { .. } => Some(cons),
        WriteEnd::Corrupt(_) => before,
    }
}

/// Copies as much of `data` as fits into `ring` at `prod`; returns the new producer
/// index and how many bytes were queued.
pub fn produce(
    ring: &mut [u8],
    prod: u32,
    cons: u32,
    data: &[u8],
) -> Result<(u32, usize), Corrupt> {
    let size = ring.len() as u32;
    let used = prod.wrapping_sub(cons);
    if used > size || !size.is_power_of_two() {
        return Err(Corrupt { prod, cons });
    }
    let n = ((size - used) as usize).min(data.len());
    for (i, &b) in data[..n].iter().enumerate() {
        ring[(prod.wrapping_add(i as u32) % size) as usize] = b;
    }
    Ok((prod.wrapping_add(n as u32), n))
}

/// Copies up to `out.len()` available bytes out of `ring` from `cons`; returns the new
/// consumer index and how many bytes were taken.
pub fn consume(ring: &[u8], cons: u32, prod: u32, out: &mut [u8]) -> Result<(u32, usize), Corrupt> {
    let size = ring.len() as u32;
    let avail = prod.wrapping_sub(cons);
    if avail > size || !size.is_power_of_two() {
        return Err(Corrupt { prod, cons });
    }
    let n = (avail as usize).min(out.len());
    for (i, b) in out[..n].iter_mut().enumerate() {
        *b = ring[(cons.wrapping_add(i as u32) % size) as usize];
    }
    Ok((cons.wrapping_add(n as u32), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_and_stops_when_full() {
        let mut ring = vec![0u8; OUT_SIZE as usize];
        let (p, n) = produce(&mut ring, OUT_SIZE - 2, OUT_SIZE - 2, b"abcd").unwrap();
        assert_eq!((p, n), (OUT_SIZE + 2, 4));
        assert_eq!(&ring[OUT_SIZE as usize - 2..], b"ab");
        assert_eq!(&ring[..2], b"cd");
        assert_eq!(
            produce(&mut ring, 100 + OUT_SIZE, 100, b"x").unwrap(),
            (100 + OUT_SIZE, 0)
        );
        assert_eq!(
            produce(&mut ring, 5, 10, b"x"),
            Err(Corrupt { prod: 5, cons: 10 })
        );
    }

    #[test]
    fn a_corrupt_consumer_index_is_an_error_not_a_wait() {
        assert_eq!(space(10, 10, 1024), Ok(1024));
        assert_eq!(space(1034, 10, 1024), Ok(0));
        // cons ahead of prod: the backend claims to have consumed unwritten bytes.
        assert_eq!(space(10, 11, 1024), Err(Corrupt { prod: 10, cons: 11 }));
    }

    /// A console backend that drains `drain` bytes per wait, or nothing when stuck.
    struct Console {
        ring: Vec<u8>,
        prod: u32,
        cons: u32,
        drain: u32,
        waits: u32,
    }

    impl Producer for Console {
        fn indices(&self) -> (u32, u32) {
            (self.prod, self.cons)
        }
        fn ring(&mut self) -> &mut [u8] {
            &mut self.ring
        }
        fn publish(&mut self, prod: u32) {
            self.prod = prod;
        }
        fn wait(&mut self) {
            self.waits += 1;
            assert!(self.waits < 1_000_000, "the writer waits for ever");
            self.cons = self
                .cons
                .wrapping_add(self.drain.min(self.prod.wrapping_sub(self.cons)));
        }
    }

    #[test]
    fn a_stuck_backend_bounds_the_write() {
        let mut c = Console {
            ring: vec![0; 64],
            prod: 0,
            cons: 0,
            drain: 0,
            waits: 0,
        };
        assert_eq!(
            write_bounded(&mut c, &[1; 100], 5),
            WriteEnd::Stalled { written: 64 }
        );
        assert_eq!(c.waits, 5);
        // A slow but live backend gets everything.
        c.drain = 7;
        assert_eq!(write_bounded(&mut c, &[2; 500], 5), WriteEnd::Done);
        c.cons = c.prod.wrapping_add(1);
        assert!(matches!(
            write_bounded(&mut c, b"x", 5),
            WriteEnd::Corrupt(_)
        ));
    }

    #[test]
    fn many_writes_to_a_stuck_backend_cost_one_bounded_wait() {
        let mut c = Console {
            ring: vec![0; 64],
            prod: 0,
            cons: 0,
            drain: 0,
            waits: 0,
        };
        let mut stalled_at = None;
        for _ in 0..100 {
            let budget = stall_budget(stalled_at, c.cons, 5);
            let end = write_bounded(&mut c, b"a line of a panic report\n", budget);
            stalled_at = stalled_at_after(end, stalled_at, c.cons);
        }
        assert_eq!(c.waits, 5, "one bounded wait in all");
        // The backend moves again: writes may wait again.
        c.drain = 64;
        c.wait();
        assert_eq!(stall_budget(stalled_at, c.cons, 5), 5);
    }

    proptest! {
        #[test]
        fn never_overwrites_unconsumed_bytes(prod in any::<u32>(), used in 0..=OUT_SIZE, len in 0usize..5000) {
            let cons = prod.wrapping_sub(used);
            let mut ring = vec![7u8; OUT_SIZE as usize];
            let data = vec![1u8; len];
            let (p, n) = produce(&mut ring, prod, cons, &data).unwrap();
            prop_assert_eq!(n, len.min((OUT_SIZE - used) as usize));
            prop_assert!(p.wrapping_sub(cons) <= OUT_SIZE);
            prop_assert_eq!(ring.iter().filter(|&&b| b == 1).count(), n);
        }

        #[test]
        fn what_is_produced_is_consumed_in_order(start in any::<u32>(), chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8)) {
            let mut ring = vec![0u8; 1024];
            let (mut prod, mut cons) = (start, start);
            let mut sent = Vec::new();
            let mut got = Vec::new();
            for chunk in &chunks {
                let (p, n) = produce(&mut ring, prod, cons, chunk).unwrap();
                sent.extend_from_slice(&chunk[..n]);
                prod = p;
                let mut buf = [0u8; 300];
                let (c, m) = consume(&ring, cons, prod, &mut buf).unwrap();
                got.extend_from_slice(&buf[..m]);
                cons = c;
            }
            loop {
                let mut buf = [0u8; 300];
                let (c, m) = consume(&ring, cons, prod, &mut buf).unwrap();
                if m == 0 { break; }
                got.extend_from_slice(&buf[..m]);
                cons = c;
            }
            prop_assert_eq!(got, sent);
        }

        #[test]
        fn hostile_indices_are_errors_not_panics(prod in any::<u32>(), cons in any::<u32>()) {
            let mut ring = vec![0u8; OUT_SIZE as usize];
            let r = produce(&mut ring, prod, cons, b"hello");
            prop_assert_eq!(r.is_err(), prod.wrapping_sub(cons) > OUT_SIZE);
            let mut out = [0u8; 16];
            let r = consume(&ring, cons, prod, &mut out);
            prop_assert_eq!(r.is_err(), prod.wrapping_sub(cons) > OUT_SIZE);
        }
    }
}
