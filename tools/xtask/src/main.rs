//! `cargo xtask`: every Upcall workflow (build, run, test, bench) in one CLI.

mod bench;
mod bench_goals;
mod bench_preempt;
mod bench_smp;
mod bench_soak;
mod bench_xen_boot;
mod build;
mod child;
mod deb_deps;
mod fuzz;
mod gdb;
mod host;
mod initramfs;
mod libvirt;
mod libvirt_bench;
mod libvirt_test;
mod libvirt_testbed;
mod libvirt_xen;
mod netbench;
mod netbench_load;
mod nettest;
mod new;
mod nginx_guest;
mod noinstr;
mod qemu;
mod run;
mod stub_elf;
mod symbolize;
mod test;
mod toolchain;
mod uhyve;
mod usertest;
mod vmm;
mod xen_net;
mod xen_stub_elf;
mod xen_testbed;
mod xl_batch;
mod xl_output;
mod xl_run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Upcall's developer tool. Run `cargo xtask <command> --help` for details.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Hypervisor platform an image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Platform {
    /// KVM: QEMU (PVH boot) and, later, uhyve.
    Kvm,
    /// Xen PV (64-bit paravirtualized guest).
    Xen,
}

impl Platform {
    /// The name used in paths and messages.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Kvm => "kvm",
            Platform::Xen => "xen",
        }
    }
}

/// QEMU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// Software emulation (always available).
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

