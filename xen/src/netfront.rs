//! Netfront: the domU's network card, a [`libos::net::Nic`] over the PV network
//! protocol (`io/netif.h`) with a netback in the backend domain.
//!
//! Setup (xenstore handshake, as Linux's and Mini-OS's netfront do it): read the
//! backend's domain and path, its transmit features and our MAC from `device/vif/0`;
//! allocate and grant one TX and one RX shared ring page and an unbound event channel;
//! write `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy` (the backend
//! copies received frames into our pages), `feature-rx-notify`, and the receive
//! offloads (`feature-sg`, `feature-gso-tcpv4`, `feature-no-csum-offload=0`; all off
//! with `offload=off`); switch our state to Connected and wait for the backend's.
//!
//! Buffers: each ring id owns one page. TX pages are granted read-only for the device's
//! lifetime; an RX page is granted writable only while its request is in flight: the
//! grant is ended when the response comes back, before the page is read, and a page
//! whose grant the backend still holds is never read or posted again (the card stops;
//! [`crate::netbuf`]). Sending copies the frame into its ids' pages, one per started
//! 4 KiB (a chain with `feature-sg`); consecutive TCP segments of one flow are first
//! merged into one GSO frame ([`libos::net::tso`]) when the backend takes
//! `feature-gso-tcpv4`. Receiving puts a chain together ([`crate::netrx`]), copies it
//! out and posts its pages again (with new grants). Requests are announced once per
//! poll ([`Nic::flush`]). Dropping the card ends every grant still standing and leaks
//! the pages it cannot take back. Every index, id, status, offset and flag the backend
//! writes is checked by [`crate::netif`] and [`crate::netrx`] before use; a backend
//! that breaks the protocol stops the card with an error, never corrupts us.

use alloc::alloc::{Layout, alloc_zeroed};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use libos::net::tso::{self, Coalescer};
use libos::net::{Nic, NicError, NicId, OffloadCounters, Offloads};
use libos::{println, sched, time};

use crate::netbuf::{BufferGrants, Grants};
use crate::netif::{
    self, FrontRing, InFlight, MAX_TX_FRAME, MAX_TX_SLOTS, PAGE, REQ_EVENT, REQ_PROD, RSP_EVENT,
    RSP_PROD, RX_ENTRY, RX_RING_SIZE, RingError, SRING_HEADER, TX_ENTRY, TX_RING_SIZE, TxBuffer,
};
use crate::netrx::{self, Frag, Frame, RxChain, Step};
use crate::xenbus::{self, XenbusState};
use crate::{events, gnttab, xenstore};

/// Our device's xenstore directory (relative to the domain's home).
const DEVICE: &str = "device/vif/0";
/// How long the backend may take to connect.
const CONNECT_TIMEOUT_NS: u64 = 10_000_000_000;

/// The interface id interrupts are reported under (set once the card is registered).
/// Taken in the upcall, so task context takes it with irqs off.
static NIC_ID: spinning_top::Spinlock<Option<NicId>> = spinning_top::Spinlock::new(None);

/// One zeroed page that lives as long as the device.
fn page() -> *mut u8 {
    let layout = Layout::from_size_align(PAGE, PAGE).expect("page layout");
    // SAFETY: non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null(), "netfront: out of memory for ring pages");
    p
}

/// A shared ring page and our private indices for it.
struct Shared {
    page: *mut u8,
    ring: FrontRing,
    entry: usize,
}

impl Shared {
    fn new(size: u32, entry: usize) -> Self {
        Shared {
            page: page(),
            ring: FrontRing::new(size),
            entry,
        }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: one of the four naturally aligned index words at the start of our
        // ring page, shared with the backend, which updates them with plain stores
        // ordered by barriers; atomics give us the matching ordering.
        unsafe { AtomicU32::from_ptr(self.page.add(offset).cast::<u32>()) }
    }

    fn slot(&self, slot: usize) -> *mut u8 {
        // SAFETY: slot < ring size, so the entry lies within the page.
        unsafe { self.page.add(SRING_HEADER + slot * self.entry) }
    }

