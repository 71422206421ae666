//! `sleeper [SECONDS]`: prints `sleeper: ready`, then sleeps — forever (until the
//! hypervisor's toolstack stops it, e.g. `xl shutdown`), or for SECONDS and exits 0.
#![no_std]
#![forbid(unsafe_code)]

use libos::println;

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let seconds = match args.get(0).map(str::parse::<u64>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            println!("usage: sleeper [SECONDS]");
            return 2;
        }
    };
    println!("sleeper: ready");
    let start = libos::time::now_ns();
    loop {
        libos::sched::sleep_ns(1_000_000_000);
        if seconds.is_some_and(|s| libos::time::now_ns() - start >= s * 1_000_000_000) {
            println!("sleeper: done");
            return 0;
        }
    }
}