/// Machine (and firmware) QEMU boots the image on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MachineArg {
    /// `-M microvm`, no firmware (fastest).
    Microvm,
    /// `-M pc` with the qboot firmware.
    Qboot,
    /// `-M pc` with the default SeaBIOS.
    Pc,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an app into a bootable image and print its path.
    Build {
        /// The app (a crate under apps/); or give --manifest-path.
        #[arg(required_unless_present = "manifest_path")]
        app: Option<String>,
        /// An app crate anywhere (e.g. one made by `cargo xtask new`): its Cargo.toml.
        #[arg(long, value_name = "DIR/Cargo.toml", conflicts_with = "app")]
        manifest_path: Option<PathBuf>,
        /// Platform to build for.
        #[arg(long, value_enum, default_value_t = Platform::Kvm)]
        platform: Platform,
        /// Optimized build (small image, no debug assertions).
        #[arg(long)]
        release: bool,
    },
    /// Build an app, boot it, stream its console, and exit with its exit status.
    Run {
        /// The app (a crate under apps/); or give --manifest-path.
        #[arg(required_unless_present = "manifest_path")]
        app: Option<String>,
        /// An app crate anywhere (e.g. one made by `cargo xtask new`): its Cargo.toml.
        #[arg(long, value_name = "DIR/Cargo.toml", conflicts_with = "app")]
        manifest_path: Option<PathBuf>,
        /// Platform to run on.
        #[arg(long, value_enum, default_value_t = Platform::Kvm)]
        platform: Platform,
        /// Xen: boot the app as dom0 (fast path) instead of as an `xl create` domU.
        #[arg(long)]
        dom0: bool,
        /// The VMM to boot on (KVM platform).
        #[arg(long, value_enum, default_value_t = vmm::Vmm::Qemu)]
        vmm: vmm::Vmm,
        /// QEMU accelerator [default: kvm where /proc/cpuinfo shows vmx/svm, else tcg].
        #[arg(long, value_enum)]
        accel: Option<Accel>,
        /// Machine type and firmware.
        #[arg(long, value_enum, default_value_t = MachineArg::Microvm)]
        machine: MachineArg,
        /// Guest memory in MiB [default: the app's `[package.metadata.upcall] memory`,
        /// else 128].
        #[arg(long)]
        memory: Option<u32>,
        /// Virtual CPUs (1..=16): QEMU `-smp N` (with TCG, `thread=multi`) or uhyve
        /// `-c N` for the KVM image; on Xen, dom0's `dom0_max_vcpus=N` (and N QEMU CPUs)
        /// or the xl domU's `vcpus = N` (pinned to QEMU CPUs 1..=N beside dom0's CPU 0).
        #[arg(long, default_value_t = 1, value_parser = qemu::parse_smp)]
        smp: u32,
        /// Build with --release.
        #[arg(long)]
        release: bool,
        /// Kill the guest after this many seconds (0 = never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
        /// Print the QEMU command line instead of running it.
        #[arg(long)]
        dry_run: bool,
        /// Deterministic virtual time: QEMU `-icount shift=N,sleep=off` (each guest
        /// instruction advances the clock 2^N ns). Implies TCG; QEMU beds only (not
        /// uhyve, not the xl path, which runs multi-threaded TCG). With `--smp N` on
        /// the KVM image, QEMU runs the vCPUs round-robin on one host thread.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10))]
        icount: Option<u32>,
        /// Forward 127.0.0.1:HOSTPORT to the app's GUESTPORT (QEMU user networking with
        /// a virtio-net card; repeatable; `udp:` for UDP), e.g. `--forward 8080:80`.
        #[arg(long, value_name = "[udp:]HOSTPORT:GUESTPORT")]
        forward: Vec<qemu::Forward>,
        /// Start QEMU stopped with its gdb stub on a free port and print the `gdb`
        /// command that attaches (symbols from the image, a breakpoint on the app's
        /// main). KVM image on QEMU, or --platform xen --dom0.
        #[arg(long)]
        gdb: bool,
        /// Arguments for the app (kernel command line), after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Create a new app crate in DIR (anywhere, e.g. your own repository), depending on
    /// this libos by path; build and boot it with `--manifest-path DIR/Cargo.toml`.
    New {
        /// The app's package name.
        name: String,
        /// The directory to create (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        path: PathBuf,
    },
    /// Print the libvirt domain XML that runs an app (no raw QEMU arguments); with
    /// `--run`, start it on this host's libvirt and exit with the app's status.
    Libvirt {
        /// The app (a crate under apps/).
        app: String,
        /// Platform the image is built for.
        #[arg(long, value_enum, default_value_t = Platform::Kvm)]
        platform: Platform,
        /// Machine type and firmware (KVM): `pc` is SeaBIOS, what Nova and oVirt use.
        #[arg(long, value_enum, default_value_t = MachineArg::Pc)]
        machine: MachineArg,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1, value_parser = qemu::parse_smp)]
        smp: u32,
        /// Memory in MiB [default: the app's declared memory, else 128].
        #[arg(long)]
        memory: Option<u32>,
        /// A managed tap: the host side gets HOST_IP/24, the guest `ip=GUEST_IP/24
        /// gw=HOST_IP` (KVM, machine pc or qboot).
        #[arg(long, value_name = "tap:HOST_IP/GUEST_IP")]
        net: Option<libvirt::TapNet>,
        /// Build with --release.
        #[arg(long)]
        release: bool,
        /// Start it (`virsh create`), follow its console, exit with the app's status.
        #[arg(long)]
        run: bool,
        /// With --run: destroy the domain after this many seconds (0 = never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
        /// Arguments for the app (kernel command line), after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run host unit tests and boot every integration test on every test bed here.
    Test {
        /// Only run integration cases whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// With --filter: only the case whose name is exactly the filter.
        #[arg(long, requires = "filter")]
        exact: bool,
        /// Skip the host unit tests.
        #[arg(long)]
        no_host: bool,
        /// Also run the cases listed as known issues (`upcall_tests::KNOWN_ISSUES`).
        #[arg(long)]
        known_issues: bool,
        /// Also run the Xen-through-libvirt cases (`xen/libvirt/*`, ~30 s): the Xen
        /// test bed's libvirt flavour, whose dom0 creates domains with libvirtd (libxl).
        #[arg(long)]
        libvirt_xen: bool,
    },
    /// Benchmarks; results go to target/bench/ as JSON and Markdown.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
    /// Download and assemble a test bed (cached under target/testbed/).
    Testbed {
        #[command(subcommand)]
        which: TestbedKind,
    },
    /// Append function names to the backtrace lines of a console log.
    Symbolize {
        /// The image the log came from.
        image: PathBuf,
        /// The log file (default: standard input).
        log: Option<PathBuf>,
    },
    /// Run clippy on the host crates and on the bare-metal target, denying warnings.
    Clippy,
    /// Coverage-guided fuzzing (cargo-fuzz, nightly for this command only); writes
    /// target/fuzz/report.md.
    Fuzz(fuzz::Args),
    /// Check that non-instrumentable entry code calls nothing outside `.noinstr.text`.
    CheckNoinstr {
        /// The app whose image is checked.
        #[arg(default_value = "selftest")]
        app: String,
        /// Check the release build.
        #[arg(long)]
        release: bool,
    },
}