    /// Copies entry `slot` out of shared memory before anything looks at it, so the
    /// backend cannot change it between the check and the use.
    fn read_entry<const N: usize>(&self, slot: usize) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: within entry `slot` (N ≤ entry size).
            *b = unsafe { self.slot(slot).add(i).read_volatile() };
        }
        out
    }

    fn write_entry(&mut self, slot: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: within entry `slot` (bytes.len() ≤ entry size).
            unsafe { self.slot(slot).add(i).write_volatile(b) };
        }
    }

    /// Publishes the requests made since the last push; whether the backend wants an
    /// event (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    fn push(&self) -> bool {
        let old = self.word(REQ_PROD).load(Ordering::Relaxed);
        let new = self.ring.req_prod();
        // Release: the entries are visible before the index that announces them.
        self.word(REQ_PROD).store(new, Ordering::Release);
        core::sync::atomic::fence(Ordering::SeqCst);
        netif::needs_notify(old, new, self.word(REQ_EVENT).load(Ordering::Acquire))
    }

    /// New responses, checked against what we have outstanding.
    fn pending(&self) -> Result<u32, RingError> {
        self.ring
            .pending(self.word(RSP_PROD).load(Ordering::Acquire))
    }

    /// Asks for an event at the next response (`RING_FINAL_CHECK_FOR_RESPONSES`'s
    /// first half; the caller re-checks [`Shared::pending`] afterwards).
    fn arm(&self) {
        self.word(RSP_EVENT)
            .store(self.ring.rsp_cons().wrapping_add(1), Ordering::SeqCst);
    }
}

/// A page per ring id, and which of them the backend may reach.
struct Buffers {
    pages: Vec<*mut u8>,
    grants: BufferGrants,
    table: GrantTable,
}

/// The grant table, granting `backend` access to one set of buffer pages.
struct GrantTable {
    backend: u16,
    readonly: bool,
    pages: Vec<*mut u8>,
    /// Per page: its current reference (what `end` needs is the reference only).
    refs: Vec<u32>,
}

impl Grants for GrantTable {
    fn grant(&mut self, page: u16) -> Option<u32> {
        let p = *self.pages.get(usize::from(page))?;
        let gref = gnttab::grant_access(self.backend, p as u64, self.readonly)?;
        self.refs[usize::from(page)] = gref;
        Some(gref)
    }

    fn end(&mut self, gref: u32) -> bool {
        gnttab::end_access(gref)
    }
}

impl Buffers {
    /// `n` zeroed pages, none granted yet.
    fn new(n: u32, backend: u16, readonly: bool) -> Self {
        let pages: Vec<*mut u8> = (0..n).map(|_| page()).collect();
        Buffers {
            grants: BufferGrants::new(n as usize),
            table: GrantTable {
                backend,
                readonly,
                pages: pages.clone(),
                refs: alloc::vec![0; n as usize],
            },
            pages,
        }
    }

    /// Grants page `id` for a request; its reference.
    fn grant(&mut self, id: u16) -> Result<u32, RingError> {
        self.grants
            .grant(id, &mut self.table)
            .map_err(RingError::Grant)
    }

    /// Takes page `id` back from the backend (after its response).
    fn reclaim(&mut self, id: u16) -> Result<(), RingError> {
        self.grants
            .reclaim(id, &mut self.table)
            .map_err(RingError::Grant)
    }
}

/// The card.
pub struct Netfront {
    mac: [u8; 6],
    port: u32,
    tx: Shared,
    rx: Shared,
    tx_bufs: Buffers,
    rx_bufs: Buffers,
    tx_flight: InFlight,
    rx_flight: InFlight,
    /// Set once the backend broke the protocol: the card is dead.
    broken: Option<RingError>,
    /// TX responses reporting an error or drop.
    tx_errors: u64,
    /// What transmit may use (the backend's features, unless `offload=off`).
    tx_features: TxFeatures,
    /// Segments of one TCP flow being merged into one GSO frame (`feature-gso-tcpv4`).
    coalescer: Option<Coalescer>,
    /// GSO extra-info slots sent and not yet answered (each gets a `NETIF_RSP_NULL`).
    tx_extras: u32,
    /// Requests written but not yet announced (`req_prod`): announced once per poll.
    tx_unpushed: bool,
    /// The RX chain being received.
    rx_chain: RxChain,
    /// Buffers the chain's slots answered (ours until it ends).
    rx_held: Vec<u16>,
    /// Per RX ring slot: the buffer posted there (an extra-info slot names no id).
    rx_posted: Vec<u16>,
    /// RX buffers posted again but not yet announced.
    rx_unpushed: bool,
    counters: OffloadCounters,
}

/// What the backend takes on transmit (its `feature-*` keys in xenstore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TxFeatures {
    /// Checksum offload: TCP segments go with only the pseudo-header sum.
    csum: bool,
    /// `feature-sg`: frames in more than one page.
    sg: bool,
    /// `feature-gso-tcpv4` (with `sg` and `csum`): 64 KiB TCP segments it cuts up.
    gso: bool,
}

