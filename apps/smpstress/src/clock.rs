//! The clock phase: one task per CPU reads the monotonic clock over and over and moves
//! to the next CPU every few reads. Each CPU reads its own clock record (Xen's
//! per-vCPU `vcpu_time_info`, kvmclock, the TSC); time must still never go backwards
//! for a task that moved between two reads.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos::sched::{self, Priority};
use libos::{percpu, println, time};

/// Reads per task.
const READS: u64 = 2000;
/// Reads between two moves.
const MOVE_EVERY: u64 = 8;

/// What the phase counted; `backwards` reads were below the task's previous one.
pub struct Outcome {
    pub reads: u64,
    pub moves: u64,
    pub backwards: u64,
}

/// Runs the phase.
pub fn run() -> Outcome {
    let cpus = percpu::online_cpus().max(1);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let tasks: Vec<_> = (0..cpus)
        .map(|_| {
            let counts = counts.clone();
            sched::spawn("clock", Priority::Normal, move || {
                let (mut last, mut moves, mut backwards) = (time::now_ns(), 0u64, 0u64);
                for i in 1..=READS {
                    if i % MOVE_EVERY == 0 && cpus > 1 {
                        let to = (percpu::cpu_id() + 1) % cpus;
                        if sched::migrate_to(to) {
                            moves += 1;
                        }
                    }
                    let now = time::now_ns();
                    if now < last {
                        backwards += 1;
                        if backwards <= 3 {
                            println!(
                                "smpstress: clock went back {} ns on CPU {}",
                                last - now,
                                percpu::cpu_id()
                            );
                        }
                    }
                    last = now;
                }
                counts[0].fetch_add(moves, SeqCst);
                counts[1].fetch_add(backwards, SeqCst);
            })
        })
        .collect();
    tasks.into_iter().for_each(sched::JoinHandle::join);
    Outcome {
        reads: READS * u64::from(cpus),
        moves: counts[0].load(SeqCst),
        backwards: counts[1].load(SeqCst),
    }
}
