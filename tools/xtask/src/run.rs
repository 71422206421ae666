//! `cargo xtask run`: build, boot on the chosen VMM, exit with the app's status.

use std::path::Path;
use std::process::Command;

use crate::cli::RunArgs;
use crate::testbed::{dom0, xen as xen_testbed};
use crate::vmm::qemu::{self, NO_STATUS, QEMU, RunOpts};
use crate::vmm::{self, RunResult, Vmm};
use crate::vmm::{uhyve, xl_run};
use crate::{Accel, Failure, Outcome, Platform, build, fail, gdb};

/// Boots an image on `vmm`.
pub fn boot(
    vmm: Vmm,
    image: &Path,
    args: &[String],
    opts: &RunOpts,
    echo: bool,
) -> Result<RunResult, Failure> {
    match vmm {
        Vmm::Qemu => qemu::run_image(image, &qemu::kernel_cmdline(args), opts, echo),
        Vmm::Uhyve => uhyve::run_image(image, args, opts, echo),
    }
}

/// Boots a Xen-platform image: as dom0 on Xen in QEMU (`dom0`), or as a domU created
/// with `xl create` from a Linux dom0 (the users' path). Either way QEMU exits with
/// `(status << 1) | 1` (see `xen_testbed`).
pub fn boot_xen(
    image: &Path,
    args: &[String],
    opts: &RunOpts,
    dom0: bool,
    echo: bool,
) -> Result<RunResult, Failure> {
    boot_xen_with(
        image,
        args,
        opts,
        if dom0 { XenBoot::Dom0 } else { XenBoot::Xl },
        echo,
    )
}

/// How a Xen-platform image boots.
#[derive(Debug, Clone, Copy)]
pub enum XenBoot {
    /// The app is dom0.
    Dom0,
    /// The app is an `xl create`d domU.
    Xl,
}

/// [`boot_xen`] with the full choice of boot path.
pub fn boot_xen_with(
    image: &Path,
    args: &[String],
    opts: &RunOpts,
    how: XenBoot,
    echo: bool,
) -> Result<RunResult, Failure> {
    qemu::ensure_qemu()?;
    let cmdline = qemu::kernel_cmdline(args);
    let qemu_args = xen_qemu_args(image, &cmdline, opts, how)?;
    let mut cmd = Command::new(QEMU);
    cmd.args(qemu_args);
    // Xen's own log is noise for a user watching the app; tests still see it.
    vmm::run_captured_filtered(cmd, image, opts.timeout, echo, &["(XEN)"])?
        .into_result(|_| None, qemu::decode_status)
}

fn xen_qemu_args(
    image: &Path,
    cmdline: &str,
    opts: &RunOpts,
    how: XenBoot,
) -> Result<Vec<String>, Failure> {
    let mut args = match how {
        XenBoot::Dom0 => {
            let xen = xen_testbed::ensure_hypervisor()?;
            xen_testbed::dom0_qemu_args(&xen, image, cmdline, opts.memory, opts.smp)
        }
        XenBoot::Xl => {
            let tb = dom0::ensure_xl_testbed()?;
            xl_run::xl_qemu_args(
                &tb,
                image,
                cmdline,
                opts.memory.min(256),
                opts.smp,
                &opts.forwards,
            )?
        }
    };
    args.extend(opts.extra.iter().cloned());
    Ok(args)
}

/// `cargo xtask run`.
pub fn command(a: &RunArgs) -> Outcome {
    let xl = a.platform == Platform::Xen && !a.dom0;
    if a.gdb && (a.vmm == Vmm::Uhyve || xl) {
        return fail(
            "--gdb needs QEMU's gdb stub: the KVM platform on QEMU, or --platform xen \
             --dom0 (an xl domU shares its addresses with Linux dom0)",
        );
    }
    if a.icount.is_some()
        && (a.vmm == Vmm::Uhyve || xl || (a.platform == Platform::Xen && a.smp > 1))
    {
        return fail(
            "--icount needs a QEMU bed that can count instructions: the KVM platform on \
             QEMU (any --smp), or --platform xen --dom0 with one vCPU",
        );
    }
    let app = a.app.resolve()?;
    let memory = app.memory_mb(a.memory)?;
    let gdb_port = if a.gdb { Some(gdb::prepare()?) } else { None };
    let mut opts = RunOpts {
        accel: if a.icount.is_some() {
            Some(Accel::Tcg)
        } else {
            a.accel
        },
        machine: a.machine,
        memory,
        timeout: a.timeout,
        dry_run: a.dry_run,
        extra: a.icount.map(qemu::icount_args).unwrap_or_default(),
        forwards: a.forward.clone(),
        smp: a.smp,
    };
    if let Some(port) = gdb_port {
        opts.extra.extend(gdb::qemu_args(port));
    }
    build_and_run(&app, a, &opts, gdb_port)
}

/// Builds `app` and boots it as `a` says, with `opts`.
fn build_and_run(app: &build::App, a: &RunArgs, opts: &RunOpts, gdb_port: Option<u16>) -> Outcome {
    let RunArgs {
        platform,
        vmm,
        dom0,
        release,
        ref args,
        ..
    } = *a;
    if platform != Platform::Kvm && vmm == Vmm::Uhyve {
        return fail("uhyve runs KVM-platform images only (drop --platform or use --vmm qemu)");
    }
    if dom0 && platform != Platform::Xen {
        return fail("--dom0 is for --platform xen");
    }
    let networked = match platform {
        Platform::Kvm => vmm == Vmm::Qemu,
        Platform::Xen => !dom0,
    };
    if !opts.forwards.is_empty() && !networked {
        return fail(
            "--forward needs the KVM platform on QEMU or an xl domU (uhyve and a dom0 app have no network card here)",
        );
    }
    let image = build::build_app(app, platform, release)?;
    if platform == Platform::Xen {
        if opts.dry_run {
            let cmdline = qemu::kernel_cmdline(args);
            println!(
                "{}",
                qemu::shell_words(
                    QEMU,
                    &xen_qemu_args(
                        &image,
                        &cmdline,
                        opts,
                        if dom0 { XenBoot::Dom0 } else { XenBoot::Xl }
                    )?
                )
            );
            return Ok(0);
        }
        print_forwards(&opts.forwards);
        if let Some(port) = gdb_port {
            crate::gdb::announce(&image, &app.name, port);
        }
        return finish(boot_xen(&image, args, opts, dom0, true)?, opts);
    }
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
    print_forwards(&opts.forwards);
    if let Some(port) = gdb_port {
        crate::gdb::announce(&image, &app.name, port);
    }
    finish(boot(vmm, &image, args, opts, true)?, opts)
}

/// Tells the user where the forwarded ports are.
fn print_forwards(forwards: &[qemu::Forward]) {
    for f in forwards {
        match f.proto {
            qemu::Proto::Tcp => eprintln!(
                "xtask: 127.0.0.1:{} forwards to guest tcp port {} (e.g. http://127.0.0.1:{}/)",
                f.host, f.guest, f.host
            ),
            qemu::Proto::Udp => eprintln!(
                "xtask: 127.0.0.1:{} forwards to guest udp port {}",
                f.host, f.guest
            ),
        }
    }
}

/// The exit status of `run` for a finished guest.
fn finish(r: RunResult, opts: &RunOpts) -> Outcome {
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
