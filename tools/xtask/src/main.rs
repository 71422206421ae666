//! `cargo xtask`: every Upcall workflow (build, run, test, bench) in one CLI.
//!
//! Rooms: [`cli`] (the command line), [`vmm`] (QEMU, uhyve, Xen and libvirt runners),
//! [`testbed`] (the Xen dom0 and libvirt beds), [`test`] (the integration harness),
//! [`bench`] (benchmarks); beside them building images ([`build`], [`toolchain`],
//! [`host`]) and the smaller commands.

mod bench;
mod build;
mod cli;
mod fuzz;
mod gdb;
mod host;
mod new;
mod noinstr;
mod run;
mod stub_elf;
mod symbolize;
mod test;
mod testbed;
mod toolchain;
mod vmm;
mod xen_stub_elf;

use std::process::ExitCode;

use clap::Parser;

pub use cli::{Accel, MachineArg, Platform};
use cli::{BenchKind, Cli, Command, TestbedKind};

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
    vmm::child::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", cli::one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Build(a) => build::command(&a),
        Command::New { name, path } => new::command(&name, &path),
        Command::Run(a) => run::command(&a),
        Command::Test(a) => test::run(&a),
        Command::Bench { which } => match which {
            BenchKind::Boot { runs } => bench::boot::boot(runs),
            BenchKind::Entry => bench::entry::entry(),
            BenchKind::Preempt => bench::preempt::preempt(),
            BenchKind::XenBoot { runs, memory } => bench::xen_boot::run(runs, memory),
            BenchKind::Smp { runs } => bench::smp::run(runs),
            BenchKind::Net { kvm_only } => bench::net::net(kvm_only),
            BenchKind::Soak { minutes, xen } => bench::soak::soak(minutes, xen),
        },
        Command::Testbed { which } => match which {
            TestbedKind::Xen => testbed::xen::command(),
            TestbedKind::Libvirt { stop } => testbed::libvirt::command(stop),
        },
        Command::Libvirt(a) => vmm::libvirt::command(&a.app, &a.args, &a.opts),
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
