//! `cargo xtask build`: app + libos + one backend → a bootable image.
//!
//! An app is a library crate with `pub fn main(&libos::Args) -> i32` that never names a
//! platform. The image is linked from a small generated glue crate (under
//! `target/image-glue/<platform>/<app>/`) that depends on the app, libos and the
//! backend and expands `libos::image!(app::main)`. The glue is its own workspace, so it
//! copies the root's `[profile.*]` settings and `Cargo.lock`, and builds into the shared
//! target directory.

use std::path::{Path, PathBuf};

use crate::cli::BuildArgs;
use crate::host::{self, IMAGE_TARGET};
use crate::{Failure, Outcome, Platform, fail};

/// The backend crate of a platform, as (package name, path relative to the root).
fn backend(platform: Platform) -> Result<(&'static str, &'static str), Failure> {
    match platform {
        Platform::Kvm => Ok(("upcall-kvm", "kvm")),
        Platform::Xen => Ok(("upcall-xen", "xen")),
    }
}

/// An app to build: a library crate with `pub fn main(&libos::Args) -> i32`, either
/// under `apps/` or anywhere else (a user's own crate, given by its manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Its package name (also the image's file name).
    pub name: String,
    /// Its directory (holding `Cargo.toml`).
    pub dir: PathBuf,
    /// Where its manifest says libos comes from.
    pub libos: LibosSource,
}

/// Where an app's manifest takes libos from. Whatever it says, the image links this
/// repository's libos (the one the backends are built against): a git or registry
/// dependency is patched to it, and a path must point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibosSource {
    /// By path, to this repository's `libos/` (or an app under `apps/`).
    ThisRepository,
    /// `libos = { git = URL, … }`.
    Git(String),
    /// `libos = "VERSION"` (a registry).
    Registry,
}

/// Reads the libos dependency of an app manifest in `dir`; `ours` is this repository's
/// libos directory (canonical).
fn libos_source(manifest: &str, dir: &Path, ours: &Path) -> Result<LibosSource, String> {
    let doc: toml::Table = manifest.parse().map_err(|e| format!("{e}"))?;
    let Some(dep) = doc.get("dependencies").and_then(|d| d.get("libos")) else {
        return Err(
            "no `libos` in [dependencies] (an app depends on libos: `libos = { path = \"…/libos\" }`)"
                .into(),
        );
    };
    if dep.is_str() {
        return Ok(LibosSource::Registry);
    }
    let Some(t) = dep.as_table() else {
        return Err("`libos` must be a version string or a table".into());
    };
    if let Some(url) = t.get("git") {
        let url = url.as_str().ok_or("libos's `git` must be a string")?;
        return Ok(LibosSource::Git(url.to_string()));
    }
    if let Some(p) = t.get("path") {
        let p = p.as_str().ok_or("libos's `path` must be a string")?;
        let theirs = dir
            .join(p)
            .canonicalize()
            .map_err(|e| format!("libos path {p}: {e}"))?;
        if theirs != ours {
            return Err(format!(
                "libos's path is {} but this xtask builds with {}: point the path there (or use a git dependency)",
                theirs.display(),
                ours.display()
            ));
        }
        return Ok(LibosSource::ThisRepository);
    }
    if t.get("workspace").is_some() {
        return Ok(LibosSource::ThisRepository);
    }
    if t.get("version").is_some() {
        return Ok(LibosSource::Registry);
    }
    Err("`libos` needs a `path`, `git` or version".into())
}

/// Guest memory (MiB) of `cargo xtask run` unless the app or `--memory` says otherwise.
const DEFAULT_MEMORY_MB: u32 = 128;

/// `cargo xtask build`: builds the image and prints its path.
pub fn command(a: &BuildArgs) -> Outcome {
    let app = a.app.resolve()?;
    build_app(&app, a.platform, a.release)?;
    println!(
        "{}",
        image_paths(&app.name, a.platform, a.release).0.display()
    );
    Ok(0)
}

