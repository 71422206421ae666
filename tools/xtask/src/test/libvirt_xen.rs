//! The opt-in Xen-through-libvirt cases (`cargo xtask test --libvirt-xen`,
//! `upcall_tests::libvirt::xen_libvirt_cases`): every domain in one boot of the Xen
//! test bed's libvirt flavour ([`crate::testbed::libvirt_xen`]), each judged on its
//! console, its exit status and what libvirt reported.

use std::time::Instant;

use upcall_tests::libvirt::XenLibvirtCase;

use crate::testbed::dom0;
use crate::testbed::libvirt_xen::{reported_events, reported_state, xl_domain};
use crate::vmm::qemu;
use crate::{Platform, build};

/// Runs the wanted Xen-through-libvirt cases (all in one dom0 boot) if `enabled`, else
/// says how to.
pub fn run_tests(
    enabled: bool,
    wanted: &dyn Fn(&str) -> bool,
    record: &mut dyn FnMut(&str, Result<String, String>),
) {
    let cases: Vec<XenLibvirtCase> = upcall_tests::libvirt::xen_libvirt_cases()
        .into_iter()
        .filter(|c| wanted(&c.case.name))
        .collect();
    if cases.is_empty() {
        return;
    }
    if !enabled {
        println!(
            "== not run (opt-in, ~30 s; --libvirt-xen runs them): {}",
            cases
                .iter()
                .map(|c| c.case.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return;
    }
    println!("== Xen platform through libvirt (libxl) in the Xen test bed's dom0");
    let start = Instant::now();
    let mut domains = Vec::new();
    for c in &cases {
        let args: Vec<String> = c.case.args.iter().map(|s| s.to_string()).collect();
        match build::build(c.case.app, Platform::Xen, c.case.release) {
            Ok(image) => domains.push(xl_domain(
                &image,
                &qemu::kernel_cmdline(&args),
                upcall_tests::XL_MEMORY_MB,
                c.case.smp,
                120,
            )),
            Err(f) => return record(&c.case.name, Err(f.message)),
        }
    }
    let tb = match dom0::ensure_libvirt_xl_testbed() {
        Ok(tb) => tb,
        Err(f) => return record("libvirt-xen test bed", Err(f.message)),
    };
    let run = match crate::vmm::xl_batch::boot_on(&tb, &domains) {
        Ok(run) => run,
        Err(f) => return record("libvirt-xen test bed", Err(f.message)),
    };
    let log = crate::test::log_path("xen/libvirt/whole-console");
    crate::test::save_log("xen/libvirt/whole-console", &run.output);
    for (k, (c, d)) in cases.iter().zip(&run.domains).enumerate() {
        crate::test::save_log(&c.case.name, &d.output);
        // As xl_run names them: the image's name, with `-K` when there are several.
        let name = if cases.len() == 1 {
            c.case.app.to_string()
        } else {
            format!("{}-{}", c.case.app, k + 1)
        };
        let events = reported_events(&d.output, &name);
        let verdict = match (d.status, reported_state(&d.output, &name)) {
            _ if !d.began => Err(format!(
                "dom0 ended before the domain began; whole console in {}",
                log.display()
            )),
            (None, _) => Err(format!(
                "the domain did not end (timed out: {}); whole console in {}",
                run.timed_out,
                log.display()
            )),
            (Some(_), state) if state != Some(c.libvirt_state) => Err(format!(
                "libvirt reported {state:?}, want `{}`",
                c.libvirt_state
            )),
            (Some(_), _) if !events.contains(&c.libvirt_event) => Err(format!(
                "libvirt's lifecycle events {events:?} lack `{}`",
                c.libvirt_event
            )),
            (Some(status), _) => upcall_tests::check(&c.case, Some(status), &d.output).map(|()| {
                format!(
                    " (libvirt: {}, {}; the boot took {:.1} s)",
                    c.libvirt_event,
                    c.libvirt_state,
                    start.elapsed().as_secs_f64()
                )
            }),
        };
        record(&c.case.name, verdict);
    }
}
