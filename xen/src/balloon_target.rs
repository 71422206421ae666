//! The balloon's `memory/target` watch: `xl mem-set DOMAIN MIB` in dom0 writes the
//! domain's target (KiB) there; we balloon out or back in to meet it.
//!
//! Ballooned-out memory is held in libos `Ballooned` chunks of at most 2 MiB
//! (`balloon_ops::chunks`: no single heap allocation has to find the whole amount in
//! one piece; a shrink the heap cannot fully give stops at the last chunk it could);
//! growing takes whole chunks back, newest first, while they fit the target.

use alloc::vec::Vec;

use libos::balloon::{self, Ballooned};
use libos::println;

use crate::xenstore;

/// Pages the domain had at boot (its maximum: Xen does not give more than that).
static BOOT_PAGES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the domain's pages at boot.
pub fn set_boot_pages(pages: u64) {
    BOOT_PAGES.store(pages, core::sync::atomic::Ordering::Relaxed);
}

/// The watch task.
pub fn run() {
    let watch = match xenstore::watch("memory/target", "upcall-balloon") {
        Ok(w) => w,
        Err(e) => {
            println!("upcall: balloon: cannot watch memory/target: {e}");
            return;
        }
    };
    let boot_pages = BOOT_PAGES.load(core::sync::atomic::Ordering::Relaxed);
    let mut out: Vec<Ballooned> = Vec::new();
    loop {
        let _ = watch.next();
        let target_kib = match xenstore::read("memory/target").map(|v| v.trim().parse::<u64>()) {
            Ok(Ok(kib)) => kib,
            Ok(Err(_)) => {
                println!("upcall: balloon: memory/target is not a number; ignored");
                continue;
            }
            Err(_) => continue, // not set (yet)
        };
        let target = (target_kib / 4).min(boot_pages);
        let ballooned: u64 = out.iter().map(|b| b.pages() as u64).sum();
        let current = boot_pages - ballooned;
        if target < current {
            for chunk in crate::balloon_ops::chunks((current - target) as usize) {
                match balloon::out(chunk) {
                    Ok(b) => out.push(b),
                    Err(e) => {
                        println!("upcall: balloon: cannot shrink to {target_kib} KiB: {e}");
                        break;
                    }
                }
            }
        } else {
            let mut room = target - current;
            while let Some(b) = out.pop_if(|b| b.pages() as u64 <= room) {
                room -= b.pages() as u64;
                if let Err(e) = b.reclaim() {
                    println!("upcall: balloon: cannot grow: {e}");
                    break;
                }
            }
        }
        let ballooned: u64 = out.iter().map(|b| b.pages() as u64).sum();
        println!(
            "upcall: balloon: target {target_kib} KiB, now {} KiB ({} pages ballooned out)",
            (boot_pages - ballooned) * 4,
            ballooned
        );
    }
}
