//! `latency [load=section|balloon|none] [wake=timer|event|notify] [samples=N]
//! [section_ticks=N] [balloon_mib=N] [switch=MODEL]`: the proof that long operations
//! marked preemptible let other tasks run under every preemption model, whatever wakes
//! them.
//!
//! A low-priority task runs the load in a loop — `section`: long in-kernel work (memory
//! scrubbing) inside `libos::preempt::preemptible`, each lasting `section_ticks` ticks;
//! `balloon`: balloon `balloon_mib` MiB out and back in, each a single preemptible
//! hypercall (Xen); `none`: nothing. A high-priority task sleeps one tick at a time and
//! records how late it wakes. With `switch=MODEL` (under `preempt=dynamic`) the model is
//! switched halfway. `wake=` says what wakes the sampler at each deadline: `timer` (it
//! sleeps), `event` (a real event through the platform's event path — a Xen event
//! channel, a KVM device vector — whose bottom half wakes it: `libos::test_event`) or
//! `notify` (the same event, waking it from a notify callback). Prints every sample (`late_us=…`, sorted) and percentiles, and ends
//! with `max_wake_latency_ticks=N`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use libos::preempt::{self, Model};
use libos::sched::{self, Priority};
use libos::sync::Mutex;
use libos::{println, test_event, time};

/// What wakes the sampler.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WakeBy {
    Timer,
    Event,
    Notify,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    Section,
    Balloon,
    None,
}

struct Options {
    load: Load,
    wake: WakeBy,
    samples: usize,
    section_ticks: u64,
    balloon_mib: usize,
    switch: Option<Model>,
}

fn parse(args: &libos::Args) -> Result<Options, &str> {
    let mut o = Options {
        load: Load::Section,
        wake: WakeBy::Timer,
        samples: 60,
        section_ticks: 30,
        // 5/8 of the heap (shared by the loads, one per CPU): each hypercall then spans
        // ≥ 20 ticks at the default hz=250 with the app's default 512 MiB (Xen in QEMU,
        // TCG), leaving room for the rest.
        balloon_mib: ((libos::heap::total_bytes() * 5 / 8) >> 20) as usize
            / libos::percpu::online_cpus().max(1) as usize,
        switch: None,
    };
    for arg in args.iter() {
        let (k, v) = arg.split_once('=').ok_or(arg)?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| arg);
        match k {
            "load" => {
                o.load = match v {
                    "section" => Load::Section,
                    "balloon" => Load::Balloon,
                    "none" => Load::None,
                    _ => return Err(arg),
                }
            }
            "wake" => {
                o.wake = match v {
                    "timer" => WakeBy::Timer,
                    "event" => WakeBy::Event,
                    "notify" => WakeBy::Notify,
                    _ => return Err(arg),
                }
            }
            "samples" => o.samples = num(v)?.max(1) as usize,
            "section_ticks" => o.section_ticks = num(v)?.max(1),
            "balloon_mib" => o.balloon_mib = num(v)?.max(1) as usize,
            "switch" => {
                o.switch = Some(match v {
                    "none" => Model::None,
                    "voluntary" => Model::Voluntary,
                    "full" => Model::Full,
                    _ => return Err(arg),
                })
            }
            _ => return Err(arg),
        }
    }
    Ok(o)
}

/// Long in-kernel work: scrubs a buffer in 64 KiB chunks for `ticks` ticks, inside a
/// preemptible section.
fn scrub_section(buf: &mut [u8], ticks: u64) -> u64 {
    preempt::preemptible(|| {
        let end = time::now_ns() + ticks * time::tick_ns();
        let mut passes = 0u64;
        while time::now_ns() < end {
            for chunk in buf.chunks_mut(64 * 1024) {
                chunk.fill(passes as u8);
            }
            passes += 1;
        }
        passes
    })
}

