//! `cargo xtask run APP --gdb`: QEMU starts stopped with its gdb stub listening on a
//! free port of 127.0.0.1, and xtask prints the exact `gdb` command that loads the
//! image's symbols and connects.
//!
//! What works: the KVM image on QEMU (TCG or KVM), and a Xen image as dom0
//! (`--platform xen --dom0`): there QEMU's stub sees the whole machine, Xen and the
//! app, and breakpoints on the app's addresses hit when the app runs them. Not
//! supported: uhyve, and an xl domU (Linux dom0 shares the app's virtual addresses, so
//! a breakpoint would also stop dom0).

use std::path::Path;

use crate::vmm::qemu::shell_words;
use crate::{Failure, host};

/// QEMU arguments for a gdb stub on `port` with the CPUs stopped until gdb continues.
pub fn qemu_args(port: u16) -> Vec<String> {
    vec!["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()]
}

/// The gdb command that debugs `image` of `app` through the stub on `port`, stopping at
/// the app's `main`.
pub fn command(image: &Path, app: &str, port: u16) -> String {
    shell_words(
        "gdb",
        &[
            "-q".to_string(),
            image.display().to_string(),
            "-ex".into(),
            format!("target remote 127.0.0.1:{port}"),
            "-ex".into(),
            format!("break {}::main", app.replace('-', "_")),
            "-ex".into(),
            "continue".into(),
        ],
    )
}

/// Makes sure gdb is installed (from Debian's `gdb` package when missing, as root) and
/// picks the stub's port.
pub fn prepare() -> Result<u16, Failure> {
    host::ensure_program("gdb", &["gdb"])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure {
            message: format!("no free port for the gdb stub: {e}"),
            status: 1,
        })?;
    Ok(port)
}

/// Tells the user how to attach.
pub fn announce(image: &Path, app: &str, port: u16) {
    eprintln!(
        "xtask: QEMU waits for gdb on 127.0.0.1:{port} (the guest starts when gdb continues); in another terminal:"
    );
    eprintln!("  {}", command(image, app, port));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_loads_the_image_and_breaks_on_the_apps_main() {
        let c = command(
            Path::new("/r/target/images/kvm/debug/my-app"),
            "my-app",
            4321,
        );
        assert_eq!(
            c,
            "gdb -q /r/target/images/kvm/debug/my-app -ex 'target remote 127.0.0.1:4321' \
             -ex 'break my_app::main' -ex continue"
        );
        assert_eq!(qemu_args(4321), ["-gdb", "tcp:127.0.0.1:4321", "-S"]);
    }
}
