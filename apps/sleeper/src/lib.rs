//! `sleeper [SECONDS [ALLOC_MIB]]`: prints `sleeper: ready`, then sleeps — forever
//! (until the hypervisor's toolstack stops it, e.g. `xl shutdown`), or for SECONDS and
//! exits 0. With ALLOC_MIB it then allocates that much memory, writes and reads it back
//! (after `xl mem-set` down and up, this needs the memory that came back), and exits 1
//! if it cannot.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use libos::println;

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let number = |i: usize| args.get(i).map(str::parse::<u64>).transpose();
    let (Ok(seconds), Ok(alloc_mib)) = (number(0), number(1)) else {
        println!("usage: sleeper [SECONDS [ALLOC_MIB]]");
        return 2;
    };
    println!("sleeper: ready");
    let start = libos::time::now_ns();
    loop {
        libos::sched::sleep_ns(1_000_000_000);
        if seconds.is_some_and(|s| libos::time::now_ns() - start >= s * 1_000_000_000) {
            break;
        }
    }
    if let Some(mib) = alloc_mib {
        if !allocate(mib as usize) {
            println!("sleeper: cannot allocate {mib} MiB");
            return 1;
        }
        println!("sleeper: allocated, wrote and read back {mib} MiB");
    }
    println!("sleeper: done");
    0
}

/// Allocates `mib` MiB, stamps every 4 KiB page with its index and checks the stamps.
fn allocate(mib: usize) -> bool {
    let words = mib << 17;
    let mut v: Vec<u64> = Vec::new();
    if v.try_reserve_exact(words).is_err() {
        return false;
    }
    v.resize(words, 0);
    for (i, page) in v.chunks_mut(512).enumerate() {
        page[0] = i as u64;
    }
    v.chunks(512)
        .enumerate()
        .all(|(i, page)| page[0] == i as u64)
}