// SAFETY: the raw page pointers are owned by the card (nothing else uses them but the
// backend, through grants); the net task owns the card.
unsafe impl Send for Netfront {}

impl Drop for Netfront {
    fn drop(&mut self) {
        let mut kept = self.rx_bufs.grants.teardown(&mut self.rx_bufs.table).len();
        kept += self.tx_bufs.grants.teardown(&mut self.tx_bufs.table).len();
        // The pages are never freed (they came from `page()`), so a page whose grant
        // stands stays out of the heap.
        if kept > 0 {
            println!(
                "upcall: netfront: {kept} buffer grants still in use at teardown; pages leaked"
            );
        }
    }
}

impl Netfront {
    fn fail(&mut self, e: RingError) -> NicError {
        if self.broken.is_none() {
            println!("upcall: netfront: backend broke the protocol ({e}); card stopped");
            self.broken = Some(e);
        }
        NicError::Device(format!("netfront stopped: {e}"))
    }

    fn check_alive(&self) -> Result<(), NicError> {
        match self.broken {
            Some(e) => Err(NicError::Device(format!("netfront stopped: {e}"))),
            None => Ok(()),
        }
    }

    /// Posts RX buffer `id` to the backend, granting it its page.
    fn post_rx(&mut self, id: u16) -> Result<(), RingError> {
        let gref = self.rx_bufs.grant(id)?;
        let slot = self
            .rx
            .ring
            .next_request()
            .expect("an RX id is free only when its slot is");
        self.rx_flight.mark(id);
        self.rx_posted[slot] = id;
        let entry = netif::encode_rx_request(id, gref);
        self.rx.write_entry(slot, &entry);
        Ok(())
    }

    fn notify_if(&self, wanted: bool) {
        if wanted {
            events::notify(self.port);
        }
    }

    /// Ends the flight of every answered TX request.
    fn reclaim_tx(&mut self) -> Result<(), NicError> {
        loop {
            let n = self.tx.pending().map_err(|e| self.fail(e))?;
            if n == 0 {
                self.tx.arm();
                if self.tx.pending().map_err(|e| self.fail(e))? == 0 {
                    return Ok(());
                }
                continue;
            }
            for _ in 0..n {
                let slot = self.tx.ring.next_response();
                let entry: [u8; TX_ENTRY] = self.tx.read_entry(slot);
                match netif::check_tx_response(&entry, &mut self.tx_flight, &mut self.tx_extras) {
                    Ok(true) => {}
                    Ok(false) => self.tx_errors += 1,
                    Err(e) => return Err(self.fail(e)),
                }
            }
        }
    }
}

impl Netfront {
    /// Sends the batch the coalescer holds, if any.
    fn send_batch(&mut self) -> Result<(), NicError> {
        let Some(b) = self.coalescer.as_mut().and_then(Coalescer::take) else {
            return Ok(());
        };
        let gso = (b.segments > 1).then_some(b.gso_size);
        self.send(&b.frame, gso)?;
        if gso.is_some() {
            self.counters.tx_gso_frames += 1;
            self.counters.tx_gso_segments += u64::from(b.segments);
        }
        Ok(())
    }

