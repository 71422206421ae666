//! `hello`: greets, prints its arguments, exits 0.
#![no_std]
#![forbid(unsafe_code)]

use libos::println;

/// The application's entry.
pub fn main(args: &libos::Args) -> i32 {
    println!("Hello from Upcall on {}", libos::platform_name());
    for (i, arg) in args.iter().enumerate() {
        println!("arg[{i}] = {arg}");
    }
    0
}
