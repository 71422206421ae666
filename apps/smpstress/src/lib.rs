//! `smpstress [tasks=N] [rounds=N] [section_ticks=N] [lock_ops=N] [limit_s=N]`: many
//! tasks doing preemptible sections while they migrate between CPUs all the time, then
//! a lock-contention phase, in bounded time.
//!
//! Each of `tasks` workers runs `rounds` rounds of: a preemptible section of
//! `section_ticks` ticks scrubbing its own buffer (interrupts preempt it there under
//! every model, and it resumes on whichever CPU picks it: a task is forced onto the
//! next CPU's run queue every 16 turns there, and every other round after it);
//! a check of the buffer; an increment of a shared counter under a sleeping mutex held
//! across a yield (lock contention on the wait queues and the scheduler's queue); a
//! heap allocation (the heap's spin lock); a token passed around a ring of channels
//! (cross-CPU wake-ups: a lost one stalls the ring); a yield. A high-priority auditor
//! wakes every half tick on whatever CPU and checks that CPU's in-preemptible flag is
//! clear (it never runs in a section, so a set flag there leaked from a task that moved
//! on: Bilse, "Updates to Xen hypercall preemption", xen-devel, 2023-06-21). Workers
//! check the flag is set all through their section, on every
//! CPU it visits, and clear after it. A watchdog ends the run after `limit_s` seconds
//! if the ring stalls (lost wake-up or deadlock); the contention phase has as long.
//!
//! Then [`contention`]: two tasks per CPU, `lock_ops` operations each, on one spin lock,
//! one mutex and the scheduler (yields, spawn + join); every count must come out exact.
//!
//! With `hcall_resched=cpuflag` (test-only) the flag stays with the CPU instead of the
//! task (that thread's bug), and `flag_errors` must show it.
//!
//! Prints `key=N` lines (`flag_errors`, `data_errors`, `section_migrations`, ...) and
//! exits 0 iff nothing went wrong.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod clock;
mod contention;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use libos::preempt;
use libos::sched::{self, Priority};
use libos::sync::{Channel, Mutex};
use libos::{percpu, println, time};

struct Options {
    tasks: usize,
    rounds: u64,
    section_ticks: u64,
    lock_ops: u64,
    limit_s: u64,
}

fn parse(args: &libos::Args) -> Result<Options, &str> {
    let mut o = Options {
        tasks: 8,
        rounds: 20,
        section_ticks: 2,
        lock_ops: 400,
        limit_s: 60,
    };
    for arg in args.iter() {
        let (k, v) = arg.split_once('=').ok_or(arg)?;
        let n = v.parse::<u64>().map_err(|_| arg)?;
        match k {
            "tasks" if (2..=64).contains(&n) => o.tasks = n as usize,
            "rounds" if n > 0 => o.rounds = n,
            "section_ticks" if n > 0 => o.section_ticks = n,
            "lock_ops" if n > 0 => o.lock_ops = n,
            "limit_s" if n > 0 => o.limit_s = n,
            _ => return Err(arg),
        }
    }
    Ok(o)
}

/// What went right and wrong, from all tasks.
#[derive(Default)]
struct Stats {
    flag_errors: AtomicU64,
    data_errors: AtomicU64,
    section_migrations: AtomicU64,
    migrations: AtomicU64,
    forced_moves: AtomicU64,
    audits: AtomicU64,
    finished: AtomicU64,
}

const WORDS: usize = 2048;

fn seed(task: usize) -> u64 {
    0x9e37_79b9_7f4a_7c15u64.wrapping_mul(task as u64 + 1) | 1
}

/// Moves the running task to the next CPU's run queue (`sched::migrate_to`).
fn migrate_off(stats: &Stats) {
    let cpus = percpu::online_cpus();
    // (The CPU may change between this read and the move; then the target can be the
    // CPU the task is on, and nothing happens.)
    if cpus > 1 && sched::migrate_to((percpu::cpu_id() + 1) % cpus) {
        stats.forced_moves.fetch_add(1, SeqCst);
    }
}

