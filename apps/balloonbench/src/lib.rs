//! `balloonbench [mib=N] [rounds=N]`: what making the balloon's hypercalls preemptible
//! costs. Each round balloons `mib` MiB out and back in twice — once as one preemptible
//! operation (`libos::balloon::Issue::Preemptible`, what apps use) and once plainly
//! (`Issue::Plain`: the same hypercalls, no preemptible section) — alternating which
//! goes first. Prints the median cycle time of each and ends with
//! `balloon_mib_per_s_preemptible=X` and `balloon_mib_per_s_plain=Y` (MiB ballooned out
//! and back in per second), read by `cargo xtask bench preempt`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use libos::balloon::{self, Issue};
use libos::{println, time};

fn parse(args: &libos::Args) -> Result<(usize, usize), &str> {
    let (mut mib, mut rounds) = (32usize, 5usize);
    for arg in args.iter() {
        let (k, v) = arg.split_once('=').ok_or(arg)?;
        let n = v.parse::<usize>().ok().filter(|&n| n > 0).ok_or(arg)?;
        match k {
            "mib" => mib = n,
            "rounds" => rounds = n,
            _ => return Err(arg),
        }
    }
    Ok((mib, rounds))
}

fn median_ns(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let (mib, rounds) = match parse(args) {
        Ok(o) => o,
        Err(bad) => {
            println!("balloonbench: bad argument `{bad}` (mib=N rounds=N, N > 0)");
            return 2;
        }
    };
    println!("balloonbench: {mib} MiB out and in, {rounds} rounds per way");
    let mut times = [Vec::new(), Vec::new()];
    let ways = [Issue::Preemptible, Issue::Plain];
    for round in 0..rounds {
        for k in 0..2 {
            // Alternate the order so neither way always runs on a warmer heap.
            let way = (k + round) % 2;
            let start = time::now_ns();
            if let Err(e) = balloon::cycle_with(mib * 256, ways[way]) {
                println!("balloonbench: {:?} cycle failed: {e}", ways[way]);
                return 1;
            }
            times[way].push(time::now_ns() - start);
        }
    }
    let [pre, plain] = times.map(median_ns);
    let rate = |ns: u64| mib as f64 * 1e9 / ns.max(1) as f64;
    for (name, ns) in [("preemptible", pre), ("plain", plain)] {
        println!(
            "balloonbench: {name}: median cycle {:.2} ms, {:.0} MiB/s",
            ns as f64 / 1e6,
            rate(ns)
        );
    }
    println!("balloon_mib_per_s_preemptible={:.0}", rate(pre));
    println!("balloon_mib_per_s_plain={:.0}", rate(plain));
    0
}
