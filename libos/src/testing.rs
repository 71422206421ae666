//! A tiny in-guest test harness: one line per check, then `N passed, N failed`.
//!
//! The exit code [`Checker::finish`] returns is 0 iff every check passed, so the
//! image's exit status carries the result.
#![forbid(unsafe_code)]

use crate::println;

/// Counts and prints checks.
#[derive(Debug, Default)]
pub struct Checker {
    passed: u32,
    failed: u32,
}

impl Checker {
    /// A checker with no results yet.
    pub const fn new() -> Self {
        Checker {
            passed: 0,
            failed: 0,
        }
    }

    /// Records one check; `detail` is printed with a failure.
    pub fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
            println!("ok   {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }

    /// Records `got == want`.
    pub fn check_eq<T: PartialEq + core::fmt::Debug>(&mut self, name: &str, got: T, want: T) {
        let ok = got == want;
        self.check(name, ok, format_args!("got {got:?}, want {want:?}"));
    }

    /// Prints the summary line; returns the exit code (0 iff nothing failed).
    pub fn finish(self) -> i32 {
        println!("{} passed, {} failed", self.passed, self.failed);
        i32::from(self.failed != 0)
    }
}
