//! Netfront's rings and buffers as a whole: `netif` (ring bookkeeping, response
//! checks), `netbuf` (which pages the backend may reach) and the frontend's receive
//! and transmit steps as `netfront.rs` does them, against a model netback that is
//! honest most of the time and hostile sometimes.

use alloc::vec;
use alloc::vec::Vec;

use upcall_xen::netbuf::model::Table;
use upcall_xen::netbuf::{BufferGrants, Grants};
use upcall_xen::netif::{
    self, F_EXTRA_INFO, FrontRing, InFlight, RSP_NULL, RX_ENTRY, RingError, TX_ENTRY, TxBuffer,
    check_tx_response, encode_rx_request, tx_chain,
};
use upcall_xen::netrx::{MAX_RX_FRAME, RxChain, Step};

use crate::input::Input;

/// Ring entries and buffers (small, so the fuzzer wraps the rings often).
const SIZE: u32 = 8;
const PAGE: usize = 4096;

/// One shared ring: entries and the backend's `rsp_prod`.
struct Shared {
    entries: Vec<u8>,
    entry: usize,
    req_prod: u32,
    rsp_prod: u32,
}

impl Shared {
    fn new(entry: usize) -> Self {
        Shared {
            entries: vec![0; entry * SIZE as usize],
            entry,
            req_prod: 0,
            rsp_prod: 0,
        }
    }
    fn slot(&mut self, slot: usize) -> &mut [u8] {
        &mut self.entries[slot * self.entry..(slot + 1) * self.entry]
    }
}

/// The frontend's side (what `Netfront` holds).
struct Front {
    rx: FrontRing,
    tx: FrontRing,
    rx_flight: InFlight,
    tx_flight: InFlight,
    rx_grants: BufferGrants,
    rx_chain: RxChain,
    rx_held: Vec<u16>,
    rx_posted: Vec<u16>,
    stopped: bool,
    errors: u64,
}

fn post_rx(f: &mut Front, sh: &mut Shared, table: &mut Table, id: u16) -> Result<(), RingError> {
    let gref = f.rx_grants.grant(id, table).map_err(RingError::Grant)?;
    let slot =
        f.rx.next_request()
            .expect("an RX id is free only when its slot is");
    f.rx_flight.mark(id);
    f.rx_posted[slot] = id;
    sh.slot(slot).copy_from_slice(&encode_rx_request(id, gref));
    sh.req_prod = f.rx.req_prod();
    Ok(())
}