    /// Writes the requests for one frame (one page per started 4 KiB, a GSO slot
    /// after the first when `gso_size` is given); [`Nic::flush`] announces them.
    fn send(&mut self, frame: &[u8], gso_size: Option<u16>) -> Result<(), NicError> {
        let pages = frame.len().div_ceil(PAGE);
        if frame.is_empty() || frame.len() > MAX_TX_FRAME || (pages > 1 && !self.tx_features.sg) {
            return Err(NicError::Malformed("frame larger than the card takes"));
        }
        let slots = pages + usize::from(gso_size.is_some());
        if (self.tx.ring.free() as usize) < slots {
            self.reclaim_tx()?;
        }
        if (self.tx.ring.free() as usize) < slots
            || TX_RING_SIZE as usize - self.tx_flight.count() < pages
        {
            return Err(NicError::Busy);
        }
        let mut buffers = [TxBuffer { id: 0, gref: 0 }; MAX_TX_SLOTS];
        for (i, chunk) in frame.chunks(PAGE).enumerate() {
            let id = self.tx_flight.take_free().expect("counted above");
            let page = self.tx_bufs.pages[id as usize];
            // SAFETY: `page` is this id's page (PAGE bytes, ours: the backend reads it
            // only while a request for it is in flight, and this one is not yet
            // written); `chunk` is at most PAGE bytes.
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), page, chunk.len()) };
            buffers[i] = TxBuffer {
                id,
                gref: self.tx_bufs.table.refs[id as usize],
            };
        }
        let csum = self.tx_features.csum.then(|| tso::partial_checksum(frame));
        if let Some(Some((field, pseudo))) = csum {
            let page = self.tx_bufs.pages[buffers[0].id as usize];
            for (i, b) in pseudo.to_be_bytes().into_iter().enumerate() {
                // SAFETY: the checksum field lies in the TCP header, within the first
                // 14 + 60 + 18 bytes of the frame, so within its first page (ours, as
                // above).
                unsafe { page.add(field + i).write(b) };
            }
        }
        let csum_blank = matches!(csum, Some(Some(_)));
        let chain = netif::tx_chain(frame.len(), &buffers[..pages], gso_size, csum_blank)
            .expect("pages and length checked above");
        for entry in &chain {
            let slot = self.tx.ring.next_request().expect("room checked above");
            self.tx.write_entry(slot, entry);
        }
        self.tx_extras += u32::from(gso_size.is_some());
        if pages > 1 {
            self.counters.multi_buffer_frames += 1;
        }
        self.tx_unpushed = true;
        Ok(())
    }
}

impl Nic for Netfront {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        1500
    }

    fn offloads(&self) -> Offloads {
        Offloads {
            tx_tcp_checksum: self.tx_features.csum,
            rx_tcp_checksum: false,
        }
    }

    fn offload_counters(&self) -> OffloadCounters {
        self.counters
    }

    fn max_rx_frame(&self) -> usize {
        netrx::MAX_RX_FRAME
    }

    fn can_transmit(&mut self) -> bool {
        // Room for the batch being merged and one more frame, each as large as can be.
        let need = if self.tx_features.sg {
            2 * MAX_TX_SLOTS
        } else {
            1
        };
        self.broken.is_none()
            && self.reclaim_tx().is_ok()
            && self.tx.ring.free() as usize >= need
            && TX_RING_SIZE as usize - self.tx_flight.count() >= need
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError> {
        self.check_alive()?;
        if let Some(c) = &mut self.coalescer {
            if c.push(frame) {
                return Ok(());
            }
            self.send_batch()?;
            if self.coalescer.as_mut().is_some_and(|c| c.push(frame)) {
                return Ok(());
            }
        }
        self.send(frame, None)
    }

    fn flush(&mut self) {
        if self.broken.is_some() {
            return;
        }
        // A batch that cannot go is lost like a dropped frame: TCP sends it again.
        if self.send_batch().is_err() {
            self.tx_errors += 1;
        }
        // One event per poll at most, for both rings (they share the channel).
        let mut wanted = false;
        if self.tx_unpushed {
            self.tx_unpushed = false;
            wanted |= self.tx.push();
        }
        if self.rx_unpushed {
            self.rx_unpushed = false;
            wanted |= self.rx.push();
        }
        self.notify_if(wanted);
    }

    fn receive(&mut self, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        self.check_alive()?;
        loop {
            let mut n = self.rx.pending().map_err(|e| self.fail(e))?;
            if n == 0 {
                // Ask for an event at the next response, then look once more (one that
                // arrived in between would otherwise wait for the one after it). A
                // chain half received waits for its rest the same way.
                self.rx.arm();
                n = self.rx.pending().map_err(|e| self.fail(e))?;
                if n == 0 {
                    return Ok(false);
                }
            }
            let slot = self.rx.ring.next_response();
            let entry: [u8; RX_ENTRY] = self.rx.read_entry(slot);
            let posted = self.rx_posted[slot];
            let (id, step) = self
                .rx_chain
                .push(&entry, posted, &mut self.rx_flight)
                .map_err(|e| self.fail(e))?;
            // Whatever the response says, the page must be ours again before anything
            // reads or re-posts it: end its grant (fatal if the backend still holds it).
            self.rx_bufs.reclaim(id).map_err(|e| self.fail(e))?;
            self.rx_held.push(id);
            let result = match step {
                Step::More => continue,
                Step::Frame(f) => self.deliver(&f, deliver),
                Step::Dropped(e) => Err(e),
            };
            for i in 0..self.rx_held.len() {
                let id = self.rx_held[i];
                self.post_rx(id).map_err(|e| self.fail(e))?;
            }
            self.rx_held.clear();
            self.rx_unpushed = true;
            return result.map(|()| true).map_err(|e| {
                NicError::Malformed(match e {
                    RingError::RxError(_) => "backend reported an RX error",
                    RingError::UnsupportedRxFlags(_) => "RX flags not negotiated or misplaced",
                    RingError::BadRxExtra(_) => "RX extra-info slot not asked for",
                    RingError::RxChainTooLong | RingError::RxFrameTooLong => {
                        "RX chain longer than a frame"
                    }
                    RingError::RxLengthMismatch => "RX GSO frame's length disagrees",
                    _ => "RX data outside its page",
                })
            });
        }
    }
}