/// Test beds that xtask prepares.
#[derive(Debug, Subcommand)]
enum TestbedKind {
    /// Xen 4.17 under QEMU: the hypervisor, plus a Linux dom0 that runs apps with `xl create`.
    Xen,
    /// libvirt on this host (Debian packages, no systemd): installs, configures and
    /// starts virtlogd and libvirtd.
    Libvirt {
        /// Stop the daemons instead.
        #[arg(long)]
        stop: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// Boot-to-exit time of `hello` against a do-nothing image, plus instruction counts and sizes.
    Boot {
        /// Runs of each image (interleaved).
        #[arg(long, default_value_t = 15)]
        runs: usize,
    },
    /// Entry-core costs: exception round trip, task switch, timer wake-up.
    Entry,
    /// Wake-up latency per preemption model and platform, raw vs model-following
    /// reschedule, plus balloon throughput preemptible vs plain (JSON, Markdown, SVG).
    Preempt,
    /// Xen: `xl create` to first console line of `hello` against a minimal PV kernel
    /// (both xl domUs of one Linux-dom0 boot; ratio of medians, image sizes).
    XenBoot {
        /// Runs of each image (interleaved).
        #[arg(long, default_value_t = 15)]
        runs: usize,
        /// Memory of each domain in MiB.
        #[arg(long, default_value_t = 128)]
        memory: u32,
    },
    /// SMP on QEMU: completion time of a fixed CPU-bound job (`smpbench`) on 1, 2 and 4
    /// vCPUs (speed-up against what the host's cores allow) and the call-function IPI
    /// round trip, timed (multi-threaded TCG) and counted (-icount, deterministic).
    Smp {
        /// Timed runs of each vCPU count (interleaved; medians).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// `httpd` vs Linux + nginx (and busybox httpd) on the same setup, on KVM (QEMU) and
    /// as Xen xl domUs: wrk and ab rows, requests/s, MiB/s, CPU per request, goals.
    Net {
        /// Skip the Xen pair (it boots the Linux-dom0 test bed twice).
        #[arg(long)]
        kvm_only: bool,
    },
    /// `httpd` under steady `ab -k` load mixed with idle and slow clients: requests/s,
    /// failed requests and heap in use over time, heap slope, plot (KVM over a TAP
    /// device; `--xen` adds an xl domU). Needs root (TAP).
    Soak {
        /// Minutes per bed (60 for a full run).
        #[arg(long, default_value_t = 2)]
        minutes: u32,
        /// Also soak an xl domU on the Xen test bed.
        #[arg(long)]
        xen: bool,
    },
}

/// Guest memory (MiB) of `cargo xtask run` unless the app or `--memory` says otherwise.
const DEFAULT_MEMORY_MB: u32 = 128;

/// `--memory`, else the app's declared memory, else [`DEFAULT_MEMORY_MB`].
fn app_memory(app: &build::App, memory: Option<u32>) -> Result<u32, Failure> {
    match memory {
        Some(m) => Ok(m),
        None => build::app_meta(app).map(|m| m.memory_mb.unwrap_or(DEFAULT_MEMORY_MB)),
    }
}

/// A failure with a one-line message and an exit status.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, one line.
    pub message: String,
    /// Process exit status.
    pub status: u8,
}

/// Result of a subcommand: the exit status to end with.
pub type Outcome = Result<u8, Failure>;

/// Shorthand for a failure with status 1.
pub fn fail<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        message: message.into(),
        status: 1,
    })
}

