//! Booting KVM-platform images on QEMU: the command line, streaming the console with
//! symbolized backtraces, a timeout, and decoding the exit status.

use std::path::Path;
use std::process::Command;

use crate::vmm::{self, RunResult};
use crate::{Accel, Failure, MachineArg, host};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The qboot firmware from Debian's qemu-system-data.
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// Status for "the guest ended without reporting an exit status".
pub const NO_STATUS: u8 = 125;

/// How to boot.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Accelerator; `None` = detect.
    pub accel: Option<Accel>,
    /// Machine type and firmware.
    pub machine: MachineArg,
    /// Guest RAM in MiB.
    pub memory: u32,
    /// Seconds before the guest is killed (0 = never).
    pub timeout: u64,
    /// Print the command instead of running it.
    pub dry_run: bool,
    /// Extra QEMU arguments (e.g. `-icount`).
    pub extra: Vec<String>,
    /// Host ports forwarded to the guest; non-empty adds a virtio-net card on QEMU's
    /// user-mode network.
    pub forwards: Vec<Forward>,
    /// Virtual CPUs (`-smp`); 1 keeps QEMU's single-CPU default.
    pub smp: u32,
}

/// Transport of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One `--forward [udp:]HOSTPORT:GUESTPORT`: 127.0.0.1:HOSTPORT on the host reaches
/// GUESTPORT in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// TCP or UDP.
    pub proto: Proto,
    /// The port on the host's 127.0.0.1.
    pub host: u16,
    /// The port in the guest.
    pub guest: u16,
}

impl std::str::FromStr for Forward {
    type Err = String;

    fn from_str(s: &str) -> Result<Forward, String> {
        let (proto, ports) = match s.split_once(':') {
            Some(("udp", rest)) => (Proto::Udp, rest),
            Some(("tcp", rest)) => (Proto::Tcp, rest),
            _ => (Proto::Tcp, s),
        };
        let bad = || format!("`{s}`: expected [tcp:|udp:]HOSTPORT:GUESTPORT, e.g. 8080:80");
        let (host, guest) = ports.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
        Ok(Forward {
            proto,
            host: port(host)?,
            guest: port(guest)?,
        })
    }
}

impl Forward {
    /// QEMU's `hostfwd=` value (to the guest's default address, slirp's first lease).
    fn hostfwd(&self) -> String {
        self.hostfwd_to("")
    }

    /// QEMU's `hostfwd=` value forwarding to `guest_ip`.
    pub fn hostfwd_to(&self, guest_ip: &str) -> String {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        format!(
            "hostfwd={proto}:127.0.0.1:{}-{guest_ip}:{}",
            self.host, self.guest
        )
    }
}

/// QEMU arguments for a virtio-net card on user-mode networking with `forwards`:
/// virtio-mmio on microvm (modern, version 2: the driver speaks virtio 1.x only),
/// virtio-pci elsewhere.
pub fn network_args(machine: MachineArg, forwards: &[Forward]) -> Vec<String> {
    if forwards.is_empty() {
        return Vec::new();
    }
    let netdev = std::iter::once("user,id=net0".to_string())
        .chain(forwards.iter().map(Forward::hostfwd))
        .collect::<Vec<_>>()
        .join(",");
    let mut a = vec!["-netdev".to_string(), netdev];
    match machine {
        MachineArg::Microvm => a.extend(
            [
                "-global",
                "virtio-mmio.force-legacy=false",
                "-device",
                "virtio-net-device,netdev=net0",
            ]
            .map(String::from),
        ),
        MachineArg::Qboot | MachineArg::Pc => {
            a.extend(["-device", "virtio-net-pci,netdev=net0"].map(String::from))
        }
    }
    a
}

/// Most vCPUs `--smp` accepts (libos's `MAX_CPUS`).
pub const MAX_SMP: u32 = 16;

/// Parses `--smp N`: 1..=MAX_SMP, with a clear error otherwise.
pub fn parse_smp(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a CPU count (want 1..={MAX_SMP})"))?;
    if (1..=MAX_SMP).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} CPUs is out of range: libos supports 1..={MAX_SMP}"
        ))
    }
}

impl RunOpts {
    /// Options for automated runs: detected accelerator, 128 MiB, a timeout.
    pub fn for_tests(machine: MachineArg, timeout: u64) -> Self {
        RunOpts {
            accel: None,
            machine,
            memory: 128,
            timeout,
            dry_run: false,
            extra: Vec::new(),
            forwards: Vec::new(),
            smp: 1,
        }
    }

    /// The same options with `n` vCPUs.
    pub fn with_smp(mut self, n: u32) -> Self {
        self.smp = n;
        self
    }
}

/// QEMU arguments for deterministic virtual time: `-icount shift=N,sleep=off` (each
/// guest instruction advances the clock by 2^N ns; idle time is skipped). TCG only.
pub fn icount_args(shift: u32) -> Vec<String> {
    vec!["-icount".into(), format!("shift={shift},sleep=off")]
}

/// Whether `opts` asks for `-icount` (see [`icount_args`]).
fn uses_icount(opts: &RunOpts) -> bool {
    opts.extra.iter().any(|a| a == "-icount")
}

