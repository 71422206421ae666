//! The xenstore client: read, write, directory, watches, transactions over the shared
//! ring, plus the `control/shutdown` watch that lets `xl shutdown`/`xl reboot` stop the
//! app cleanly.
//!
//! One reader task owns the response ring: replies go to the (single) requester in
//! flight if their id matches (`xs_client` does the matching: a stray reply is dropped
//! and counted, never handed to the next request), watch events to a channel. Requests
//! are serialized by a sleeping mutex. Tasks wait for ring space or data on a wait
//! queue that the store's event channel wakes. Every reply is checked by `xs_proto`; a
//! corrupt ring or malformed reply is an error for the caller, never a crash, and
//! after a ring error every request fails at once (none waits for a reader that is
//! gone).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libos::irqflags::IrqGuard;
use libos::println;
use libos::sched::{self, Priority, WaitQueue};
use libos::sync::{Channel, Mutex};

use crate::abi::{self, xenstore_domain_interface};
use crate::ring;
use crate::xs_client::{Matcher, Route};
use crate::xs_proto::{self as proto, Error, Header, MsgType};

const REQ_OFFSET: usize = offset_of!(xenstore_domain_interface, req);
const RSP_OFFSET: usize = offset_of!(xenstore_domain_interface, rsp);
const RING_SIZE: usize = abi::XENSTORE_RING_SIZE;
const REQ_CONS: usize = offset_of!(xenstore_domain_interface, req_cons);
const REQ_PROD: usize = offset_of!(xenstore_domain_interface, req_prod);
const RSP_CONS: usize = offset_of!(xenstore_domain_interface, rsp_cons);
const RSP_PROD: usize = offset_of!(xenstore_domain_interface, rsp_prod);

static RING_VA: AtomicU64 = AtomicU64::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);
static RING_EVENTS: WaitQueue = WaitQueue::new();
/// The outstanding request's reply (at most one message is ever in it).
static REPLIES: Channel<Result<Vec<u8>, Error>> = Channel::new();
/// Request/reply matching; taken with irqs off (the reader and requesters share it).
static MATCHER: spinning_top::Spinlock<Matcher> = spinning_top::Spinlock::new(Matcher::new());
/// Watches by token: each watcher has its own channel of fired paths.
static WATCHES: spinning_top::Spinlock<Vec<(String, Arc<Channel<String>>)>> =
    spinning_top::Spinlock::new(Vec::new());
static REQUEST: Mutex<()> = Mutex::new(());

fn index(offset: usize) -> &'static AtomicU32 {
    // SAFETY: the ring page is mapped for the domain's lifetime; the indices are
    // naturally aligned u32s shared with xenstored, accessed atomically.
    unsafe { AtomicU32::from_ptr((RING_VA.load(Ordering::Relaxed) as usize + offset) as *mut u32) }
}

fn ring_bytes(offset: usize) -> &'static mut [u8] {
    // SAFETY: `req` or `rsp` of the mapped ring page; `req` is only written by the
    // requester holding REQUEST, `rsp` only read by the reader task.
    unsafe {
        core::slice::from_raw_parts_mut(
            (RING_VA.load(Ordering::Relaxed) as usize + offset) as *mut u8,
            RING_SIZE,
        )
    }
}

fn on_event() {
    RING_EVENTS.wake_all();
}

/// Blocks until `ready()` holds, re-checked after every store event.
///
/// The store's event channel is bound to vCPU 0, and the waiter may run on another
/// one: `ready()` is checked again once the task is registered on [`RING_EVENTS`], or
/// an event that [`on_event`] handled between the first check and the registration
/// (finding no waiter) would leave the task blocked with its data in the ring.
fn wait_until(ready: impl Fn() -> bool) {
    loop {
        let irqs = IrqGuard::new();
        if ready() {
            return;
        }
        sched::block_on_unless(&irqs.token(), &RING_EVENTS, &ready);
    }
}

