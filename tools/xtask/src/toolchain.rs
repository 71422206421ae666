//! Completing the pinned toolchain before a build.
//!
//! rustup installs the `targets` and `components` that `rust-toolchain.toml` lists only
//! when it installs the toolchain itself. A machine that already had the pinned release
//! (installed some other way) lacks them, and an image build then fails with
//! "can't find crate for `core`". So before building, xtask asks rustup what the
//! toolchain has and adds what is missing, saying so. Without rustup it checks the
//! sysroot for the image target and, if that is missing, says what to install.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::{Failure, fail, host, vmm};

/// What `rust-toolchain.toml` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `channel`, e.g. `1.95.0`.
    pub channel: String,
    /// `components`, e.g. `rust-src`.
    pub components: Vec<String>,
    /// `targets`, e.g. `x86_64-unknown-none`.
    pub targets: Vec<String>,
}

/// Parses `rust-toolchain.toml`.
pub fn parse(text: &str) -> Result<Pinned, String> {
    let doc: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let tc = doc
        .get("toolchain")
        .and_then(|t| t.as_table())
        .ok_or("no [toolchain] table")?;
    let channel = tc
        .get("channel")
        .and_then(|c| c.as_str())
        .ok_or("[toolchain] has no `channel` string")?
        .to_string();
    let list = |key: &str| -> Result<Vec<String>, String> {
        match tc.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or(format!("[toolchain] {key} must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(format!("[toolchain] {key} must be a list of strings")),
        }
    };
    Ok(Pinned {
        channel,
        components: list("components")?,
        targets: list("targets")?,
    })
}

/// The components and targets of `pinned` that `installed` (the output of
/// `rustup component list --installed`: `rust-src`, `clippy-x86_64-unknown-linux-gnu`,
/// `rust-std-x86_64-unknown-none`, …) lacks.
pub fn missing(pinned: &Pinned, installed: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<&str> = installed.lines().map(str::trim).collect();
    // Host components carry the host's triple (`clippy-x86_64-unknown-linux-gnu`), which
    // `rustc-<triple>`, always installed, names.
    let host = lines
        .iter()
        .find_map(|l| l.strip_prefix("rustc-"))
        .unwrap_or("x86_64-unknown-linux-gnu");
    let has_component = |c: &str| lines.iter().any(|l| *l == c || *l == format!("{c}-{host}"));
    let components = pinned
        .components
        .iter()
        .filter(|c| !has_component(c))
        .cloned()
        .collect();
    let targets = pinned
        .targets
        .iter()
        .filter(|t| !lines.contains(&format!("rust-std-{t}").as_str()))
        .cloned()
        .collect();
    (components, targets)
}

/// Makes sure the pinned toolchain has every target and component that
/// `rust-toolchain.toml` lists (once per xtask run).
pub fn ensure() -> Result<(), Failure> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| check().map_err(|f| f.message))
        .clone()
        .or_else(fail)
}

fn check() -> Result<(), Failure> {
    let root = host::root();
    let file = root.join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&file)
        .or_else(|e| fail(format!("read {}: {e}", file.display())))?;
    let pinned = parse(&text).or_else(|e| fail(format!("{}: {e}", file.display())))?;
    // A user's `RUSTUP_TOOLCHAIN` (or `cargo +TOOLCHAIN`) overrides the file for cargo;
    // check the toolchain that will actually build.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| pinned.channel.clone());
    let Some(rustup) = vmm::which("rustup") else {
        return check_without_rustup(&root, &pinned);
    };
    let listed = Command::new(&rustup)
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            &toolchain,
        ])
        .current_dir(&root)
        .output()
        .or_else(|e| fail(format!("cannot run rustup: {e}")))?;
    if !listed.status.success() {
        // Not installed at all: in the repository, `rustup toolchain install` installs
        // the file's toolchain with its components and targets.
        eprintln!(
            "xtask: toolchain {toolchain} (rust-toolchain.toml) is not installed; installing it: rustup toolchain install"
        );
        return host::run_checked(
            Command::new(&rustup)
                .args(["toolchain", "install"])
                .current_dir(&root),
            "rustup toolchain install",
        );
    }
    let (components, targets) = missing(&pinned, &String::from_utf8_lossy(&listed.stdout));
    for (kind, missing) in [("target", targets), ("component", components)] {
        if missing.is_empty() {
            continue;
        }
        let list = missing.join(" ");
        eprintln!(
            "xtask: toolchain {toolchain} lacks {kind}(s) {list} listed in rust-toolchain.toml; installing: rustup {kind} add --toolchain {toolchain} {list}"
        );
        host::run_checked(
            Command::new(&rustup)
                .args([kind, "add", "--toolchain", &toolchain])
                .args(&missing),
            &format!("rustup {kind} add"),
        )?;
    }
    Ok(())
}

/// Without rustup nothing can be added: check that the image targets' standard
/// libraries are in the sysroot, and say what to do if not.
fn check_without_rustup(root: &Path, pinned: &Pinned) -> Result<(), Failure> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()
        .or_else(|e| fail(format!("cannot run rustc: {e}")))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for t in &pinned.targets {
        let lib = Path::new(&sysroot).join("lib/rustlib").join(t).join("lib");
        if !lib.is_dir() {
            return Err(Failure {
                message: format!(
                    "the Rust toolchain at {sysroot} has no standard library for {t} (looked in {}), \
                     and rustup, which would add it, is not installed: install rustup \
                     (https://rustup.rs; it reads rust-toolchain.toml), or add the {t} target \
                     to this toolchain",
                    lib.display()
                ),
                status: 2,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[toolchain]\nchannel = \"1.95.0\"\ncomponents = [\"rustfmt\", \"clippy\", \"rust-src\"]\ntargets = [\"x86_64-unknown-none\"]\nprofile = \"minimal\"\n";

    #[test]
    fn the_repository_file_parses() {
        let text = std::fs::read_to_string(host::root().join("rust-toolchain.toml")).unwrap();
        let p = parse(&text).unwrap();
        assert!(p.targets.iter().any(|t| t == host::IMAGE_TARGET));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for bad in [
            "",
            "[toolchain]\n",
            "[toolchain]\nchannel = 3\n",
            "[toolchain]\nchannel = \"x\"\ntargets = \"a\"\n",
            "[toolchain]\nchannel = \"x\"\ncomponents = [1]\n",
            "not toml [",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_targets_and_components_are_found() {
        let p = parse(FILE).unwrap();
        let full = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-src\n\
                    rust-std-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-none\n\
                    rustc-x86_64-unknown-linux-gnu\nrustfmt-x86_64-unknown-linux-gnu\n";
        assert_eq!(missing(&p, full), (vec![], vec![]));
        let no_target = full.replace("rust-std-x86_64-unknown-none\n", "");
        assert_eq!(
            missing(&p, &no_target),
            (vec![], vec!["x86_64-unknown-none".to_string()])
        );
        let bare = "rustc-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n";
        assert_eq!(
            missing(&p, bare),
            (
                vec!["rustfmt".into(), "clippy".into(), "rust-src".into()],
                vec!["x86_64-unknown-none".into()]
            )
        );
        // `rust-std-…` is not the `rust` component, nor `rust-src`.
        let q = Pinned {
            channel: "x".into(),
            components: vec!["rust".into(), "rust-src".into()],
            targets: vec![],
        };
        assert_eq!(missing(&q, bare).0, vec!["rust", "rust-src"]);
    }
}