/// The accelerator to use: kvm only where the CPU shows hardware virtualization.
pub fn pick_accel(requested: Option<Accel>) -> Accel {
    requested.unwrap_or(if host::has_hw_virt() {
        Accel::Kvm
    } else {
        Accel::Tcg
    })
}

/// Makes sure QEMU is installed: on Debian as root, installs it (saying so); otherwise
/// fails with the exact command to run (exit status 2).
pub fn ensure_qemu() -> Result<(), Failure> {
    host::ensure_program(QEMU, &["qemu-system-x86"])
}

/// Joins app arguments into a kernel command line that libos splits back into the same
/// words (double quotes with `\"` and `\\` escapes).
pub fn kernel_cmdline(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && !a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
                a.clone()
            } else {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The full QEMU argument list for booting `image`.
pub fn qemu_args(image: &Path, cmdline: &str, opts: &RunOpts) -> Vec<String> {
    let accel = match pick_accel(opts.accel) {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    };
    let mut a: Vec<String> = match opts.machine {
        MachineArg::Microvm => vec!["-M".into(), "microvm".into()],
        MachineArg::Qboot => vec!["-M".into(), "pc".into(), "-bios".into(), QBOOT.into()],
        MachineArg::Pc => vec!["-M".into(), "pc".into()],
    };
    a.push("-accel".into());
    if accel == "tcg" && opts.smp > 1 {
        if uses_icount(opts) {
            // -icount cannot count instructions of vCPUs running in parallel: QEMU
            // refuses it with multi-threaded TCG. One host thread runs the vCPUs
            // round-robin instead, which keeps the counts deterministic.
            a.push("tcg,thread=single".into());
        } else {
            // One host thread per vCPU (QEMU 7.2's TCG default for x86 is one thread
            // for all vCPUs, which would serialize them).
            a.push("tcg,thread=multi".into());
        }
    } else {
        a.push(accel.into());
    }
    if opts.smp > 1 {
        a.extend(["-smp".to_string(), opts.smp.to_string()]);
    }
    a.push("-m".into());
    a.push(format!("{}M", opts.memory));
    if accel == "kvm" {
        // Plain `-cpu host` aborts on some nested/software KVMs (MSR 0x10a).
        a.extend(["-cpu", "host,-arch-capabilities"].map(String::from));
    }
    a.extend(
        [
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel",
        ]
        .map(String::from),
    );
    a.push(image.display().to_string());
    a.extend(network_args(opts.machine, &opts.forwards));
    a.extend(opts.extra.iter().cloned());
    if !cmdline.is_empty() {
        a.push("-append".into());
        a.push(cmdline.into());
    }
    a
}

/// Quotes a QEMU command for the shell.
pub fn shell_words(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,./:+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes QEMU's exit status: isa-debug-exit makes it `(v << 1) | 1`.
pub fn decode_status(qemu_status: Option<i32>) -> Option<i32> {
    qemu_status.filter(|s| s & 1 == 1).map(|s| s >> 1)
}

/// Boots `image` on QEMU and collects (and, with `echo`, streams) its console.
pub fn run_image(
    image: &Path,
    cmdline: &str,
    opts: &RunOpts,
    echo: bool,
) -> Result<RunResult, Failure> {
    ensure_qemu()?;
    let mut cmd = Command::new(QEMU);
    cmd.args(qemu_args(image, cmdline, opts));
    vmm::run_captured(cmd, image, opts.timeout, echo)?.into_result(
        // QEMU's own failures (bad option, missing file) exit 1, which would decode as a
        // guest exit status 0: do not let them pass as success.
        |c| {
            (c.stderr.contains(&format!("{QEMU}:")) && c.code == Some(1) && c.stdout.is_empty())
                .then(|| format!("{QEMU} failed to start the guest"))
        },
        decode_status,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_values_are_checked() {
        assert_eq!(parse_smp("1"), Ok(1));
        assert_eq!(parse_smp("16"), Ok(16));
        assert!(parse_smp("0").unwrap_err().contains("out of range"));
        assert!(parse_smp("17").unwrap_err().contains("out of range"));
        assert!(parse_smp("two").unwrap_err().contains("not a CPU count"));
    }

    #[test]
    fn smp_adds_cpus_and_multithreaded_tcg_only_when_asked() {
        let opts = RunOpts {
            accel: Some(Accel::Tcg),
            ..RunOpts::for_tests(MachineArg::Microvm, 0)
        };
        let one = qemu_args(Path::new("img"), "", &opts);
        assert!(
            !one.iter()
                .any(|a| a == "-smp" || a.contains("thread=multi"))
        );
        let four = qemu_args(Path::new("img"), "", &opts.clone().with_smp(4));
        let i = four.iter().position(|a| a == "-smp").expect("-smp present");
        assert_eq!(four[i + 1], "4");
        assert!(four.iter().any(|a| a == "tcg,thread=multi"));
        let counted = RunOpts {
            extra: icount_args(0),
            ..opts.with_smp(2)
        };
        let counted = qemu_args(Path::new("img"), "", &counted);
        assert!(counted.iter().any(|a| a == "tcg,thread=single"));
        assert!(!counted.iter().any(|a| a.contains("thread=multi")));
    }
}