/// Runs the load until `stop`, counting itself in `started` once it is under way;
/// returns its rounds, or what went wrong.
fn run_load(
    load: Load,
    section_ticks: u64,
    balloon_mib: usize,
    stop: &AtomicBool,
    started: &AtomicUsize,
) -> Result<u64, alloc::string::String> {
    // Only the section load needs a buffer to scrub.
    let mut buf = if load == Load::Section {
        preempt::preemptible(|| alloc::vec![0u8; 4 << 20])
    } else {
        Vec::new()
    };
    let mut rounds = 0u64;
    // Writing and checking the witness is long work too: preemptible, like the load.
    let witness: Vec<u8> =
        preempt::preemptible(|| (0..(1 << 20)).map(|i| (i % 251) as u8).collect());
    started.fetch_add(1, SeqCst);
    while !stop.load(SeqCst) {
        match load {
            Load::Section => {
                scrub_section(&mut buf, section_ticks);
            }
            Load::Balloon => {
                libos::balloon::cycle(balloon_mib * 256).map_err(|e| alloc::format!("{e}"))?;
                // Data integrity: memory the app wrote is unchanged by the cycle.
                let intact = preempt::preemptible(|| {
                    witness
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == (i % 251) as u8)
                });
                if !intact {
                    return Err("data written before a balloon cycle changed".into());
                }
            }
            Load::None => sched::sleep_ns(time::tick_ns()),
        }
        rounds += 1;
        // Between rounds the load yields, as real work would: under `none` this is
        // the only other point where the sampler can run.
        sched::yield_now();
    }
    Ok(rounds)
}

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(bad) => {
            println!(
                "latency: bad argument `{bad}` (load=section|balloon|none wake=timer|event|notify samples=N section_ticks=N balloon_mib=N switch=none|voluntary|full)"
            );
            return 2;
        }
    };
    let tick = time::tick_ns();
    println!(
        "latency: load={:?} wake={:?} model={} tick={} us samples={}",
        opts.load,
        opts.wake,
        preempt::setting(),
        tick / 1000,
        opts.samples
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(Mutex::new(None));
    let rounds = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let cpus = libos::percpu::online_cpus().max(1) as usize;
    // One load per CPU, so on SMP the sampler cannot simply run on an idle CPU: every
    // CPU is busy with a load that only a preemptible section (or a yield) gives up.
    let loaders: Vec<_> = (0..cpus)
        .map(|_| {
            let (stop, failure, rounds) = (stop.clone(), failure.clone(), rounds.clone());
            let started = started.clone();
            let (load, section_ticks, balloon_mib) =
                (opts.load, opts.section_ticks, opts.balloon_mib);
            sched::spawn("load", Priority::Low, move || {
                match run_load(load, section_ticks, balloon_mib, &stop, &started) {
                    Ok(n) => {
                        rounds.fetch_add(n, SeqCst);
                    }
                    Err(e) => *failure.lock() = Some(e),
                }
            })
        })
        .collect();
    let late = Arc::new(Mutex::new(Vec::with_capacity(opts.samples)));
    let (late_s, samples, switch, wake) = (late.clone(), opts.samples, opts.switch, opts.wake);
    let unsupported = Arc::new(AtomicBool::new(false));
    let unsupported_s = unsupported.clone();
    let sampler = sched::spawn("sampler", Priority::High, move || {
        // Measure only while the loads run: wait until each has started, then give
        // them two more ticks to get going.
        while started.load(SeqCst) < cpus {
            sched::sleep_ns(time::tick_ns());
        }
        sched::sleep_ns(2 * time::tick_ns());
        for i in 0..samples {
            if i == samples / 2
                && let Some(m) = switch
            {
                match preempt::switch_dynamic(m) {
                    Ok(()) => println!("latency: switched to {}", preempt::setting()),
                    Err(e) => println!("latency: cannot switch: {e}"),
                }
            }
            let deadline = time::now_ns() + tick;
            let woken = match wake {
                WakeBy::Timer => {
                    sched::sleep_until(deadline);
                    Ok(())
                }
                WakeBy::Event => test_event::wait_at(deadline, test_event::Wake::BottomHalf),
                WakeBy::Notify => test_event::wait_at(deadline, test_event::Wake::Notify),
            };
            if woken.is_err() {
                unsupported_s.store(true, SeqCst);
                break;
            }
            late_s.lock().push(time::now_ns().saturating_sub(deadline));
        }
    });
    sampler.join();
    stop.store(true, SeqCst);
    loaders.into_iter().for_each(sched::JoinHandle::join);
    if unsupported.load(SeqCst) {
        println!(
            "latency: {}: wake={:?} cannot be measured",
            test_event::Unsupported,
            opts.wake
        );
        return 1;
    }
    if let Some(e) = failure.lock().take() {
        println!("latency: the load failed: {e}");
        return 1;
    }
    // Every sample overlapped the load, and the load's own checks ran at least once
    // (a measurement taken while nothing ran would prove nothing).
    let rounds = rounds.load(SeqCst);
    if opts.load != Load::None && rounds == 0 {
        println!("latency: the load never completed a round; raise samples=");
        return 1;
    }
    println!("latency: {rounds} load rounds; data intact");
    let mut l = late.lock().clone();
    l.sort_unstable();
    // Every sample, for `cargo xtask bench preempt`'s distributions.
    let mut line = alloc::string::String::from("latency: late_us=");
    for (i, ns) in l.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        line.push_str(&alloc::format!("{sep}{}", ns / 1000));
    }
    println!("{line}");
    let pct = |p: usize| l[(l.len() - 1) * p / 100] as f64 / tick as f64;
    let max = *l.last().unwrap_or(&0);
    println!(
        "latency: late wake-ups in ticks: p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        pct(50),
        pct(90),
        pct(99),
        max as f64 / tick as f64
    );
    println!("max_wake_latency_ticks={}", max.div_ceil(tick));
    0
}