fn write_all(mut bytes: &[u8]) -> Result<(), Error> {
    let (cons, prod) = (index(REQ_CONS), index(REQ_PROD));
    while !bytes.is_empty() {
        // Wake for room, or for impossible indices (which `produce` then reports).
        wait_until(|| {
            ring::space(
                prod.load(Ordering::Acquire),
                cons.load(Ordering::Acquire),
                RING_SIZE as u32,
            ) != Ok(0)
        });
        let (p, n) = ring::produce(
            ring_bytes(REQ_OFFSET),
            prod.load(Ordering::Acquire),
            cons.load(Ordering::Acquire),
            bytes,
        )
        .map_err(|_| Error::CorruptRing)?;
        prod.store(p, Ordering::Release);
        crate::events::notify(PORT.load(Ordering::Relaxed));
        bytes = &bytes[n..];
    }
    Ok(())
}

fn read_exact(mut out: &mut [u8]) -> Result<(), Error> {
    let (cons, prod) = (index(RSP_CONS), index(RSP_PROD));
    while !out.is_empty() {
        wait_until(|| prod.load(Ordering::Acquire) != cons.load(Ordering::Acquire));
        let (c, n) = ring::consume(
            ring_bytes(RSP_OFFSET),
            cons.load(Ordering::Acquire),
            prod.load(Ordering::Acquire),
            out,
        )
        .map_err(|_| Error::CorruptRing)?;
        cons.store(c, Ordering::Release);
        crate::events::notify(PORT.load(Ordering::Relaxed));
        out = &mut out[n..];
    }
    Ok(())
}

fn read_message() -> Result<(Header, Vec<u8>), Error> {
    let mut hdr = [0u8; proto::HEADER_LEN];
    read_exact(&mut hdr)?;
    let h = proto::parse_header(&hdr)?;
    let mut payload = alloc::vec![0u8; h.len as usize];
    read_exact(&mut payload)?;
    Ok((h, payload))
}

/// The reader task: demultiplexes replies and watch events until the ring breaks.
fn reader() {
    loop {
        let route = match read_message() {
            Ok((h, p)) => {
                let _irqs = IrqGuard::new();
                MATCHER.lock().on_message(&h, &p)
            }
            Err(e) => {
                println!("upcall: xenstore: {e}; the client stops");
                fail(e);
                return;
            }
        };
        match route {
            Route::Reply(r) => REPLIES.send(r),
            Route::Watch(path, token) => {
                let _irqs = IrqGuard::new();
                let watcher = WATCHES
                    .lock()
                    .iter()
                    .find(|(t, _)| *t == token)
                    .map(|(_, c)| c.clone());
                match watcher {
                    Some(ch) => ch.send(path),
                    None => println!("upcall: xenstore: event for unknown watch `{token}`"),
                }
            }
            Route::Dropped(why) => println!("upcall: xenstore: dropped a message ({why})"),
        }
    }
}

/// The ring broke with `e`: the outstanding request (if any) gets the error, later
/// ones fail at once.
fn fail(e: Error) {
    let outstanding = {
        let _irqs = IrqGuard::new();
        MATCHER.lock().fail(e.clone())
    };
    if outstanding {
        REPLIES.send(Err(e));
    }
}

/// Whether this domain has a xenstore ring (an xl domU has; dom0 of the fast path not).
pub fn available() -> bool {
    RING_VA.load(Ordering::Relaxed) != 0
}

fn request(ty: MsgType, tx: u32, parts: &[&str], last_raw: bool) -> Result<Vec<u8>, Error> {
    if !available() {
        return Err(Error::Xenstored("no xenstore in this domain".into()));
    }
    let _serialized = REQUEST.lock();
    let id = {
        let _irqs = IrqGuard::new();
        MATCHER.lock().begin(ty)?
    };
    let sent = proto::encode(ty, id, tx, parts, last_raw).and_then(|msg| write_all(&msg));
    if let Err(e) = sent {
        if e == Error::CorruptRing {
            fail(e.clone());
        }
        let abandoned = {
            let _irqs = IrqGuard::new();
            MATCHER.lock().abandon(id)
        };
        if !abandoned {
            // The reply (or the ring error) was already routed to us: take it, so it
            // cannot be read as the answer to a later request.
            let _ = REPLIES.recv();
        }
        return Err(e);
    }
    REPLIES.recv()
}

