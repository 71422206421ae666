//! The `selftest` app's xenstore check: writes from a task on every vCPU to a path
//! that two watches observe, so that replies and watch events arrive back to back
//! (on vCPU 0, where the store's event channel is bound) while the reader task, often
//! on another vCPU, goes back to wait for the next message. A wake-up lost in that
//! window stalls the client for good; the check reports the stall instead of hanging
//! (every request is made by a task: the checking task only watches the progress).

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use libos::percpu::{CpuId, online_cpus};
use libos::sched::{self, Priority};

use crate::xenstore;

/// The watched path (under the domain's own `data/`, which it may write).
const PATH: &str = "data/upcall-xs-check";
/// Watches on it: each write is answered by a reply and then this many events.
const WATCHES: u32 = 2;
/// Writes each writer task makes (one writer per vCPU).
const WRITES: u32 = 20;
/// The check fails if no reply or watch event arrives for this long: a stall, not
/// slowness (one request takes milliseconds even under TCG on a loaded host).
const STALL_NS: u64 = 20_000_000_000;

/// Runs the check if this domain has a xenstore (an xl domU; dom0 of the fast path
/// has none).
///
/// Context: task context, after `start_services`.
pub fn self_check(check: &mut dyn FnMut(&str, bool, core::fmt::Arguments<'_>)) {
    if !xenstore::available() {
        return;
    }
    let cpus = online_cpus().max(1);
    let started = libos::time::now_ns();
    let progress = Arc::new(AtomicU32::new(0));
    let failures = Arc::new(AtomicU32::new(0));
    // Set before the last write: each watcher ends at the event that write fires.
    let ended = Arc::new(AtomicBool::new(false));
    let (writers_done, watchers_done) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut tasks = Vec::new();
    for k in 0..WATCHES {
        let (progress, failures) = (progress.clone(), failures.clone());
        let (ended, done) = (ended.clone(), watchers_done.clone());
        tasks.push(sched::spawn("xs-watch", Priority::Normal, move || {
            let _end = Finished(&done);
            let watch = match xenstore::watch(PATH, &format!("upcall-xs-check-{k}")) {
                Ok(w) => w,
                Err(_) => {
                    failures.fetch_add(1, Relaxed);
                    return;
                }
            };
            // (xenstored fires a new watch once at once, then once per write.)
            while !ended.load(Relaxed) {
                watch.next();
                progress.fetch_add(1, Relaxed);
            }
        }));
    }
    for cpu in 0..cpus {
        let (progress, failures, done) = (progress.clone(), failures.clone(), writers_done.clone());
        tasks.push(sched::spawn("xs-write", Priority::Normal, move || {
            let _end = Finished(&done);
            sched::migrate_to(cpu as CpuId);
            for i in 0..WRITES {
                if xenstore::write(PATH, &format!("{cpu}.{i}")).is_err() {
                    failures.fetch_add(1, Relaxed);
                }
                progress.fetch_add(1, Relaxed);
            }
        }));
    }
    // The watchers end only after `ended`: first the writers, then the last write.
    let mut stalled = !wait_while_progressing(&progress, || writers_done.load(Relaxed) == cpus);
    if !stalled {
        ended.store(true, Relaxed);
        let (p, f) = (progress.clone(), failures.clone());
        tasks.push(sched::spawn("xs-write", Priority::Normal, move || {
            if xenstore::write(PATH, "end").is_err() {
                f.fetch_add(1, Relaxed);
            }
            p.fetch_add(1, Relaxed);
        }));
        stalled = !wait_while_progressing(&progress, || watchers_done.load(Relaxed) == WATCHES);
    }
    let ms = (libos::time::now_ns() - started) / 1_000_000;
    check(
        "xen: xenstore: writes and watch events from a task on every vCPU",
        !stalled && failures.load(Relaxed) == 0,
        format_args!(
            "{cpus} writers x {WRITES} writes, {WATCHES} watches: {} replies and events, \
             {} failed requests in {ms} ms{}",
            progress.load(Relaxed),
            failures.load(Relaxed),
            if stalled {
                "; STALLED: nothing for 20 s (a lost wake-up of the xenstore reader?)"
            } else {
                ""
            }
        ),
    );
    if !stalled {
        tasks.into_iter().for_each(sched::JoinHandle::join);
    }
}
/// Counts its task as finished when dropped (at the task's end, however it ends).
struct Finished<'a>(&'a AtomicU32);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// Waits until `done()`; returns false if `progress` stood still for [`STALL_NS`].
fn wait_while_progressing(progress: &AtomicU32, done: impl Fn() -> bool) -> bool {
    let (mut seen, mut since) = (progress.load(Relaxed), libos::time::now_ns());
    while !done() {
        let now = progress.load(Relaxed);
        if now != seen {
            (seen, since) = (now, libos::time::now_ns());
        } else if libos::time::now_ns() - since > STALL_NS {
            return false;
        }
        sched::sleep_ns(10_000_000);
    }
    true
}
