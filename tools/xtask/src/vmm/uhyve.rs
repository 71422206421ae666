//! Booting KVM-platform images on uhyve (crates.io `uhyve` 0.10.0).
//!
//! The image is the same ELF QEMU boots: uhyve enters it through hermit-entry's
//! protocol. Arguments travel as uhyve's positional kernel arguments, which it joins
//! into `/chosen/bootargs`; each word is pre-quoted so libos splits them back exactly.
//! uhyve exits with the guest's exit code, except that a guest triple fault exits 0
//! and uhyve's own panics exit 101 (told apart by its stderr).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::vmm::qemu::{RunOpts, kernel_cmdline};
use crate::vmm::{self, RunResult};
use crate::{Failure, fail, host};

/// The uhyve release Upcall is tested with.
pub const VERSION: &str = "0.10.0";

/// Finds uhyve, installing it with cargo on first use (saying so); fails clearly
/// without /dev/kvm.
pub fn ensure_uhyve() -> Result<PathBuf, Failure> {
    if !Path::new("/dev/kvm").exists() {
        return Err(Failure {
            message:
                "uhyve needs KVM, but this machine has no /dev/kvm (use the QEMU VMM: --vmm qemu)"
                    .into(),
            status: 2,
        });
    }
    if let Some(p) = vmm::which("uhyve") {
        return Ok(p);
    }
    eprintln!(
        "xtask: uhyve not found; installing it: cargo install uhyve --version {VERSION} --locked (about 2 minutes)"
    );
    host::run_checked(
        host::cargo().args(["install", "uhyve", "--version", VERSION, "--locked"]),
        "cargo install uhyve",
    )?;
    vmm::which("uhyve").map_or_else(
        || fail("uhyve was installed but is not on PATH or in ~/.cargo/bin"),
        Ok,
    )
}

/// The uhyve command line for `image` with the app's `args`.
pub fn uhyve_args(image: &Path, args: &[String], opts: &RunOpts) -> Vec<String> {
    let mut a = vec!["-m".to_string(), format!("{}MiB", opts.memory)];
    if opts.smp > 1 {
        // uhyve starts every CPU at the image's entry; the image releases the others.
        a.extend(["-c".to_string(), opts.smp.to_string()]);
    }
    a.extend([image.display().to_string(), "--".into()]);
    // One pre-quoted word per argument: uhyve joins them with spaces.
    a.extend(args.iter().map(|w| kernel_cmdline(std::slice::from_ref(w))));
    a
}

/// Boots `image` on uhyve and collects (and, with `echo`, streams) its console.
pub fn run_image(
    image: &Path,
    args: &[String],
    opts: &RunOpts,
    echo: bool,
) -> Result<RunResult, Failure> {
    let uhyve = ensure_uhyve()?;
    let mut cmd = Command::new(uhyve);
    // uhyve's own warnings (ASLR off, "not a hermit application") are noise here.
    cmd.args(uhyve_args(image, args, opts))
        .env("RUST_LOG", "error");
    vmm::run_captured(cmd, image, opts.timeout, echo)?.into_result(
        |c| {
            c.stderr
                .contains("panicked at")
                .then(|| "uhyve itself crashed (see its message above)".to_string())
        },
        |code| code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineArg;

    #[test]
    fn smp_passes_the_cpu_count() {
        let opts = RunOpts::for_tests(MachineArg::Microvm, 0);
        let one = uhyve_args(Path::new("img"), &[], &opts);
        assert!(!one.iter().any(|a| a == "-c"));
        let two = uhyve_args(Path::new("img"), &["x".into()], &opts.with_smp(2));
        assert_eq!(two, ["-m", "128MiB", "-c", "2", "img", "--", "x"]);
    }
}