impl App {
    /// `memory` (`--memory`), else the app's declared memory, else
    /// [`DEFAULT_MEMORY_MB`].
    pub fn memory_mb(&self, memory: Option<u32>) -> Result<u32, Failure> {
        match memory {
            Some(m) => Ok(m),
            None => app_meta(self).map(|m| m.memory_mb.unwrap_or(DEFAULT_MEMORY_MB)),
        }
    }

    /// The app `apps/<name>` of this repository.
    pub fn in_repo(name: &str) -> Result<App, Failure> {
        host::check_app(name)?;
        Ok(App {
            name: name.to_string(),
            dir: host::root().join("apps").join(name),
            libos: LibosSource::ThisRepository,
        })
    }

    /// The app whose manifest is `manifest` (relative to the current directory).
    pub fn from_manifest(manifest: &Path) -> Result<App, Failure> {
        let manifest = manifest
            .canonicalize()
            .or_else(|e| fail(format!("--manifest-path {}: {e}", manifest.display())))?;
        let text = std::fs::read_to_string(&manifest)
            .or_else(|e| fail(format!("read {}: {e}", manifest.display())))?;
        let name =
            package_name(&text).or_else(|why| fail(format!("{}: {why}", manifest.display())))?;
        let dir = manifest
            .parent()
            .expect("a file has a parent")
            .to_path_buf();
        if dir.starts_with(host::root().join("apps")) {
            return App::in_repo(&name);
        }
        if host::apps().contains(&name) {
            return fail(format!(
                "{}: an app named `{name}` is already in this repository's apps/; give yours another package name",
                manifest.display()
            ));
        }
        let ours = host::root().join("libos");
        let libos = libos_source(&text, &dir, &ours)
            .or_else(|why| fail(format!("{}: {why}", manifest.display())))?;
        Ok(App { name, dir, libos })
    }

    /// `apps/<name>` if `app` is given, else the crate of `manifest`.
    pub fn resolve(app: Option<&str>, manifest: Option<&Path>) -> Result<App, Failure> {
        match (app, manifest) {
            (Some(a), None) => App::in_repo(a),
            (None, Some(m)) => App::from_manifest(m),
            _ => fail(
                "give an app name (an app under apps/) or --manifest-path DIR/Cargo.toml, not both",
            ),
        }
    }
}

/// The `[package] name` of a manifest, checked to be usable as an app.
fn package_name(manifest: &str) -> Result<String, String> {
    let doc: toml::Table = manifest.parse().map_err(|e| format!("{e}"))?;
    let name = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or("no [package] name (an app is a package, not a workspace)")?;
    check_crate_name(name)?;
    Ok(name.to_string())
}

/// Names an app may not take: libos's own crates and the sysroot's.
const RESERVED: &[&str] = &[
    "libos",
    "upcall-kvm",
    "upcall-xen",
    "upcall-tests",
    "xtask",
    "core",
    "alloc",
    "std",
    "test",
    "proc_macro",
    "self",
    "super",
    "crate",
];

/// Checks that `name` is a package name an app can have.
pub fn check_crate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty()
        || name.len() > 64
        || !ok_chars
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return Err(format!(
            "`{name}` is not a usable package name (a letter, then letters, digits, `-` or `_`; at most 64)"
        ));
    }
    let norm = |n: &str| n.replace('-', "_");
    if RESERVED.iter().any(|r| norm(r) == norm(name)) {
        return Err(format!(
            "`{name}` is reserved (a crate of Upcall or of Rust itself)"
        ));
    }
    Ok(())
}

/// Where the image of `app` for `platform` is written: `target/images/<platform>/<app>`
/// (the latest build of either profile), plus a per-profile copy under
/// `target/images/<platform>/<profile>/<app>` that tests and benchmarks use.
pub fn image_paths(app: &str, platform: Platform, release: bool) -> (PathBuf, PathBuf) {
    let dir = host::target_dir().join("images").join(platform.name());
    let profile = if release { "release" } else { "debug" };
    (dir.join(app), dir.join(profile).join(app))
}

