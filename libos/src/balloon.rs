//! Ballooning: giving pages back to the hypervisor and taking them back, for apps and
//! for the latency proof. Platform-neutral: the backend does the hypervisor work
//! (`Platform::balloon_out`/`balloon_in`); libos keeps the pages out of the heap while
//! they are gone, so a ballooned-out page is never handed out.

use alloc::alloc::{Layout, alloc, dealloc};
use core::fmt;

use crate::console;

const PAGE: usize = 4096;

/// Why ballooning failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// This platform has no balloon (e.g. KVM).
    Unsupported,
    /// The heap has no room for that many pages.
    NoMemory,
    /// The hypervisor released or returned fewer pages than asked (`done` of `asked`).
    Partial {
        /// Pages handled.
        done: usize,
        /// Pages asked for.
        asked: usize,
    },
    /// The hypervisor refused (its error number).
    Hypervisor(i64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unsupported => write!(f, "this platform has no balloon"),
            Error::NoMemory => write!(f, "not enough free memory to balloon out"),
            Error::Partial { done, asked } => {
                write!(f, "the hypervisor handled {done} of {asked} pages")
            }
            Error::Hypervisor(rc) => write!(f, "the hypervisor refused ({rc})"),
        }
    }
}

/// How the balloon's hypercalls are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Issue {
    /// As one preemptible operation ([`crate::preempt::preemptible`]): other tasks run
    /// while it lasts, whatever the preemption model. What apps should use.
    #[default]
    Preemptible,
    /// Without the preemptible section: the hypercall still gets continued by the
    /// hypervisor, but no other task runs until it is done. For comparison only
    /// (`balloonbench`).
    Plain,
}

/// Pages currently given back to the hypervisor; `reclaim` (or drop) takes them back.
#[derive(Debug)]
pub struct Ballooned {
    base: *mut u8,
    pages: usize,
    issue: Issue,
}

impl Ballooned {
    /// Pages held out.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Takes the pages back from the hypervisor and returns them to the heap.
    pub fn reclaim(mut self) -> Result<(), Error> {
        self.take_back()
    }

    fn take_back(&mut self) -> Result<(), Error> {
        if self.pages == 0 {
            return Ok(());
        }
        let platform = console::platform().ok_or(Error::Unsupported)?;
        platform.balloon_in(self.base as u64, self.pages, self.issue)?;
        let layout = Layout::from_size_align(self.pages * PAGE, PAGE).expect("balloon layout");
        // SAFETY: `base` came from `alloc` with this layout; the platform mapped the
        // pages back, so the heap may reuse them.
        unsafe { dealloc(self.base, layout) };
        self.pages = 0;
        Ok(())
    }
}

impl Drop for Ballooned {
    fn drop(&mut self) {
        if let Err(e) = self.take_back() {
            // Leaking is the safe choice: the pages stay out of the heap.
            crate::println!(
                "upcall: balloon: cannot take {} pages back ({e}); leaking them",
                self.pages
            );
        }
    }
}

/// Gives `pages` pages of the heap back to the hypervisor (one long, preemptible
/// operation).
pub fn out(pages: usize) -> Result<Ballooned, Error> {
    out_with(pages, Issue::Preemptible)
}

/// [`out`], with the hypercalls issued as `issue` says (taking them back too).
pub fn out_with(pages: usize, issue: Issue) -> Result<Ballooned, Error> {
    let platform = console::platform().ok_or(Error::Unsupported)?;
    let layout = Layout::from_size_align(pages.max(1) * PAGE, PAGE).map_err(|_| Error::NoMemory)?;
    // SAFETY: non-zero size.
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        return Err(Error::NoMemory);
    }
    if let Err(e) = platform.balloon_out(base as u64, pages, issue) {
        // SAFETY: allocated above with this layout; still mapped (the platform undoes
        // partial work before failing).
        unsafe { dealloc(base, layout) };
        return Err(e);
    }
    Ok(Ballooned { base, pages, issue })
}

/// Balloons `pages` out and straight back in, preemptibly.
pub fn cycle(pages: usize) -> Result<(), Error> {
    cycle_with(pages, Issue::Preemptible)
}

/// [`cycle`], with the hypercalls issued as `issue` says.
pub fn cycle_with(pages: usize, issue: Issue) -> Result<(), Error> {
    out_with(pages, issue)?.reclaim()
}
