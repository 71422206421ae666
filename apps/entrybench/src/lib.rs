//! `entrybench`: costs of the entry core and the scheduler, as TSC deltas.
//!
//! Under QEMU `-icount shift=0` the TSC counts guest instructions, so the same image
//! prints deterministic instruction counts; without it, cycles (noisy under TCG).
//! Prints `bench NAME per_op=N ops=M` lines that `cargo xtask bench entry` parses.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};

use libos::arch::rdtsc;
use libos::println;
use libos::sched::{self, Priority};

const OPS: u64 = 2000;

fn report(name: &str, total: u64, ops: u64) {
    println!("bench {name} per_op={} ops={ops}", total / ops);
}

/// The application's entry.
pub fn main(_args: &libos::Args) -> i32 {
    // Exception round trip: probe trap (ud2) -> stub -> irqentry_enter -> irq stack -> handler ->
    // irqentry_exit -> iretq.
    let t = rdtsc();
    for _ in 0..OPS {
        libos::arch::probe_trap();
    }
    report("exception_round_trip", rdtsc() - t, OPS);

    // Task switch: two tasks yield to each other.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let other = sched::spawn("pingpong", Priority::Normal, move || {
        while !s.load(SeqCst) {
            sched::yield_now();
        }
    });
    sched::yield_now();
    let switches = sched::switches();
    let t = rdtsc();
    for _ in 0..OPS {
        sched::yield_now();
    }
    let elapsed = rdtsc() - t;
    let n = sched::switches() - switches;
    stop.store(true, SeqCst);
    other.join();
    report("task_switch", elapsed, n.max(1));

    // Timer interrupt: sleep one tick at a time; each wake is timer irq -> softirq ->
    // wake-up -> idle exit -> switch back. Reported per wake-up.
    let irqs = libos::time::timer_interrupts();
    let t = rdtsc();
    let wakes = 50;
    for _ in 0..wakes {
        sched::sleep_ns(100_000);
    }
    let elapsed = rdtsc() - t;
    println!(
        "bench timer_irqs={}",
        libos::time::timer_interrupts() - irqs
    );
    report("sleep_wake_100us", elapsed, wakes);
    0
}