fn write_if_changed(path: &Path, contents: &str) -> Result<(), Failure> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, contents).or_else(|e| fail(format!("write {}: {e}", path.display())))
}

/// The root manifest's `[profile.*]` tables, so the glue builds like the workspace.
fn profiles(root: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))
        .or_else(|e| fail(format!("read Cargo.toml: {e}")))?;
    let doc: toml::Table = text
        .parse()
        .or_else(|e| fail(format!("parse Cargo.toml: {e}")))?;
    let mut out = toml::Table::new();
    if let Some(p) = doc.get("profile") {
        out.insert("profile".into(), p.clone());
    }
    Ok(toml::to_string(&out).expect("a TOML table serializes"))
}

/// What an app declares about how it runs, in its manifest's
/// `[package.metadata.upcall]`: `cmdline` (default libos options, overridden by the
/// kernel command line), `memory` (MiB; the default for `cargo xtask run --memory`) and
/// `net` (default true; `false` builds the KVM image without the virtio-net driver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppMeta {
    /// Default libos options ("" if none).
    pub cmdline: String,
    /// Default guest memory in MiB, if the app asks for one.
    pub memory_mb: Option<u32>,
    /// The app declared `net = false`: no network driver in its KVM image.
    pub no_net: bool,
}

/// Reads `app`'s [`AppMeta`].
pub fn app_meta(app: &App) -> Result<AppMeta, Failure> {
    let manifest = app.dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .or_else(|e| fail(format!("read {}: {e}", manifest.display())))?;
    parse_app_meta(&text).or_else(|why| fail(format!("{}: {why}", manifest.display())))
}

fn parse_app_meta(manifest: &str) -> Result<AppMeta, String> {
    let doc: toml::Table = manifest.parse().map_err(|e| format!("{e}"))?;
    let Some(meta) = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("upcall"))
    else {
        return Ok(AppMeta::default());
    };
    let cmdline = match meta.get("cmdline") {
        None => String::new(),
        Some(toml::Value::String(s)) if !s.contains(['\n', '"', '\\']) => s.clone(),
        Some(_) => {
            return Err(
                "[package.metadata.upcall] cmdline must be a one-line string of libos options"
                    .into(),
            );
        }
    };
    let memory_mb = match meta.get("memory") {
        None => None,
        Some(toml::Value::Integer(n)) if (16..=65536).contains(n) => Some(*n as u32),
        Some(_) => {
            return Err("[package.metadata.upcall] memory must be MiB from 16 to 65536".into());
        }
    };
    let no_net = match meta.get("net") {
        None | Some(toml::Value::Boolean(true)) => false,
        Some(toml::Value::Boolean(false)) => true,
        Some(_) => return Err("[package.metadata.upcall] net must be true or false".into()),
    };
    Ok(AppMeta {
        cmdline,
        memory_mb,
        no_net,
    })
}