fn worker(
    i: usize,
    o: &Options,
    stats: &Stats,
    counter: &Mutex<u64>,
    mine: &Channel<(usize, u64)>,
    next: &Channel<(usize, u64)>,
) {
    let n = o.tasks;
    let mut buf = vec![seed(i); WORDS];
    let mut turns = 0u32;
    let section_ns = o.section_ticks * time::tick_ns();
    for r in 0..o.rounds {
        let before = percpu::cpu_id();
        let first_turn = turns;
        // Long in-kernel work, preemptible whatever the model.
        preempt::preemptible(|| {
            let end = time::now_ns() + section_ns;
            while time::now_ns() < end {
                buf.iter_mut().for_each(|w| *w = w.rotate_left(1));
                turns += 1;
                // (Also after the section's first pass: on a slow CPU, such as uhyve's
                // emulated ring 0, a section may last fewer than 16 passes.)
                if turns.is_multiple_of(16) || turns == first_turn + 1 {
                    // Forced off this CPU mid-section: the flag must go along.
                    migrate_off(stats);
                } else if turns.is_multiple_of(8) {
                    // Long in-kernel work may also give the CPU up itself: the
                    // scheduler, not only the interrupt exit, must carry the flag.
                    sched::yield_now();
                }
                if !preempt::in_preemptible() {
                    // The flag did not follow us to this CPU.
                    stats.flag_errors.fetch_add(1, SeqCst);
                }
            }
        });
        let after = percpu::cpu_id();
        if after != before {
            stats.section_migrations.fetch_add(1, SeqCst);
        }
        if r % 2 == 1 {
            // Every other round, between sections too (placement prefers the CPU a
            // task ran on last, so without this most tasks would stay put).
            migrate_off(stats);
        }
        if preempt::in_preemptible() {
            stats.flag_errors.fetch_add(1, SeqCst);
        }
        let want = seed(i).rotate_left(turns % 64);
        if buf.iter().any(|&w| w != want) {
            stats.data_errors.fetch_add(1, SeqCst);
        }
        {
            let mut g = counter.lock();
            let v = *g;
            sched::yield_now();
            *g = v + 1;
        }
        let scratch = vec![r as u8; 1000 + i * 37];
        if scratch.iter().any(|&b| b != r as u8) {
            stats.data_errors.fetch_add(1, SeqCst);
        }
        drop(scratch);
        next.send((i, r));
        let (from, round) = mine.recv();
        if from != (i + n - 1) % n || round != r {
            stats.data_errors.fetch_add(1, SeqCst);
        }
        if percpu::cpu_id() != after {
            stats.migrations.fetch_add(1, SeqCst);
        }
        sched::yield_now();
    }
    stats.finished.fetch_add(1, SeqCst);
}

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let o = match parse(args) {
        Ok(o) => Arc::new(o),
        Err(bad) => {
            println!(
                "smpstress: bad argument `{bad}` (tasks=2..64 rounds=N section_ticks=N lock_ops=N limit_s=N)"
            );
            return 2;
        }
    };
    let cpus = percpu::online_cpus();
    println!(
        "smpstress: cpus={cpus} tasks={} rounds={} section_ticks={} model={}",
        o.tasks,
        o.rounds,
        o.section_ticks,
        preempt::setting()
    );
    let stats = Arc::new(Stats::default());
    let counter = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let auditor = {
        let (stats, stop) = (stats.clone(), stop.clone());
        sched::spawn("auditor", Priority::High, move || {
            while !stop.load(SeqCst) {
                sched::sleep_ns(time::tick_ns() / 2);
                if preempt::in_preemptible() {
                    stats.flag_errors.fetch_add(1, SeqCst);
                }
                stats.audits.fetch_add(1, SeqCst);
            }
        })
    };
    let ring: Arc<Vec<Channel<(usize, u64)>>> =
        Arc::new((0..o.tasks).map(|_| Channel::new()).collect());
    let workers: Vec<_> = (0..o.tasks)
        .map(|i| {
            let (o, stats, counter, ring) =
                (o.clone(), stats.clone(), counter.clone(), ring.clone());
            sched::spawn("worker", Priority::Normal, move || {
                let next = &ring[(i + 1) % o.tasks];
                worker(i, &o, &stats, &counter, &ring[i], next);
            })
        })
        .collect();
    let start = time::now_ns();
    let deadline = start + o.limit_s * 1_000_000_000;
    while stats.finished.load(SeqCst) < o.tasks as u64 {
        if time::now_ns() > deadline {
            println!(
                "smpstress: STUCK: {}/{} workers finished after {} s (lost wake-up or deadlock)",
                stats.finished.load(SeqCst),
                o.tasks,
                o.limit_s
            );
            return 1;
        }
        sched::sleep_ns(20_000_000);
    }
    let elapsed_ms = (time::now_ns() - start) / 1_000_000;
    workers.into_iter().for_each(sched::JoinHandle::join);
    stop.store(true, SeqCst);
    auditor.join();
    let total = *counter.lock();
    let want = o.tasks as u64 * o.rounds;
    let get = |a: &AtomicU64| a.load(SeqCst);
    println!("smpstress: done in {elapsed_ms} ms; counter {total} of {want}");
    println!("migrations={}", get(&stats.migrations));
    println!("section_migrations={}", get(&stats.section_migrations));
    println!("forced_moves={}", get(&stats.forced_moves));
    println!("steals={}", sched::steals());
    println!("audits={}", get(&stats.audits));
    println!("flag_errors={}", get(&stats.flag_errors));
    println!("data_errors={}", get(&stats.data_errors));
    let Some(locks) = contention::run(o.lock_ops, time::now_ns() + o.limit_s * 1_000_000_000)
    else {
        return 1;
    };
    println!("lock_ops={}", locks.ops);
    println!("lock_errors={}", locks.errors);
    let clock = clock::run();
    println!("clock_reads={}", clock.reads);
    println!("clock_moves={}", clock.moves);
    println!("clock_backwards={}", clock.backwards);
    let ok = total == want
        && get(&stats.flag_errors) == 0
        && get(&stats.data_errors) == 0
        && locks.errors == 0
        && clock.backwards == 0;
    println!("smpstress: {}", if ok { "ok" } else { "FAILED" });
    i32::from(!ok)
}
