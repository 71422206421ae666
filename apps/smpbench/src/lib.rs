//! `smpbench [workers=N] [units=N] [ipis=N]`: what more CPUs buy a CPU-bound app, and
//! what one CPU pays to make another one run a function.
//!
//! - **Scaling**: `workers` tasks each run `units` units of pure computation (a
//!   xorshift/multiply chain over registers: no memory traffic, no locks, no system
//!   calls), spawned together and joined; the time from the first spawn to the last
//!   join is the completion time. The total work is fixed, so on more CPUs the
//!   completion time falls as far as the host gives the vCPUs real cores. Each
//!   worker's result folds into a checksum that does not depend on the CPU count (the
//!   same work was done, whatever ran where).
//! - **IPI round trip**: the main task, pinned (preemption off), runs `ipis` times
//!   `smp::call_on(other, f)` to the next online CPU: send a call-function IPI, the
//!   other CPU (idle, halted) wakes, runs `f` in its interrupt context and empties the
//!   mailbox, the caller sees it. Skipped on one CPU.
//!
//! Times are TSC deltas read on the main task's CPU (under QEMU `-icount shift=0` the
//! TSC counts guest instructions, so they are deterministic there). Prints `key=N`
//! lines that `cargo xtask bench smp` parses:
//! `cpus=`, `workers=`, `units=`, `checksum=`, `completion_cycles=`, `cpus_used=`,
//! `ipi_round_trips=`, `ipi_cycles_per_round_trip=`, `ipi_call_function_runs=`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos::arch::rdtsc;
use libos::percpu::{self, MAX_CPUS};
use libos::sched::{self, Priority};
use libos::{preempt, println, smp};

struct Options {
    workers: u64,
    units: u64,
    ipis: u64,
}

fn parse(args: &libos::Args) -> Result<Options, &str> {
    let mut o = Options {
        workers: 4,
        units: 20_000,
        ipis: 2_000,
    };
    for arg in args.iter() {
        let (k, v) = arg.split_once('=').ok_or(arg)?;
        let n = v.parse::<u64>().map_err(|_| arg)?;
        match k {
            "workers" if (1..=64).contains(&n) => o.workers = n,
            "units" if n > 0 => o.units = n,
            "ipis" => o.ipis = n,
            _ => return Err(arg),
        }
    }
    Ok(o)
}

/// Inner iterations of one work unit.
const UNIT_STEPS: u64 = 1_000;

/// `units` units of register-only work seeded by `seed`; returns the final state.
fn work(seed: u64, units: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..units {
        for _ in 0..UNIT_STEPS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
        // Keep the loop from being folded away.
        x = core::hint::black_box(x);
    }
    x
}

/// The CPUs the workers ran on, as a bit set.
static CPUS_USED: AtomicU64 = AtomicU64::new(0);

fn scaling(o: &Options) {
    let (steals, migrations) = (sched::steals(), sched::migrations());
    let t = rdtsc();
    let handles: Vec<_> = (0..o.workers)
        .map(|i| {
            let units = o.units;
            sched::spawn("smpbench-worker", Priority::Normal, move || {
                let r = work(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1), units);
                CPUS_USED.fetch_or(1 << percpu::cpu_id(), SeqCst);
                RESULTS.fetch_xor(r.rotate_left(i as u32), SeqCst);
            })
        })
        .collect();
    for h in handles {
        h.join();
    }
    let cycles = rdtsc() - t;
    println!("steals={}", sched::steals() - steals);
    println!("migrations={}", sched::migrations() - migrations);
    println!("checksum={:#018x}", RESULTS.load(SeqCst));
    println!("completion_cycles={cycles}");
    println!("cpus_used={}", CPUS_USED.load(SeqCst).count_ones());
}

/// The workers' results, folded.
static RESULTS: AtomicU64 = AtomicU64::new(0);

/// Times the call-function handler ran (the IPI's far end).
static CALLS: AtomicU64 = AtomicU64::new(0);

fn on_other_cpu() {
    CALLS.fetch_add(1, SeqCst);
}

fn ipi_round_trip(o: &Options) {
    if percpu::online_cpus() < 2 || o.ipis == 0 {
        println!("smpbench: IPI round trip skipped (needs 2 CPUs and ipis > 0)");
        println!("ipi_round_trips=0");
        return;
    }
    // Pinned for the whole measurement: the caller's CPU and the target stay apart.
    let pinned = preempt::preempt_disable();
    let me = pinned.cpu();
    let target = (1..MAX_CPUS as u32)
        .map(|d| (me + d) % MAX_CPUS as u32)
        .find(|&c| percpu::cpu(c).is_some_and(|a| a.is_online()))
        .expect("a second CPU is online");
    // One warm-up call (first touch of the mailbox and the handler's code).
    smp::call_on(target, on_other_cpu);
    let before = CALLS.load(SeqCst);
    let t = rdtsc();
    for _ in 0..o.ipis {
        smp::call_on(target, on_other_cpu);
    }
    let cycles = rdtsc() - t;
    drop(pinned);
    println!("ipi_from_cpu={me} ipi_to_cpu={target}");
    println!("ipi_round_trips={}", o.ipis);
    println!("ipi_cycles_per_round_trip={}", cycles / o.ipis);
    println!("ipi_call_function_runs={}", CALLS.load(SeqCst) - before);
}

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(bad) => {
            println!("smpbench: bad argument `{bad}` (workers=1..64 units=N ipis=N)");
            return 2;
        }
    };
    println!("cpus={}", percpu::online_cpus());
    println!("workers={}", o.workers);
    println!("units={} steps_per_unit={UNIT_STEPS}", o.units);
    scaling(&o);
    ipi_round_trip(&o);
    println!("smpbench: done");
    0
}
