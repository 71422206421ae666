//! The command line: every subcommand and its arguments as clap types. Each
//! subcommand's module takes its argument struct as it is.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::vmm::{self, libvirt, qemu};
use crate::{Failure, build, fuzz};

/// Upcall's developer tool. Run `cargo xtask <command> --help` for details.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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

impl From<upcall_tests::Machine> for MachineArg {
    fn from(m: upcall_tests::Machine) -> MachineArg {
        match m {
            upcall_tests::Machine::Microvm => MachineArg::Microvm,
            upcall_tests::Machine::PcQboot => MachineArg::Qboot,
            upcall_tests::Machine::PcSeabios => MachineArg::Pc,
        }
    }
}

/// Which app: a crate under apps/, or any app crate by its manifest.
#[derive(Debug, Args)]
pub struct AppArg {
    /// The app (a crate under apps/); or give --manifest-path.
    #[arg(required_unless_present = "manifest_path")]
    pub app: Option<String>,
    /// An app crate anywhere (e.g. one made by `cargo xtask new`): its Cargo.toml.
    #[arg(long, value_name = "DIR/Cargo.toml", conflicts_with = "app")]
    pub manifest_path: Option<PathBuf>,
}

impl AppArg {
    /// The app this names.
    pub fn resolve(&self) -> Result<build::App, Failure> {
        build::App::resolve(self.app.as_deref(), self.manifest_path.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an app into a bootable image and print its path.
    Build(BuildArgs),
    /// Build an app, boot it, stream its console, and exit with its exit status.
    Run(RunArgs),
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
    Libvirt(LibvirtArgs),
    /// Run host unit tests and boot every integration test on every test bed here.
    Test(TestArgs),
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

/// `cargo xtask build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Platform to build for.
    #[arg(long, value_enum, default_value_t = Platform::Kvm)]
    pub platform: Platform,
    /// Optimized build (small image, no debug assertions).
    #[arg(long)]
    pub release: bool,
}

/// `cargo xtask run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Platform to run on.
    #[arg(long, value_enum, default_value_t = Platform::Kvm)]
    pub platform: Platform,
    /// Xen: boot the app as dom0 (fast path) instead of as an `xl create` domU.
    #[arg(long)]
    pub dom0: bool,
    /// The VMM to boot on (KVM platform).
    #[arg(long, value_enum, default_value_t = vmm::Vmm::Qemu)]
    pub vmm: vmm::Vmm,
    /// QEMU accelerator [default: kvm where /proc/cpuinfo shows vmx/svm, else tcg].
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// Machine type and firmware.
    #[arg(long, value_enum, default_value_t = MachineArg::Microvm)]
    pub machine: MachineArg,
    /// Guest memory in MiB [default: the app's `[package.metadata.upcall] memory`,
    /// else 128].
    #[arg(long)]
    pub memory: Option<u32>,
    /// Virtual CPUs (1..=16): QEMU `-smp N` (with TCG, `thread=multi`) or uhyve
    /// `-c N` for the KVM image; on Xen, dom0's `dom0_max_vcpus=N` (and N QEMU CPUs)
    /// or the xl domU's `vcpus = N` (pinned to QEMU CPUs 1..=N beside dom0's CPU 0).
    #[arg(long, default_value_t = 1, value_parser = qemu::parse_smp)]
    pub smp: u32,
    /// Build with --release.
    #[arg(long)]
    pub release: bool,
    /// Kill the guest after this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Print the QEMU command line instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    /// Deterministic virtual time: QEMU `-icount shift=N,sleep=off` (each guest
    /// instruction advances the clock 2^N ns). Implies TCG; QEMU beds only (not
    /// uhyve, not the xl path, which runs multi-threaded TCG). With `--smp N` on
    /// the KVM image, QEMU runs the vCPUs round-robin on one host thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10))]
    pub icount: Option<u32>,
    /// Forward 127.0.0.1:HOSTPORT to the app's GUESTPORT (QEMU user networking with
    /// a virtio-net card; repeatable; `udp:` for UDP), e.g. `--forward 8080:80`.
    #[arg(long, value_name = "[udp:]HOSTPORT:GUESTPORT")]
    pub forward: Vec<qemu::Forward>,
    /// Start QEMU stopped with its gdb stub on a free port and print the `gdb`
    /// command that attaches (symbols from the image, a breakpoint on the app's
    /// main). KVM image on QEMU, or --platform xen --dom0.
    #[arg(long)]
    pub gdb: bool,
    /// Arguments for the app (kernel command line), after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `cargo xtask libvirt`.
#[derive(Debug, Args)]
pub struct LibvirtArgs {
    /// The app (a crate under apps/).
    pub app: String,
    #[command(flatten)]
    pub opts: libvirt::Opts,
    /// Arguments for the app (kernel command line), after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only run integration cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// With --filter: only the case whose name is exactly the filter.
    #[arg(long, requires = "filter")]
    pub exact: bool,
    /// Skip the host unit tests.
    #[arg(long)]
    pub no_host: bool,
    /// Also run the cases listed as known issues (`upcall_tests::KNOWN_ISSUES`).
    #[arg(long)]
    pub known_issues: bool,
    /// Also run the Xen-through-libvirt cases (`xen/libvirt/*`, ~30 s): the Xen
    /// test bed's libvirt flavour, whose dom0 creates domains with libvirtd (libxl).
    #[arg(long)]
    pub libvirt_xen: bool,
}

/// Test beds that xtask prepares.
#[derive(Debug, Subcommand)]
pub enum TestbedKind {
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
pub enum BenchKind {
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

/// Collapses clap's multi-line error into one line.
pub fn one_line(rendered: &str) -> String {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse_into_their_argument_types() {
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "httpd",
            "--smp",
            "2",
            "--forward",
            "8080:80",
            "--",
            "a",
            "b c",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run: {cli:?}")
        };
        assert_eq!(r.app.app.as_deref(), Some("httpd"));
        assert_eq!((r.smp, r.forward.len()), (2, 1));
        assert_eq!(r.args, ["a", "b c"]);
        let cli = Cli::try_parse_from([
            "xtask",
            "libvirt",
            "hello",
            "--machine",
            "qboot",
            "--memory",
            "64",
            "--run",
        ])
        .unwrap();
        let Command::Libvirt(l) = cli.command else {
            panic!("not libvirt: {cli:?}")
        };
        assert_eq!(
            (l.opts.machine, l.opts.memory_mb, l.opts.run),
            (MachineArg::Qboot, Some(64), true)
        );
        assert!(Cli::try_parse_from(["xtask", "run"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "test", "--exact"]).is_err());
    }

    #[test]
    fn machines_map_one_to_one() {
        use upcall_tests::Machine;
        assert_eq!(MachineArg::from(Machine::Microvm), MachineArg::Microvm);
        assert_eq!(MachineArg::from(Machine::PcQboot), MachineArg::Qboot);
        assert_eq!(MachineArg::from(Machine::PcSeabios), MachineArg::Pc);
    }
}