impl Netfront {
    /// Hands a received frame (its buffers ours again) to `deliver`: straight from
    /// its page when it is one fragment with nothing to fill in, else put together
    /// (and its partial checksum completed) in a buffer of its own.
    fn deliver(&mut self, f: &Frame, deliver: &mut dyn FnMut(&[u8])) -> Result<(), RingError> {
        let page = |frag: &Frag| {
            let p = self.rx_bufs.pages[frag.id as usize];
            // SAFETY: offset + len ≤ PAGE (checked by `RxChain`); the page is ours: its
            // grant was ended when its slot was consumed, so the backend cannot write it.
            unsafe { core::slice::from_raw_parts(p.add(frag.offset), frag.len) }
        };
        if let [one] = f.frags.as_slice()
            && !f.csum_blank
        {
            deliver(page(one));
            return Ok(());
        }
        let mut frame = Vec::with_capacity(f.len);
        for frag in &f.frags {
            frame.extend_from_slice(page(frag));
        }
        netrx::check_frame(&frame, f.gso_size)?;
        if f.csum_blank {
            tso::complete_checksum(&mut frame);
        }
        if f.frags.len() > 1 {
            self.counters.multi_buffer_frames += 1;
        }
        if f.gso_size.is_some() {
            self.counters.rx_gso_frames += 1;
        }
        deliver(&frame);
        Ok(())
    }
}

fn on_event() {
    if let Some(id) = *NIC_ID.lock() {
        libos::net::interrupt(id);
    }
}

fn read(key: &str) -> Result<String, String> {
    xenstore::read(key).map_err(|e| format!("xenstore read {key}: {e}"))
}

fn write(key: &str, value: &str) -> Result<(), String> {
    xenstore::write(&format!("{DEVICE}/{key}"), value)
        .map_err(|e| format!("xenstore write {DEVICE}/{key}: {e}"))
}

fn state(path: &str) -> Result<XenbusState, String> {
    let v = read(path)?;
    XenbusState::parse(&v).ok_or_else(|| format!("{path}: `{v}` is not a xenbus state"))
}

/// What transmit may use: the backend's `feature-sg` and `feature-gso-tcpv4` (absent
/// means no), checksum offload unless it says `feature-no-csum-offload`; nothing with
/// `offload=off`.
fn tx_features(backend: &str) -> TxFeatures {
    let flag =
        |key: &str| xenstore::read(&format!("{backend}/{key}")).is_ok_and(|v| v.trim() == "1");
    if !libos::net::offloads_enabled() {
        return TxFeatures::default();
    }
    let csum = !flag("feature-no-csum-offload");
    let sg = flag("feature-sg");
    TxFeatures {
        csum,
        sg,
        gso: csum && sg && flag("feature-gso-tcpv4"),
    }
}

