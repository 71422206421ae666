//! Booting several xl domains in one Xen + Linux-dom0 boot (dom0's boot costs ~5 s
//! under TCG; its domains then run one after another), and taking the console output
//! apart again per domain, each part symbolized with its own image.

use std::process::Command;
use std::time::Duration;

use crate::symbolize::Symbols;
use crate::testbed::dom0;
use crate::vmm::qemu::{self, QEMU};
use crate::vmm::xl_output;
use crate::vmm::xl_run::{self, XlDomain};
use crate::{Failure, vmm};

/// Seconds allowed for Xen and the Linux dom0 to boot, beyond the domains' own
/// timeouts, before the whole run counts as hung.
const BOOT_SECS: u64 = 90;

/// What one domain of a batch did.
#[derive(Debug)]
pub struct DomainRun {
    /// Its exit status as dom0 reported it (125 when dom0 destroyed it after its
    /// timeout); `None` if the run ended before the domain did.
    pub status: Option<i32>,
    /// Its part of the console, symbolized with its image.
    pub output: String,
    /// Whether it was started at all (an earlier domain may have ended the run).
    pub began: bool,
}

/// A finished batch.
#[derive(Debug)]
pub struct BatchRun {
    /// The domains, in the order given.
    pub domains: Vec<DomainRun>,
    /// Wall time of the whole boot.
    pub elapsed: Duration,
    /// Whether QEMU was killed after [`BOOT_SECS`] plus the domains' timeouts.
    pub timed_out: bool,
    /// The whole console output, raw (for failures outside every domain).
    pub output: String,
}

/// Boots `domains` in one dom0 boot and splits the console output per domain. QEMU is
/// killed if the run takes longer than [`BOOT_SECS`] plus the domains' timeouts.
pub fn boot(domains: &[XlDomain]) -> Result<BatchRun, Failure> {
    qemu::ensure_qemu()?;
    boot_on(&dom0::ensure_xl_testbed()?, domains)
}

/// [`boot`] on a given flavour of the Linux-dom0 test bed.
pub fn boot_on(tb: &dom0::XlTestbed, domains: &[XlDomain]) -> Result<BatchRun, Failure> {
    let run = xl_run::xl_run_qemu_args(tb, domains)?;
    let timeout = BOOT_SECS
        + domains
            .iter()
            .map(|d| u64::from(d.timeout_secs))
            .sum::<u64>();
    let mut cmd = Command::new(QEMU);
    cmd.args(&run.qemu_args);
    // Several images share the console: symbolize each domain's part on its own.
    let c = vmm::run_captured_symbols(cmd, Symbols::default(), timeout, false, &[])?;
    if !c.stderr.trim().is_empty() {
        eprint!("{}", c.stderr);
    }
    let parts = xl_output::split(&c.stdout, &run.names);
    let mut runs = Vec::new();
    for (part, d) in parts.into_iter().zip(domains) {
        let symbols = Symbols::load(&d.image)?;
        let output: String = part
            .output
            .lines()
            .map(|l| symbols.annotate(l) + "\n")
            .collect();
        runs.push(DomainRun {
            status: part.status,
            output,
            began: part.began,
        });
    }
    Ok(BatchRun {
        domains: runs,
        elapsed: c.elapsed,
        timed_out: c.timed_out,
        output: c.stdout,
    })
}