/// Drives frontend and model backend for as many steps as the input has.
pub fn netfront(data: &[u8]) {
    let mut i = Input::new(data);
    let mut table = Table::new(2 * SIZE);
    let (mut rx, mut tx) = (Shared::new(RX_ENTRY), Shared::new(TX_ENTRY));
    let mut f = Front {
        rx: FrontRing::new(SIZE),
        tx: FrontRing::new(SIZE),
        rx_flight: InFlight::new(SIZE as usize),
        tx_flight: InFlight::new(SIZE as usize),
        rx_grants: BufferGrants::new(SIZE as usize),
        rx_chain: RxChain::new(),
        rx_held: Vec::new(),
        rx_posted: vec![0; SIZE as usize],
        stopped: false,
        errors: 0,
    };
    for id in 0..SIZE as u16 {
        post_rx(&mut f, &mut rx, &mut table, id).expect("enough references");
    }
    // The backend's view: RX requests taken (id, gref), TX requests taken (id).
    let (mut rx_cons, mut tx_cons) = (0u32, 0u32);
    let mut rx_held: Vec<(u16, u32)> = Vec::new();
    // TX slots taken: a request's id, or `None` for a GSO extra-info slot.
    let mut tx_held: Vec<Option<u16>> = Vec::new();
    let mut extra_next = false;
    let mut tx_extras = 0u32;
    while !i.is_empty() {
        match i.u8() % 10 {
            // Backend takes the requests published.
            0 => {
                while rx_cons != rx.req_prod {
                    let e = rx.slot((rx_cons % SIZE) as usize).to_vec();
                    let id = u16::from_le_bytes([e[0], e[1]]);
                    let gref = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                    rx_held.push((id, gref));
                    rx_cons = rx_cons.wrapping_add(1);
                }
                while tx_cons != tx.req_prod {
                    let e = tx.slot((tx_cons % SIZE) as usize).to_vec();
                    if extra_next {
                        tx_held.push(None);
                        extra_next = false;
                    } else {
                        tx_held.push(Some(u16::from_le_bytes([e[8], e[9]])));
                        extra_next = u16::from_le_bytes([e[6], e[7]]) & F_EXTRA_INFO != 0;
                    }
                    tx_cons = tx_cons.wrapping_add(1);
                }
            }
            // Honest RX response: copy a frame through the grant, then answer.
            1 | 2 => {
                if rx_held.is_empty() {
                    continue;
                }
                let ahead = rx_cons.wrapping_sub(rx.rsp_prod);
                if ahead == 0 || ahead > SIZE {
                    continue;
                }
                let (id, gref) = rx_held.remove(usize::from(i.u8()) % rx_held.len());
                // The copy goes through the grant: Xen refuses it unless the grant is
                // live and for this page (a request the frontend already took back,
                // answered by a hostile response, has none), and the backend then
                // answers with an error status.
                let live = table.live.iter().any(|g| g.0 == gref && g.1 == id);
                let len = if live {
                    14 + u16::from(i.u8()) * 4
                } else {
                    (-1i16) as u16
                };
                let off = u16::from(i.u8() % 16) * 64;
                // Sometimes a chain: more slots of this frame follow.
                let flags = if i.u8().is_multiple_of(4) {
                    netif::F_MORE_DATA
                } else {
                    0
                };
                let mut e = [0u8; RX_ENTRY];
                e[0..2].copy_from_slice(&id.to_le_bytes());
                e[2..4].copy_from_slice(&off.to_le_bytes());
                e[4..6].copy_from_slice(&flags.to_le_bytes());
                e[6..8].copy_from_slice(&len.to_le_bytes());
                let slot = (rx.rsp_prod % SIZE) as usize;
                rx.slot(slot).copy_from_slice(&e);
                rx.rsp_prod = rx.rsp_prod.wrapping_add(1);
            }
            // Honest TX response.
            3 => {
                let ahead = tx_cons.wrapping_sub(tx.rsp_prod);
                if ahead == 0 || ahead > SIZE {
                    continue;
                }
                if let Some(held) = tx_held.pop() {
                    let mut e = [0u8; TX_ENTRY];
                    match held {
                        Some(id) => e[0..2].copy_from_slice(&id.to_le_bytes()),
                        // netback's NULL keeps the extra slot's bytes as its "id".
                        None => {
                            e[0..2].copy_from_slice(&[1, 0]);
                            e[2..4].copy_from_slice(&RSP_NULL.to_le_bytes());
                        }
                    }
                    let slot = (tx.rsp_prod % SIZE) as usize;
                    tx.slot(slot).copy_from_slice(&e);
                    tx.rsp_prod = tx.rsp_prod.wrapping_add(1);
                }
            }
            // Hostile backend.
            4 => match i.u8() % 5 {
                0 => {
                    // (Into a slot whose request the model already read: overwriting
                    // unread requests would only make the model lie to itself.)
                    let ahead = rx_cons.wrapping_sub(rx.rsp_prod);
                    if ahead == 0 || ahead > SIZE {
                        continue;
                    }
                    let slot = (rx.rsp_prod % SIZE) as usize;
                    let junk = i.bytes(RX_ENTRY).to_vec();
                    rx.slot(slot)[..junk.len()].copy_from_slice(&junk);
                    rx.rsp_prod = rx.rsp_prod.wrapping_add(1);
                }
                1 => rx.rsp_prod = rx.rsp_prod.wrapping_add(u32::from(i.u8())),
                2 => {
                    let ahead = tx_cons.wrapping_sub(tx.rsp_prod);
                    if ahead == 0 || ahead > SIZE {
                        continue;
                    }
                    let slot = (tx.rsp_prod % SIZE) as usize;
                    let junk = i.bytes(TX_ENTRY).to_vec();
                    tx.slot(slot)[..junk.len()].copy_from_slice(&junk);
                    tx.rsp_prod = tx.rsp_prod.wrapping_add(1);
                }
                // Keep using (or let go of) a page's grant after answering.
                3 => table.set_busy(u16::from(i.u8()) % SIZE as u16, true),
                _ => table.set_busy(u16::from(i.u8()) % SIZE as u16, false),
            },
            // Frontend transmits a frame.
            5 | 6 => {
                if f.stopped {
                    continue;
                }
                // A frame of up to two pages (scatter-gather), with a GSO slot or
                // not, as `Netfront::send` builds it.
                let len = 1 + usize::from(i.u16()) % (2 * PAGE);
                let pages = len.div_ceil(PAGE);
                let gso = i.u8().is_multiple_of(2).then_some(1460);
                let slots = pages + usize::from(gso.is_some());
                if (f.tx.free() as usize) < slots || SIZE as usize - f.tx_flight.count() < pages {
                    continue;
                }
                let buffers: Vec<TxBuffer> = (0..pages)
                    .map(|_| TxBuffer {
                        id: f.tx_flight.take_free().expect("counted"),
                        gref: 0,
                    })
                    .collect();
                for e in tx_chain(len, &buffers, gso, true).expect("a valid frame") {
                    let slot = f.tx.next_request().expect("counted");
                    tx.slot(slot).copy_from_slice(&e);
                }
                tx_extras += u32::from(gso.is_some());
                tx.req_prod = f.tx.req_prod();
            }
            // Frontend reclaims TX.
            7 => {
                if f.stopped {
                    continue;
                }
                match f.tx.pending(tx.rsp_prod) {
                    Err(_) => f.stopped = true,
                    Ok(n) => {
                        for _ in 0..n {
                            let slot = f.tx.next_response();
                            match check_tx_response(tx.slot(slot), &mut f.tx_flight, &mut tx_extras)
                            {
                                Ok(_) => {}
                                Err(e) => {
                                    assert!(e.is_fatal() || matches!(e, RingError::BadTxStatus(_)));
                                    f.stopped = true;
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            // Frontend receives one frame (netfront's `receive`).
            _ => {
                if f.stopped {
                    continue;
                }
                let n = match f.rx.pending(rx.rsp_prod) {
                    Ok(n) => n,
                    Err(_) => {
                        f.stopped = true;
                        continue;
                    }
                };
                if n == 0 {
                    continue;
                }
                // One slot of a (possibly multi-slot) chain, as netfront's `receive`.
                let slot = f.rx.next_response();
                let entry = rx.slot(slot).to_vec();
                let posted = f.rx_posted[slot];
                let (id, step) = match f.rx_chain.push(&entry, posted, &mut f.rx_flight) {
                    Ok(r) => r,
                    Err(e) => {
                        assert!(e.is_fatal());
                        f.stopped = true;
                        continue;
                    }
                };
                if f.rx_grants.reclaim(id, &mut table).is_err() {
                    f.stopped = true;
                    continue;
                }
                f.rx_held.push(id);
                match step {
                    Step::More => continue,
                    Step::Frame(fr) => {
                        // Pages are read only once the backend cannot reach them.
                        for g in &fr.frags {
                            assert!(f.rx_grants.owned(g.id) && !table.reachable(g.id));
                            assert!(g.offset + g.len <= PAGE);
                        }
                        assert!(fr.len >= netif::MIN_FRAME && fr.len <= MAX_RX_FRAME);
                    }
                    Step::Dropped(e) => {
                        assert!(!e.is_fatal());
                        f.errors += 1;
                    }
                }
                for id in core::mem::take(&mut f.rx_held) {
                    if post_rx(&mut f, &mut rx, &mut table, id).is_err() {
                        f.stopped = true;
                        break;
                    }
                }
            }
        }
        // Invariants after every step.
        for p in 0..SIZE as u16 {
            assert!(
                !(f.rx_grants.owned(p) && table.reachable(p)),
                "page {p} owned and reachable"
            );
        }
        assert!(f.rx_flight.count() <= SIZE as usize && f.tx_flight.count() <= SIZE as usize);
        assert_eq!(
            table.free_refs as usize + table.live.len(),
            2 * SIZE as usize
        );
    }
    // Teardown: every grant ends, except those the backend still holds, which are
    // reported.
    let kept = f.rx_grants.teardown(&mut table);
    for p in 0..SIZE as u16 {
        if table.reachable(p) {
            assert!(
                kept.contains(&p),
                "teardown left page {p} reachable, unreported"
            );
        }
    }
    let _ = table.end(u32::MAX);
}
