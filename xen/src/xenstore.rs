//! The xenstore client: read, write, directory, watches, transactions over the shared
//! ring, plus the `control/shutdown` watch that lets `xl shutdown`/`xl reboot` stop the
//! app cleanly.
//!
//! One reader task owns the response ring: replies go to the (single) requester in
//! flight, watch events to a channel. Requests are serialized by a sleeping mutex.
//! Tasks wait for ring space or data on a wait queue that the store's event channel
//! wakes. Every reply is checked by `xs_proto`; a corrupt ring or malformed reply is an
//! error for the caller, never a crash.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libos::irqflags::IrqGuard;
use libos::println;
use libos::sched::{self, Priority, WaitQueue};
use libos::sync::{Channel, Mutex};

use crate::ring;
use crate::xs_proto::{self as proto, Error, Header, MsgType};

const REQ_OFFSET: usize = 0;
const RSP_OFFSET: usize = 1024;
const RING_SIZE: usize = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;

static RING_VA: AtomicU64 = AtomicU64::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);
static RING_EVENTS: WaitQueue = WaitQueue::new();
static REPLIES: Channel<Result<(Header, Vec<u8>), Error>> = Channel::new();
/// Watches by token: each watcher has its own channel of fired paths.
static WATCHES: spinning_top::Spinlock<Vec<(String, Arc<Channel<String>>)>> =
    spinning_top::Spinlock::new(Vec::new());
static REQUEST: Mutex<u32> = Mutex::new(0);

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
fn wait_until(ready: impl Fn() -> bool) {
    loop {
        let irqs = IrqGuard::new();
        if ready() {
            return;
        }
        sched::block_on(&irqs.token(), &RING_EVENTS);
    }
}

fn write_all(mut bytes: &[u8]) -> Result<(), Error> {
    let (cons, prod) = (index(REQ_CONS), index(REQ_PROD));
    while !bytes.is_empty() {
        wait_until(|| {
            prod.load(Ordering::Acquire)
                .wrapping_sub(cons.load(Ordering::Acquire))
                < RING_SIZE as u32
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
        match read_message() {
            Ok((h, p)) if h.ty == MsgType::WatchEvent as u32 => match proto::watch_event(&p) {
                Ok((path, token)) => {
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
                Err(e) => println!("upcall: xenstore: dropped a watch event: {e}"),
            },
            Ok(reply) => REPLIES.send(Ok(reply)),
            Err(e) => {
                println!("upcall: xenstore: {e}; the client stops");
                REPLIES.send(Err(e));
                return;
            }
        }
    }
}

fn request(ty: MsgType, tx: u32, parts: &[&str], last_raw: bool) -> Result<Vec<u8>, Error> {
    if RING_VA.load(Ordering::Relaxed) == 0 {
        return Err(Error::Xenstored("no xenstore in this domain".into()));
    }
    let mut id = REQUEST.lock();
    *id = id.wrapping_add(1);
    write_all(&proto::encode(ty, *id, tx, parts, last_raw)?)?;
    let (h, payload) = REPLIES.recv()?;
    proto::check_reply(ty, &h, &payload)?;
    if h.req_id != *id {
        return Err(Error::Malformed("reply to another request"));
    }
    Ok(payload)
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
            "poweroff" | "halt" => xen_sys::SHUTDOWN_poweroff,
            "reboot" => xen_sys::SHUTDOWN_reboot,
            other => {
                println!("upcall: ignoring unsupported shutdown request `{other}`");
                let _ = write("control/shutdown", "");
                continue;
            }
        };
        // Acknowledge (as Linux does), then stop.
        let _ = write("control/shutdown", "");
        println!("upcall: the toolstack asked for `{request}`; stopping");
        crate::pv::shutdown_now(reason);
    }
}
