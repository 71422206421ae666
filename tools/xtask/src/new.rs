//! `cargo xtask new NAME --path DIR`: an app crate of its own, anywhere.
//!
//! The crate needs nothing but its dependency on libos and a `main`: it is a plain
//! `#![no_std]` library; `cargo xtask build|run --manifest-path DIR/Cargo.toml` links
//! it into an image (see `build`).

use std::path::Path;

use crate::{Failure, Outcome, build, fail, host};

/// The app's `Cargo.toml`.
pub fn manifest(name: &str, libos: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
# The Upcall library OS. A git dependency works too (`cargo xtask` then builds against
# the libos of the repository it runs in; cargo must be able to fetch the URL):
# libos = {{ git = "https://…/upcall", rev = "…" }}
libos = {{ path = {libos:?} }}

# Optional defaults for `cargo xtask run` (the command line overrides them):
# [package.metadata.upcall]
# cmdline = "hz=250"   # libos options
# memory = 64          # guest MiB
"#,
        libos = libos.display().to_string(),
    )
}

/// The app's `src/lib.rs`.
pub fn lib_rs(name: &str) -> String {
    format!(
        r#"//! `{name}`: an Upcall app. `cargo xtask run --manifest-path Cargo.toml` (from the
//! Upcall repository, with this file's Cargo.toml) boots it on QEMU; add
//! `--platform xen` for Xen.
#![no_std]

use libos::println;

/// The app's entry. `args` holds the words of the kernel command line that are not
/// libos options (`cargo xtask run … -- a b` passes `a` and `b`); the return value is
/// the exit status.
pub fn main(args: &libos::Args) -> i32 {{
    println!("Hello from {name} on {{}}", libos::platform_name());
    for (i, arg) in args.iter().enumerate() {{
        println!("arg[{{i}}] = {{arg}}");
    }}
    0
}}
"#
    )
}

/// `cargo xtask new NAME --path DIR`.
pub fn command(name: &str, dir: &Path) -> Outcome {
    build::check_crate_name(name).or_else(fail)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return fail(format!(
            "{} exists and is not an empty directory",
            dir.display()
        ));
    }
    let write = |rel: &str, text: &str| -> Result<(), Failure> {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .and_then(|()| std::fs::write(&path, text))
            .or_else(|e| fail(format!("write {}: {e}", path.display())))
    };
    write("Cargo.toml", &manifest(name, &host::root().join("libos")))?;
    write("src/lib.rs", &lib_rs(name))?;
    write(".gitignore", "/target\n")?;
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let m = abs.join("Cargo.toml");
    println!("created app `{name}` in {}", abs.display());
    println!(
        "boot it on QEMU:   cargo xtask run --manifest-path {}",
        m.display()
    );
    println!(
        "or on Xen:         cargo xtask run --manifest-path {} --platform xen",
        m.display()
    );
    println!(
        "(run these in {}; the image goes to its target/images/)",
        host::root().display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_package_build_accepts() {
        let m = manifest("greet", Path::new("/x/libos"));
        let doc: toml::Table = m.parse().expect("valid TOML");
        assert_eq!(doc["package"]["name"].as_str(), Some("greet"));
        assert_eq!(
            doc["dependencies"]["libos"]["path"].as_str(),
            Some("/x/libos")
        );
        assert!(lib_rs("greet").contains("pub fn main(args: &libos::Args) -> i32"));
    }

    #[test]
    fn bad_names_and_non_empty_directories_are_refused() {
        assert!(command("core", Path::new("/nonexistent/x")).is_err());
        assert!(command("a b", Path::new("/nonexistent/x")).is_err());
        let e = command("greet", &host::root()).unwrap_err();
        assert!(
            e.message.contains("not an empty directory"),
            "{}",
            e.message
        );
    }
}