/// Sets up the card with its backend; `Ok(None)` if this domain has no `vif`.
fn connect() -> Result<Option<Netfront>, String> {
    if xenstore::read(&format!("{DEVICE}/backend-id")).is_err() {
        return Ok(None);
    }
    let backend_id: u16 = read(&format!("{DEVICE}/backend-id"))?
        .trim()
        .parse()
        .map_err(|_| "device/vif/0/backend-id is not a domain id")?;
    let backend = read(&format!("{DEVICE}/backend"))?;
    let mac_text = read(&format!("{DEVICE}/mac"))?;
    let mac = xenbus::parse_mac(&mac_text)
        .ok_or_else(|| format!("device/vif/0/mac: `{mac_text}` is not a MAC address"))?;

    let tx_features = tx_features(&backend);
    let tx = Shared::new(TX_RING_SIZE, TX_ENTRY);
    let rx = Shared::new(RX_RING_SIZE, RX_ENTRY);
    let grant = |p: *mut u8| {
        gnttab::grant_access(backend_id, p as u64, false).ok_or("out of grant references")
    };
    let (tx_ref, rx_ref) = (grant(tx.page)?, grant(rx.page)?);
    let port = events::alloc_unbound(backend_id)
        .map_err(|rc| format!("cannot allocate an event channel ({rc})"))?;
    let mut card = Netfront {
        mac,
        port,
        tx,
        rx,
        tx_bufs: Buffers::new(TX_RING_SIZE, backend_id, true),
        rx_bufs: Buffers::new(RX_RING_SIZE, backend_id, false),
        tx_flight: InFlight::new(TX_RING_SIZE as usize),
        rx_flight: InFlight::new(RX_RING_SIZE as usize),
        broken: None,
        tx_errors: 0,
        tx_features,
        coalescer: tx_features.gso.then(|| Coalescer::new(MAX_TX_FRAME)),
        tx_extras: 0,
        tx_unpushed: false,
        rx_chain: RxChain::new(),
        rx_held: Vec::with_capacity(netrx::MAX_RX_SLOTS + 1),
        rx_posted: alloc::vec![0; RX_RING_SIZE as usize],
        rx_unpushed: false,
        counters: OffloadCounters::default(),
    };
    for id in 0..TX_RING_SIZE as u16 {
        card.tx_bufs
            .grant(id)
            .map_err(|e| format!("TX buffers: {e}"))?;
    }
    for id in 0..RX_RING_SIZE as u16 {
        card.post_rx(id).map_err(|e| format!("RX buffers: {e}"))?;
    }
    let _ = card.rx.push();
    card.rx.arm();
    card.tx.arm();

    write("tx-ring-ref", &format!("{tx_ref}"))?;
    write("rx-ring-ref", &format!("{rx_ref}"))?;
    write("event-channel", &format!("{port}"))?;
    write("request-rx-copy", "1")?;
    write("feature-rx-notify", "1")?;
    // Receive: multi-slot frames, large TCP segments dom0 need not cut up (GRO-merged
    // on its NIC, or its own), and checksum offload (such frames come with only the
    // pseudo-header sum: `deliver` completes it). With `offload=off`: one slot per
    // frame and full checksums (netback then cuts and checksums for us).
    let rx_offload = if libos::net::offloads_enabled() {
        "1"
    } else {
        "0"
    };
    write("feature-sg", rx_offload)?;
    write("feature-gso-tcpv4", rx_offload)?;
    write(
        "feature-no-csum-offload",
        if rx_offload == "1" { "0" } else { "1" },
    )?;
    write("state", "4")?;

    let backend_state = format!("{backend}/state");
    let deadline = time::now_ns() + CONNECT_TIMEOUT_NS;
    loop {
        match state(&backend_state)? {
            XenbusState::Connected => break,
            s @ (XenbusState::Closing | XenbusState::Closed) => {
                return Err(format!("backend {backend} went to {s:?} during setup"));
            }
            _ if time::now_ns() > deadline => {
                return Err(format!("backend {backend} did not connect within 10 s"));
            }
            // The handshake is a one-off at boot: polling its state every 10 ms is
            // simpler than a watch and costs nothing once connected.
            _ => sched::sleep_ns(10_000_000),
        }
    }
    Ok(Some(card))
}

/// Starts netfront if this domain has a `vif`, before the application runs (so its
/// first socket finds the card). Called from `Platform::start_services` once xenstore
/// runs, in the main task: the handshake blocks it, not the CPU, while xenstore and
/// the backend answer.
pub fn start() {
    let card = match connect() {
        Ok(Some(card)) => card,
        Ok(None) => return,
        Err(e) => {
            println!("upcall: netfront: {e}");
            return;
        }
    };
    let (port, mac, tx) = (card.port, card.mac, card.tx_features);
    let Some(id) = libos::net::register_nic("netfront", Box::new(card)) else {
        println!("upcall: netfront: too many network cards");
        return;
    };
    {
        let _irqs = libos::irqflags::IrqGuard::new();
        *NIC_ID.lock() = Some(id);
    }
    if !events::register(port, on_event) {
        println!("upcall: netfront: no free event handler slot");
        return;
    }
    if libos::boot::loglevel() == libos::cmdline::LogLevel::Debug {
        let [a, b, c, d, e, f] = mac;
        println!(
            "upcall: netfront: {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x} on event channel {port}; transmit: checksum offload {}, scatter-gather {}, GSO {}",
            tx.csum, tx.sg, tx.gso
        );
    }
    // Frames may have arrived before the handler was in place.
    libos::net::interrupt(id);
}
