//! `selftest`: in-guest checks of what libos gives every app, on every platform.
//!
//! One line per check, then `N passed, N failed`; exits 0 iff nothing failed.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod heap_touch;
mod sched_checks;
mod smp_checks;

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};

use libos::cmdline::{self, LogLevel};
use libos::testing::Checker;

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    let mut c = Checker::new();
    libos::println!(
        "selftest on {} with {} args",
        libos::platform_name(),
        args.len()
    );
    check_alloc(&mut c);
    if args.iter().any(|a| a == "touch-heap") {
        heap_touch::check(&mut c);
    }
    check_formatting(&mut c);
    check_cmdline(&mut c, args);
    check_traps(&mut c);
    check_backtrace(&mut c);
    // The platform backend's own checks (Xen: grant and revoke a page).
    c.platform_checks();
    sched_checks::run(&mut c);
    smp_checks::run(&mut c, smp_checks::expected_cpus(args));
    c.check(
        "boot: entry-to-main cycles measured",
        libos::boot::entry_to_main_cycles() > 0,
        format_args!("0 cycles"),
    );
    c.finish()
}

fn check_alloc(c: &mut Checker) {
    let v: Vec<u64> = (0..10_000).collect();
    c.check_eq("alloc: Vec of 10000", v.iter().sum::<u64>(), 49_995_000);
    let mut m = BTreeMap::new();
    for i in 0..1000u32 {
        m.insert(i.wrapping_mul(2_654_435_761), i);
    }
    c.check_eq("alloc: BTreeMap of 1000", m.len(), 1000);
    let big = vec![0xa5u8; 8 << 20];
    let ok = big.iter().step_by(4096).all(|&b| b == 0xa5);
    drop(big);
    c.check("alloc: 8 MiB buffer", ok, format_args!("contents changed"));
    let again = vec![1u8; 8 << 20];
    c.check_eq("alloc: 8 MiB again after free", again.len(), 8 << 20);
    c.check(
        "heap: at least 16 MiB",
        libos::heap::total_bytes() >= 16 << 20,
        format_args!("{} bytes", libos::heap::total_bytes()),
    );
}

fn check_formatting(c: &mut Checker) {
    c.check_eq(
        "format: integers",
        format!("{:>5}|{:#x}|{:08b}", 42, 255, 5),
        "   42|0xff|00000101".to_string(),
    );
    c.check_eq(
        "format: float",
        format!("{:.3}", core::hint::black_box(22.0f64) / 7.0),
        "3.143".to_string(),
    );
    let s: String = ["a", "b", "c"].join("-");
    c.check_eq("format: String join", s.as_str(), "a-b-c");
}

fn check_cmdline(c: &mut Checker, args: &libos::Args) {
    let parsed = cmdline::parse(r#"loglevel=debug x "y z" -- loglevel=quiet"#);
    let ok = parsed.as_ref().is_ok_and(|p| {
        p.loglevel == LogLevel::Debug && p.app_args == ["x", "y z", "loglevel=quiet"]
    });
    c.check(
        "cmdline: options, quotes and --",
        ok,
        format_args!("{parsed:?}"),
    );
    c.check(
        "cmdline: unterminated quote is an error",
        cmdline::parse(r#"a "b"#).is_err(),
        format_args!("accepted"),
    );
    // `selftest -- expect-args a b` checks the real command line reached the app.
    if args.get(0) == Some("expect-args") {
        let rest: Vec<&str> = args.iter().skip(1).collect();
        c.check(
            "cmdline: args reached the app",
            !rest.is_empty(),
            format_args!("none after expect-args"),
        );
    }
}

fn check_traps(c: &mut Checker) {
    let before = libos::trap::probes();
    libos::arch::probe_trap();
    libos::arch::probe_trap();
    c.check_eq(
        "trap: probe trap taken and resumed twice",
        libos::trap::probes() - before,
        2,
    );
    c.check_eq("trap: vector 14 is #PF", libos::trap::describe(14).0, "#PF");
}

#[inline(never)]
fn check_backtrace(c: &mut Checker) {
    let mut frames = Vec::new();
    nested_walk(&mut frames);
    c.check(
        "backtrace: frame-pointer walk finds the callers",
        frames.len() >= 3 && frames.iter().all(|&a| a != 0),
        format_args!("{frames:x?}"),
    );
}

#[inline(never)]
fn nested_walk(frames: &mut Vec<u64>) {
    libos::backtrace::walk(libos::arch::frame_pointer(), |_, ret| frames.push(ret));
}
