//! `cargo xtask run`: build, boot on the chosen VMM, exit with the app's status.

use crate::qemu::{self, NO_STATUS, QEMU, RunOpts};
use crate::vmm::{RunResult, Vmm};
use crate::{Failure, Outcome, Platform, build, fail, uhyve};

/// Boots an image on `vmm`.
pub fn boot(
    vmm: Vmm,
    image: &std::path::Path,
    args: &[String],
    opts: &RunOpts,
    echo: bool,
) -> Result<RunResult, Failure> {
    match vmm {
        Vmm::Qemu => qemu::run_image(image, &qemu::kernel_cmdline(args), opts, echo),
        Vmm::Uhyve => uhyve::run_image(image, args, opts, echo),
    }
}

/// `cargo xtask run`.
pub fn build_and_run(
    app: &str,
    platform: Platform,
    vmm: Vmm,
    release: bool,
    args: &[String],
    opts: &RunOpts,
) -> Outcome {
    if platform != Platform::Kvm && vmm == Vmm::Uhyve {
        return fail("uhyve runs KVM-platform images only (drop --platform or use --vmm qemu)");
    }
    let image = build::build(app, platform, release)?;
    if opts.dry_run {
        let line = match vmm {
            Vmm::Qemu => qemu::shell_words(
                QEMU,
                &qemu::qemu_args(&image, &qemu::kernel_cmdline(args), opts),
            ),
            Vmm::Uhyve => qemu::shell_words("uhyve", &uhyve::uhyve_args(&image, args, opts)),
        };
        println!("{line}");
        return Ok(0);
    }
    let r = boot(vmm, &image, args, opts, true)?;
    if r.timed_out {
        eprintln!("xtask: guest killed after the {} s timeout", opts.timeout);
        return Ok(NO_STATUS);
    }
    match r.status {
        Some(code) => Ok(u8::try_from(code).unwrap_or(NO_STATUS)),
        None => {
            eprintln!(
                "xtask: the guest ended without reporting an exit status (triple fault or reset?)"
            );
            Ok(NO_STATUS)
        }
    }
}