/// Generates the glue crate; returns its manifest path.
fn glue(app_: &App, platform: Platform, libos_features: &[&str]) -> Result<PathBuf, Failure> {
    let app_dir = app_.dir.display().to_string();
    let app = app_.name.as_str();
    let root = host::root();
    let (backend_pkg, backend_dir) = backend(platform)?;
    let dir = host::target_dir()
        .join("image-glue")
        .join(platform.name())
        .join(variant_name(app, libos_features));
    let crate_ident = app.replace('-', "_");
    let backend_ident = backend_pkg.replace('-', "_");
    let path = |p: &str| root.join(p).display().to_string();
    let meta = app_meta(app_)?;
    // Only the KVM backend has the driver as a feature.
    let backend_features = if meta.no_net && platform == Platform::Kvm {
        ", default-features = false"
    } else {
        ""
    };
    let manifest = format!(
        "# Generated by `cargo xtask build`; do not edit.\n\
         [package]\nname = \"{bin}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [[bin]]\nname = \"{bin}\"\npath = \"main.rs\"\ntest = false\nbench = false\n\n\
         [dependencies]\n\
         libos = {{ path = {libos:?}, features = {libos_features:?} }}\n\
         {backend_pkg} = {{ path = {backend:?}{backend_features} }}\n\
         {app} = {{ path = {app_path:?} }}\n\n\
         [workspace]\n\n{profiles}{patch}",
        bin = bin_name(app, platform, libos_features),
        libos = path("libos"),
        backend = path(backend_dir),
        app_path = app_dir,
        profiles = profiles(&root)?,
        // The app's own libos source, redirected to this repository's libos so that
        // app, backend and image share one libos.
        patch = match &app_.libos {
            LibosSource::ThisRepository => String::new(),
            LibosSource::Git(url) => format!(
                "\n[patch.{url:?}]\nlibos = {{ path = {:?} }}\n",
                path("libos")
            ),
            LibosSource::Registry => {
                format!(
                    "\n[patch.crates-io]\nlibos = {{ path = {:?} }}\n",
                    path("libos")
                )
            }
        },
    );
    let defaults = meta.cmdline;
    let main = format!(
        "// Generated by `cargo xtask build`; do not edit.\n\
         #![no_std]\n#![no_main]\n\n\
         // Links the {platform} backend (its boot entry and platform implementation).\n\
         extern crate {backend_ident} as _;\n\n\
         libos::image!({crate_ident}::main, {defaults:?});\n",
        platform = platform.name(),
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
    write_if_changed(&dir.join("main.rs"), &main)?;
    // Same dependency versions as the workspace.
    if let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock"))
        && !dir.join("Cargo.lock").exists()
    {
        write_if_changed(&dir.join("Cargo.lock"), &lock)?;
    }
    Ok(dir.join("Cargo.toml"))
}

/// The glue crate's package and binary name (unique per platform and variant, since
/// every variant builds into the shared target directory).
fn bin_name(app: &str, platform: Platform, libos_features: &[&str]) -> String {
    format!(
        "image-{}-{}",
        platform.name(),
        variant_name(app, libos_features).replace('+', "-")
    )
}

/// `app`, or `app+feature+…` for a build with extra libos features.
fn variant_name(app: &str, libos_features: &[&str]) -> String {
    std::iter::once(app)
        .chain(libos_features.iter().copied())
        .collect::<Vec<_>>()
        .join("+")
}

/// Builds `app` (under `apps/`) for `platform`; returns the per-profile image path.
pub fn build(app: &str, platform: Platform, release: bool) -> Result<PathBuf, Failure> {
    build_variant(app, platform, release, &[])
}

/// Builds `app`, wherever it lives, for `platform`; returns the per-profile image path.
/// Apps outside the repository build into this repository's target directory, so they
/// share libos and the backends already built there.
pub fn build_app(app: &App, platform: Platform, release: bool) -> Result<PathBuf, Failure> {
    build_app_variant(app, platform, release, &[])
}

/// Builds `app` with extra libos features (test-only variants such as the noinstr
/// violation demo); variants get their own glue crate and image name.
pub fn build_variant(
    app: &str,
    platform: Platform,
    release: bool,
    libos_features: &[&str],
) -> Result<PathBuf, Failure> {
    build_app_variant(&App::in_repo(app)?, platform, release, libos_features)
}

fn build_app_variant(
    app: &App,
    platform: Platform,
    release: bool,
    libos_features: &[&str],
) -> Result<PathBuf, Failure> {
    crate::toolchain::ensure()?;
    let manifest = glue(app, platform, libos_features)?;
    let app = app.name.as_str();
    let mut cmd = host::cargo();
    cmd.args([
        "build",
        "--quiet",
        "--target",
        IMAGE_TARGET,
        "--manifest-path",
    ])
    .arg(&manifest)
    .arg("--target-dir")
    .arg(host::target_dir())
    // Panic locations print relative to the repository, not this machine's paths.
    .arg("--config")
    .arg(format!(
        "target.{IMAGE_TARGET}.rustflags=[\"--remap-path-prefix={}/=\"]",
        host::root().display()
    ));
    if release {
        cmd.arg("--release");
    }
    let what = format!("build of `{app}` for {}", platform.name());
    host::run_checked(&mut cmd, &what)?;
    let profile = if release { "release" } else { "debug" };
    let built = host::target_dir()
        .join(IMAGE_TARGET)
        .join(profile)
        .join(bin_name(app, platform, libos_features));
    let (latest, per_profile) = image_paths(&variant_name(app, libos_features), platform, release);
    for dest in [&per_profile, &latest] {
        std::fs::create_dir_all(dest.parent().expect("image path has a parent"))
            .and_then(|()| std::fs::copy(&built, dest))
            .or_else(|e| {
                fail(format!(
                    "copy {} to {}: {e}",
                    built.display(),
                    dest.display()
                ))
            })?;
    }
    Ok(per_profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_metadata_is_read_and_checked() {
        assert_eq!(
            parse_app_meta("[package]\nname = \"x\"\n"),
            Ok(AppMeta::default())
        );
        let m = parse_app_meta(
            "[package]\nname = \"x\"\n[package.metadata.upcall]\ncmdline = \"hz=250\"\nmemory = 512\n",
        )
        .unwrap();
        assert_eq!(m.cmdline, "hz=250");
        assert_eq!(m.memory_mb, Some(512));
        assert!(!m.no_net);
        let m = parse_app_meta("[package]\nname = \"x\"\n[package.metadata.upcall]\nnet = false\n")
            .unwrap();
        assert!(m.no_net);
        for bad in [
            "net = 0",
            "net = \"no\"",
            "memory = 1",
            "memory = \"x\"",
            "cmdline = 3",
            "cmdline = \"a\\\"b\"",
        ] {
            let t = format!("[package]\nname = \"x\"\n[package.metadata.upcall]\n{bad}\n");
            assert!(parse_app_meta(&t).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn the_libos_dependency_is_read_and_checked() {
        let ours = host::root().join("libos");
        let dir = host::root().join("apps/hello");
        let src = |deps: &str| {
            libos_source(
                &format!("[package]\nname = \"a\"\n[dependencies]\n{deps}\n"),
                &dir,
                &ours,
            )
        };
        assert_eq!(
            src("libos = { path = \"../../libos\" }"),
            Ok(LibosSource::ThisRepository)
        );
        assert_eq!(
            src("libos = { git = \"https://x/upcall\", rev = \"abc\" }"),
            Ok(LibosSource::Git("https://x/upcall".into()))
        );
        assert_eq!(src("libos = \"0.1\""), Ok(LibosSource::Registry));
        for bad in [
            "",
            "libos = 3",
            "libos = { path = \"../../kvm\" }",
            "libos = { path = \"/nonexistent\" }",
            "libos = { git = 3 }",
            "libos = {}",
        ] {
            assert!(src(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn package_names_are_checked() {
        assert_eq!(
            package_name("[package]\nname = \"greet\"\n"),
            Ok("greet".into())
        );
        for bad in [
            "",
            "[workspace]\n",
            "[package]\nname = 3\n",
            "[package]\nname = \"libos\"\n",
            "[package]\nname = \"upcall_kvm\"\n",
            "[package]\nname = \"core\"\n",
            "[package]\nname = \"1st\"\n",
            "[package]\nname = \"a b\"\n",
            "[package]\nname = \"../x\"\n",
        ] {
            assert!(package_name(bad).is_err(), "{bad:?}");
        }
    }
}