/// Reads a value.
pub fn read(path: &str) -> Result<String, Error> {
    proto::value(&request(MsgType::Read, 0, &[path], false)?)
}

/// Writes a value.
pub fn write(path: &str, value: &str) -> Result<(), Error> {
    request(MsgType::Write, 0, &[path, value], true).map(drop)
}

/// Lists a directory.
pub fn directory(path: &str) -> Result<Vec<String>, Error> {
    proto::directory(&request(MsgType::Directory, 0, &[path], false)?)
}

/// Starts a transaction; returns its id.
pub fn transaction_start() -> Result<u32, Error> {
    proto::transaction_id(&request(MsgType::TransactionStart, 0, &[""], false)?)
}

/// Ends transaction `tx`, committing it or not. `EAGAIN` means: retry the transaction.
pub fn transaction_end(tx: u32, commit: bool) -> Result<(), Error> {
    request(
        MsgType::TransactionEnd,
        tx,
        &[if commit { "T" } else { "F" }],
        false,
    )
    .map(drop)
}

/// A registered watch: [`Watch::next`] blocks until the watched path (or one below)
/// changes. xenstored also fires once right after registration.
#[derive(Debug)]
pub struct Watch {
    events: Arc<Channel<String>>,
}

impl Watch {
    /// Waits for the next change; returns the path that fired.
    pub fn next(&self) -> String {
        self.events.recv()
    }
}

/// Watches `path` (and below) under `token` (unique per watch).
pub fn watch(path: &str, token: &str) -> Result<Watch, Error> {
    let events = Arc::new(Channel::new());
    {
        let _irqs = IrqGuard::new();
        WATCHES.lock().push((token.into(), events.clone()));
    }
    request(MsgType::Watch, 0, &[path, token], false)?;
    Ok(Watch { events })
}

/// Starts the client on the ring at `ring_va` with event channel `port`, and the
/// `control/shutdown` watcher.
pub fn start(ring_va: u64, port: u32) {
    RING_VA.store(ring_va, Ordering::Relaxed);
    PORT.store(port, Ordering::Relaxed);
    if !crate::events::register(port, on_event) {
        println!("upcall: xenstore: no free event handler slot");
        return;
    }
    drop(sched::spawn("xenstore", Priority::High, reader));
    drop(sched::spawn(
        "shutdown-watch",
        Priority::High,
        shutdown_watch,
    ));
    drop(sched::spawn(
        "balloon-target",
        Priority::Normal,
        crate::balloon_target::run,
    ));
}

/// Waits for the toolstack's `control/shutdown` request and stops the domain the way
/// it asks (`xl shutdown` → poweroff, `xl reboot` → reboot).
fn shutdown_watch() {
    let watch = match watch("control/shutdown", "upcall-shutdown") {
        Ok(w) => w,
        Err(e) => {
            println!("upcall: xenstore: cannot watch control/shutdown: {e}");
            return;
        }
    };
    loop {
        let _ = watch.next();
        let request = match read("control/shutdown") {
            Ok(v) => v,
            Err(Error::Xenstored(e)) if e == "ENOENT" => continue,
            Err(e) => {
                println!("upcall: xenstore: reading control/shutdown: {e}");
                continue;
            }
        };
        let reason = match request.as_str() {
            "" => continue,
            "poweroff" | "halt" => abi::SHUTDOWN_poweroff,
            "reboot" => abi::SHUTDOWN_reboot,
            other => {
                println!("upcall: ignoring unsupported shutdown request `{other}`");
                let _ = write("control/shutdown", "");
                continue;
            }
        };
        // Acknowledge (as Linux does), then stop.
        let _ = write("control/shutdown", "");
        println!("upcall: the toolstack asked for `{request}`; stopping");
        crate::platform::shutdown_now(reason);
    }
}