fn main() -> ExitCode {
    child::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Build {
            app,
            manifest_path,
            platform,
            release,
        } => build::App::resolve(app.as_deref(), manifest_path.as_deref()).and_then(|app| {
            build::build_app(&app, platform, release).map(|_| {
                println!(
                    "{}",
                    build::image_paths(&app.name, platform, release).0.display()
                );
                0
            })
        }),
        Command::New { name, path } => new::command(&name, &path),
        Command::Run {
            app,
            manifest_path,
            platform,
            vmm,
            dom0,
            accel,
            machine,
            memory,
            smp,
            release,
            timeout,
            dry_run,
            icount,
            forward,
            gdb,
            args,
        } => {
            let xl = platform == Platform::Xen && !dom0;
            if gdb && (vmm == vmm::Vmm::Uhyve || xl) {
                fail(
                    "--gdb needs QEMU's gdb stub: the KVM platform on QEMU, or --platform xen \
                     --dom0 (an xl domU shares its addresses with Linux dom0)",
                )
            } else if icount.is_some()
                && (vmm == vmm::Vmm::Uhyve || xl || (platform == Platform::Xen && smp > 1))
            {
                fail(
                    "--icount needs a QEMU bed that can count instructions: the KVM platform on \
                     QEMU (any --smp), or --platform xen --dom0 with one vCPU",
                )
            } else {
                build::App::resolve(app.as_deref(), manifest_path.as_deref()).and_then(|app| {
                    app_memory(&app, memory).and_then(|memory| {
                        let gdb_port = if gdb { Some(gdb::prepare()?) } else { None };
                        let mut opts = qemu::RunOpts {
                            accel: if icount.is_some() {
                                Some(Accel::Tcg)
                            } else {
                                accel
                            },
                            machine,
                            memory,
                            timeout,
                            dry_run,
                            extra: icount.map(qemu::icount_args).unwrap_or_default(),
                            forwards: forward,
                            smp,
                        };
                        if let Some(port) = gdb_port {
                            opts.extra.extend(gdb::qemu_args(port));
                        }
                        run::build_and_run(
                            &app, platform, vmm, dom0, release, &args, &opts, gdb_port,
                        )
                    })
                })
            }
        }
        Command::Test {
            filter,
            exact,
            no_host,
            known_issues,
            libvirt_xen,
        } => test::run(filter.as_deref(), exact, no_host, known_issues, libvirt_xen),
        Command::Bench {
            which: BenchKind::Boot { runs },
        } => bench::boot(runs),
        Command::Bench {
            which: BenchKind::Entry,
        } => bench::entry(),
        Command::Bench {
            which: BenchKind::Preempt,
        } => bench_preempt::preempt(),
        Command::Bench {
            which: BenchKind::XenBoot { runs, memory },
        } => bench_xen_boot::run(runs, memory),
        Command::Bench {
            which: BenchKind::Smp { runs },
        } => bench_smp::run(runs),
        Command::Bench {
            which: BenchKind::Net { kvm_only },
        } => netbench::net(kvm_only),
        Command::Bench {
            which: BenchKind::Soak { minutes, xen },
        } => bench_soak::soak(minutes, xen),
        Command::Testbed {
            which: TestbedKind::Xen,
        } => xen_testbed::command(),
        Command::Libvirt {
            app,
            platform,
            machine,
            smp,
            memory,
            net,
            release,
            run,
            timeout,
            args,
        } => build::App::in_repo(&app)
            .and_then(|a| app_memory(&a, memory))
            .and_then(|memory_mb| {
                let opts = libvirt::Opts {
                    platform,
                    machine,
                    smp,
                    memory_mb,
                    net,
                    release,
                    run,
                    timeout,
                };
                libvirt::command(&app, &args, &opts)
            }),
        Command::Testbed {
            which: TestbedKind::Libvirt { stop },
        } => libvirt_testbed::command(stop),
        Command::Symbolize { image, log } => symbolize::command(&image, log.as_deref()),
        Command::Clippy => host::clippy(),
        Command::Fuzz(args) => fuzz::command(args),
        Command::CheckNoinstr { app, release } => noinstr::command(&app, release),
    };
    match outcome {
        Ok(status) => ExitCode::from(status),
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

/// Collapses clap's multi-line error into one line.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .collect::<Vec<_>>()
        .join(" ")
        + " (see `cargo xtask --help`)"
}
