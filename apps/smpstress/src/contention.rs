//! The lock-contention phase: two tasks per CPU hammer the same locks at once — the
//! irq-safe spin lock (`libos::sync::SpinLock`), the sleeping mutex, and the
//! scheduler's own lock and run queues (yields, and short tasks spawned and joined).
//! Each lock guards a read-modify-write with a pause between the read and the write,
//! so a lost update shows broken mutual exclusion as a wrong count.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos::sched::{self, Priority};
use libos::sync::{Mutex, SpinLock};
use libos::{percpu, println, time};

/// The shared state all hammering tasks update.
#[derive(Default)]
struct Shared {
    spin: SpinLock<u64>,
    mutex: Mutex<u64>,
    /// Short tasks that ran to completion.
    children: AtomicU64,
    /// Hammering tasks done.
    finished: AtomicU64,
}

/// What the phase counted; `errors` is how many counts came out wrong.
pub struct Outcome {
    pub ops: u64,
    pub errors: u64,
}

/// A read-modify-write of `*v` with a pause between read and write (a lost update if
/// another CPU gets in between).
fn slow_increment(v: &mut u64) {
    let old = *v;
    for _ in 0..32 {
        core::hint::spin_loop();
    }
    *v = old + 1;
}

/// Runs the phase with `ops` operations per task; `None` if the tasks did not all
/// finish by `deadline_ns` (deadlock or lost wake-up).
pub fn run(ops: u64, deadline_ns: u64) -> Option<Outcome> {
    let tasks = 2 * u64::from(percpu::online_cpus().max(1));
    let shared = Arc::new(Shared::default());
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let shared = shared.clone();
            sched::spawn("contender", Priority::Normal, move || {
                for k in 0..ops {
                    slow_increment(&mut shared.spin.lock());
                    if k % 4 == 0 {
                        slow_increment(&mut shared.mutex.lock());
                    }
                    if k % 8 == 0 {
                        sched::yield_now();
                    }
                    if k % 32 == 0 {
                        let s = shared.clone();
                        sched::spawn("child", Priority::Normal, move || {
                            s.children.fetch_add(1, SeqCst);
                        })
                        .join();
                    }
                }
                shared.finished.fetch_add(1, SeqCst);
            })
        })
        .collect();
    while shared.finished.load(SeqCst) < tasks {
        if time::now_ns() > deadline_ns {
            println!(
                "smpstress: STUCK: {}/{tasks} contenders finished (deadlock or lost wake-up)",
                shared.finished.load(SeqCst)
            );
            return None;
        }
        sched::sleep_ns(20_000_000);
    }
    handles.into_iter().for_each(sched::JoinHandle::join);
    let want = |every: u64| tasks * ops.div_ceil(every);
    let counts = [
        ("spin lock", *shared.spin.lock(), want(1)),
        ("mutex", *shared.mutex.lock(), want(4)),
        ("spawned+joined", shared.children.load(SeqCst), want(32)),
    ];
    let mut errors = 0;
    for (what, got, want) in counts {
        println!("contention: {what}: {got} of {want}");
        errors += u64::from(got != want);
    }
    Some(Outcome {
        ops: tasks * ops,
        errors,
    })
}
