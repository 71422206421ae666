//! The Xen test bed: Xen 4.17 under QEMU (TCG), booting either a PV kernel directly as
//! dom0 (the fast path, ~1 s) or a Debian Linux dom0 whose init `xl create`s the app as a
//! domU (the path users take, ~15 s).
//!
//! Everything comes from Debian packages, fetched with `apt-get download` and unpacked
//! with `dpkg-deb -x` (nothing is installed), and is cached under `target/testbed/xen/`:
//! the first run takes a minute, later ones are instant. `../shared/TESTBEDS.md` has the
//! measurements behind the choices here. `rm -rf target/testbed/xen` starts over.
//!
//! The xl path's dom0 initramfs is built once (keyed on the packages and the init
//! script); each run appends a small second cpio archive holding `/app`, its xl config
//! and its settings, which Linux unpacks over the first.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::initramfs::{Cpio, Fnv, Node, Tree};
use crate::qemu::{self, QEMU};
use crate::{Failure, Outcome, fail, host, vmm};

/// The Debian package with the hypervisor.
const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// The gzipped hypervisor ELF inside [`XEN_PACKAGE`].
const XEN_GZ: &str = "boot/xen-4.17-amd64.gz";
/// The Debian meta package naming the current kernel package.
const KERNEL_META: &str = "linux-image-amd64";
/// Packages whose files go into the dom0 initramfs (besides the kernel's modules).
const DOM0_PACKAGES: &[&str] = &[
    "busybox-static",
    "xen-utils-4.17",
    "libxenmisc4.17",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenstore4",
    "libxentoollog1",
    "libxenhypfs1",
    "libxendevicemodel1",
    "libxentoolcore1",
    "libyajl2",
    "libc6",
    "liblzma5",
    "libuuid1",
    "zlib1g",
    "libzstd1",
    "libgcc-s1",
];
/// Where xen-utils keeps its programs.
const XEN_BIN: &str = "usr/lib/xen-4.17/bin";
/// The xen-utils programs dom0 runs.
const XEN_TOOLS: &[&str] = &["xl", "xenstored", "xenconsoled", "xen-init-dom0"];
/// Kernel modules dom0 loads, in load order (xenfs needs xen-privcmd).
const MODULES: &[&str] = &[
    "xen-privcmd",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xenfs",
];
/// Files of the kernel package that are unpacked (`tar` wildcards).
const KERNEL_FILES: &[&str] = &["./boot/vmlinuz-*", "./lib/modules/*/kernel/drivers/xen/*"];
/// Xen's command line, less `dom0_mem`. (Not `sync_console`: Xen then waits 3 s at boot.
/// Under QEMU the UART is always ready, so Xen writes each byte out at once anyway.)
const XEN_CMDLINE: &str = "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all";
/// dom0 memory (MiB) on the fast path, where dom0 is the kernel under test.
const FAST_DOM0_MEM_MB: u32 = 64;
/// QEMU memory (MiB) on the fast path.
const FAST_QEMU_MEM_MB: u32 = 256;
/// The Linux dom0's command line.
const LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen rdinit=/init quiet";
/// Linux dom0's memory (MiB) on the xl path.
const LINUX_DOM0_MEM_MB: u32 = 512;
/// Seconds the dom0 init waits for a domain of `cargo xtask run` to end before it
/// destroys it and reports status 125.
const XL_TIMEOUT_SECS: u32 = 300;
/// Bumped whenever the initramfs layout changes, to rebuild cached ones.
const FORMAT: &str = "xen-testbed-2";

/// The Linux dom0's `/init`: starts the Xen daemons, then for each directory listed in
/// `/domains`, one after another: `xl create`s its `kernel` with its `cfg`, streams the
/// domain's console log (framed by `xen-testbed: domain NAME begins` and
/// `xen-testbed: domain NAME exit status N`, see [`crate::xl_output`]), runs the
/// domain's toolstack actions when its console shows their text, and destroys it after
/// its timeout. Finally it ends QEMU with the last domain's exit status through
/// isa-debug-exit (port 0xf4, reached through `/dev/port`).
const INIT: &str = r#"#!/bin/sh
# dom0 init of Upcall's Xen test bed (tools/xtask/src/xen_testbed.rs).
export PATH=/usr/lib/xen-4.17/bin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
say() { echo "xen-testbed: $*"; }
# Ends QEMU with status (code << 1) | 1: isa-debug-exit at port 0xf4 = 244.
finish() {
    say "exit status $1"
    printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    say "cannot write to isa-debug-exit through /dev/port"
    poweroff -f
}
run() { "$@" || { say "failed: $*"; finish 125; }; }
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xenfs; do
    run insmod /modules/$m.ko
done
run mount -t xenfs xenfs /proc/xen
mkdir -p /var/lock /var/run/xen /var/log/xen/console /var/lib/xen /var/lib/xenstored
run xenstored
out=$(xen-init-dom0 2>&1) || { say "xen-init-dom0 failed: $out"; finish 125; }
run xenconsoled --log=guest --log-dir=/var/log/xen/console
# nap S: sleeps S seconds without starting a process (a read that times out on a FIFO
# nobody writes to), so that polling costs dom0 almost nothing.
mkfifo /tmp/never && exec 9<>/tmp/never
nap() { read -r -t "$1" -u 9 _; }
# Prints what the domain wrote to its console since the last call.
pump() {
    [ -f "$log" ] || return 0
    size=$(stat -c %s "$log")
    if [ "$size" -gt "$shown" ]; then
        tail -c +$((shown + 1)) "$log" | head -c $((size - shown))
        shown=$size
    fi
}
# Runs the next pending action (`xl $actionK $name $actionK_args`) once the console
# shows its text `$actionK_when`; actions run in order, each at most once.
act() {
    [ "$next" -le "$actions" ] || return 0
    eval "cmd=\$action$next args=\$action${next}_args when=\$action${next}_when"
    grep -q -F "$when" "$log" 2>/dev/null || return 0
    say "xl $cmd $name $args"
    xl "$cmd" "$name" $args || say "xl $cmd failed"
    next=$((next + 1))
}
# Runs the domain of directory $1 (`kernel`, xl config `cfg`, settings `env`: `name`,
# `timeout` in seconds, `stream` (1: show the console as it comes), `settle` (1: create
# paused, unpause once dom0 is done with it), `actions` and their `actionK*`) to its end, between the lines `domain NAME begins` and
# `domain NAME exit status N`; sets $code to N.
domain() {
    name=; timeout=300; stream=1; settle=0; actions=0; next=1
    . "$1/env"
    log=/var/log/xen/console/guest-$name.log
    say "domain $name begins"
    say "xl create $1/cfg:"
    cat "$1/cfg"
    rm -f /tmp/xl.rc /tmp/xl.out
    shown=0 first= timed_out=
    read up rest < /proc/uptime
    deadline=$((${up%.*} + timeout))
    if [ "$settle" = 1 ]; then
        # Created paused; unpaused once the toolstack's own work for it has ended, so
        # that dom0 is idle while the domain runs.
        (xl create -F -p "$1/cfg" > /tmp/xl.out 2>&1; echo $? > /tmp/xl.rc) &
        until xl list "$name" > /dev/null 2>&1 || [ -f /tmp/xl.rc ]; do nap 0.05; done
        nap 0.5
        created=$EPOCHREALTIME
        xl unpause "$name" || say "xl unpause failed"
    else
        created=$EPOCHREALTIME
        (xl create -F "$1/cfg" > /tmp/xl.out 2>&1; echo $? > /tmp/xl.rc) &
    fi
    while [ ! -f /tmp/xl.rc ]; do
        read up rest < /proc/uptime
        if [ "${up%.*}" -ge "$deadline" ]; then
            pump
            say "domain $name did not end within $timeout s; destroying it"
            xl destroy "$name" || say "xl destroy failed"
            timed_out=1
            break
        fi
        if [ -z "$first" ]; then
            # Until the first output only builtins run: a fine-grained, cheap poll.
            if [ -s "$log" ]; then first=$EPOCHREALTIME; else nap 0.002; fi
            continue
        fi
        if [ "$stream" = 1 ] || [ "$next" -le "$actions" ]; then
            pump
            act
            nap 0.2
        else
            # Nobody watches and nothing is left to do: builtins only, dom0 stays idle.
            nap 0.5
        fi
    done
    wait
    pump
    [ -s "$log" ] && [ -n "$(tail -c 1 "$log")" ] && echo
    reason=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' /tmp/xl.out | head -n 1)
    status=$(grep -a -o 'upcall: exit status [0-9]*' "$log" 2>/dev/null | tail -n 1 | sed 's/.* //')
    case "$reason" in
        0) what=poweroff; code=0 ;;
        1) what=reboot; code=125 ;;
        2) what=suspend; code=125 ;;
        3) what=crash; code=101 ;;
        4) what=watchdog; code=125 ;;
        "") what=; code=125 ;;
        *) what=unknown; code=125 ;;
    esac
    if [ -n "$status" ] && [ "$status" -le 255 ]; then code=$status; fi
    if [ -n "$timed_out" ]; then
        code=125
    elif [ -z "$what" ]; then
        say "xl create failed (status $(cat /tmp/xl.rc)):"
        cat /tmp/xl.out
    else
        say "domain $name shut down (reason code $reason, $what)"
    fi
    [ -n "$first" ] && say "domain $name timing: xl create at $created, first console output at $first"
    say "domain $name exit status $code"
}
# /domains lists the domains' directories, to run one after another.
code=125
for dir in $(cat /domains); do
    domain "$dir"
done
finish $code
"#;

/// Serializes cache updates within this process (tests may boot in parallel threads;
/// across processes, every cache entry appears by an atomic rename).
static LOCK: Mutex<()> = Mutex::new(());

/// Where the Xen test bed lives (a cache; re-runs are instant).
pub fn cache_dir() -> PathBuf {
    host::target_dir().join("testbed/xen")
}

/// Downloads (`apt-get download`) and unpacks (`dpkg-deb -x`) Debian's
/// xen-hypervisor-4.17-amd64 and gunzips its `boot/xen-4.17-amd64.gz` into the plain ELF
/// that QEMU's multiboot loader wants; returns its path. Cached.
pub fn ensure_hypervisor() -> Result<PathBuf, Failure> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    hypervisor()
}

/// The Linux-dom0 test bed for `xl create`.
#[derive(Debug, Clone)]
pub struct XlTestbed {
    /// The hypervisor (plain ELF).
    pub xen: PathBuf,
    /// The dom0 kernel's ELF, cut out of Debian's bzImage.
    pub vmlinux: PathBuf,
    /// The dom0 initramfs (uncompressed cpio) without any app.
    pub initramfs: PathBuf,
}

/// Prepares the Linux-dom0 test bed for `xl create`: the hypervisor, Debian's kernel as
/// an ELF, and an initramfs with busybox, the xen-utils daemons and `xl`, their
/// libraries, the Xen kernel modules and the test bed's `/init`. Cached, keyed on the
/// package files and the init script.
pub fn ensure_xl_testbed() -> Result<XlTestbed, Failure> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    xl_testbed()
}

/// QEMU arguments that boot Xen with `kernel` (a 64-bit PV ELF) as dom0 with kernel
/// command line `cmdline` (TESTBEDS.md's recipe: qemu64 CPU plus RDRAND, TCG,
/// `-no-reboot`, isa-debug-exit at 0xf4, serial on stdio, 256 MiB, `dom0_mem=64M`). A
/// dom0 that shuts down with reason reboot ends QEMU with status 0; one that writes `v`
/// to port 0xf4 ends it with `(v << 1) | 1`. `kernel`'s path must not contain spaces
/// (QEMU splits a multiboot module's path from its command line at the first space).
pub fn dom0_qemu_args(xen: &Path, kernel: &Path, cmdline: &str) -> Vec<String> {
    let mut a = machine_args(FAST_QEMU_MEM_MB, 1);
    a.extend([
        "-kernel".to_string(),
        xen.display().to_string(),
        "-append".to_string(),
        format!("{XEN_CMDLINE} dom0_mem={FAST_DOM0_MEM_MB}M"),
        "-initrd".to_string(),
        initrd_arg(&[(kernel, cmdline)]),
    ]);
    a
}

/// A toolstack command dom0 runs on the domain once its console shows some text, e.g.
/// `xl shutdown NAME` after the app printed that it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XlAction {
    /// The `xl` subcommand: `shutdown`, `reboot` or `mem-set`.
    pub command: &'static str,
    /// Arguments after the domain name (e.g. the MiB of `mem-set`).
    pub args: &'static str,
    /// Console text to wait for.
    pub when: &'static str,
}

/// One domain of an xl run: dom0 `xl create`s it, streams its console, runs its
/// actions, and reports its exit status.
#[derive(Debug, Clone)]
pub struct XlDomain {
    /// The PV ELF.
    pub image: PathBuf,
    /// The guest command line (xl's `extra`).
    pub cmdline: String,
    /// Its memory in MiB.
    pub memory_mb: u32,
    /// Toolstack commands to run on it, in order, each once its console shows its text
    /// (and after the previous one ran).
    pub actions: Vec<XlAction>,
    /// Seconds after which dom0 destroys it and reports status 125.
    pub timeout_secs: u32,
    /// Show its console while it runs (dom0 copies the log every 0.2 s). Without,
    /// once the domain printed its first output and has no action left, dom0 only
    /// checks twice a second, with shell builtins, whether it ended (no process
    /// starts), and shows the console when it has.
    pub stream: bool,
    /// Create it paused and unpause it once the toolstack's work for it in dom0 has
    /// ended (0.5 s after `xl list` shows it), so that dom0 idles while it runs (see
    /// `xl_batch`; the `timing` line then starts at the unpause).
    pub settle: bool,
}

/// QEMU arguments for an xl run, and the domains' names in boot order.
#[derive(Debug, Clone)]
pub struct XlRun {
    /// Arguments for [`QEMU`].
    pub qemu_args: Vec<String>,
    /// The domain names, as in the `xen-testbed: domain NAME …` lines.
    pub names: Vec<String>,
}

/// QEMU arguments booting Xen + the Linux dom0 of `tb`, whose init runs `xl create` on
/// `app` (a PV ELF) with guest command line `extra` and `app_mem_mb` MiB. The app's
/// console output reaches QEMU's stdout as the domain writes it (streamed from
/// xenconsoled's log), after the xl config used; QEMU exits with `(code << 1) | 1`,
/// where code is N from the app's last `upcall: exit status N` console line if there is
/// one, else 0 for a poweroff, 101 for a crash, and 125 for any other shutdown, a failed
/// `xl create`, or no shutdown within 300 s.
pub fn xl_qemu_args(
    tb: &XlTestbed,
    app: &Path,
    extra: &str,
    app_mem_mb: u32,
) -> Result<Vec<String>, Failure> {
    let domain = XlDomain {
        image: app.to_path_buf(),
        cmdline: extra.to_string(),
        memory_mb: app_mem_mb,
        actions: Vec::new(),
        timeout_secs: XL_TIMEOUT_SECS,
        stream: true,
        settle: false,
    };
    Ok(xl_run_qemu_args(tb, std::slice::from_ref(&domain))?.qemu_args)
}

/// QEMU arguments booting Xen + the Linux dom0 of `tb`, whose init runs `domains` one
/// after another in one boot (each as described for [`xl_qemu_args`]; QEMU's exit
/// status is the last one's). Split the console output per domain with
/// [`crate::xl_output::split`]. A single domain is named after its image file, several
/// get `-1`, `-2`, … appended (so each has its own console log).
///
/// Writes a per-run initramfs (the base one plus a small cpio archive holding
/// `/domains` and `/dom/K/{kernel,cfg,env}`) under [`cache_dir`]`/runs`, named by its
/// contents.
pub fn xl_run_qemu_args(tb: &XlTestbed, domains: &[XlDomain]) -> Result<XlRun, Failure> {
    if domains.is_empty() {
        return fail("xl test bed: no domain to run");
    }
    let mut names = Vec::new();
    let mut files = Vec::new();
    for (k, d) in domains.iter().enumerate() {
        if d.memory_mb == 0 {
            return fail("xl test bed: a domain's memory must be at least 1 MiB");
        }
        let stem = domain_name(&d.image);
        let name = if domains.len() == 1 {
            stem
        } else {
            format!("{stem}-{}", k + 1)
        };
        let dir = format!("dom/{}", k + 1);
        let config = xl_config(&name, &format!("/{dir}/kernel"), &d.cmdline, d.memory_mb)?;
        let env = domain_env(&name, d, &d.actions)?;
        files.push(DomainFiles {
            dir,
            image: read(&d.image)?,
            config,
            env,
        });
        names.push(name);
    }
    let initramfs = run_initramfs(tb, &files)?;
    if let Some(p) = [&tb.vmlinux, &initramfs]
        .into_iter()
        .find(|p| p.to_string_lossy().contains(' '))
    {
        return fail(format!(
            "xl test bed: {} has a space in its path, which QEMU's -initrd cannot take",
            p.display()
        ));
    }
    // Domains run one at a time: room for dom0, the largest domain and Xen itself.
    let largest = domains.iter().map(|d| d.memory_mb).max().unwrap_or(0);
    let memory = (LINUX_DOM0_MEM_MB + largest + 128).max(1024);
    let mut a = machine_args(memory, 2);
    a.extend([
        "-kernel".to_string(),
        tb.xen.display().to_string(),
        "-append".to_string(),
        format!("{XEN_CMDLINE} dom0_mem={LINUX_DOM0_MEM_MB}M dom0_max_vcpus=1 dom0_vcpus_pin"),
        "-initrd".to_string(),
        initrd_arg(&[(&tb.vmlinux, LINUX_CMDLINE), (&initramfs, "")]),
    ]);
    Ok(XlRun {
        qemu_args: a,
        names,
    })
}

/// The settings file (`/dom/K/env`, sourced by the init) of domain `name`.
fn domain_env(name: &str, d: &XlDomain, actions: &[XlAction]) -> Result<String, Failure> {
    let mut env = format!(
        "name={name}\ntimeout={}\nstream={}\nsettle={}\nactions={}\n",
        d.timeout_secs,
        u8::from(d.stream),
        u8::from(d.settle),
        actions.len()
    );
    for (k, a) in actions.iter().enumerate() {
        let plain_args = a
            .args
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ');
        if !matches!(a.command, "shutdown" | "reboot" | "mem-set")
            || !plain_args
            || a.when.is_empty()
            || a.when.contains(['\'', '\n'])
        {
            return fail(format!(
                "xl test bed: unsupported action `xl {} {}` when `{}`",
                a.command, a.args, a.when
            ));
        }
        let k = k + 1;
        env.push_str(&format!(
            "action{k}='{}'\naction{k}_args='{}'\naction{k}_when='{}'\n",
            a.command, a.args, a.when
        ));
    }
    Ok(env)
}

/// `cargo xtask testbed xen`: prepares both test beds, with progress; prints what it made.
pub fn command() -> Outcome {
    let start = Instant::now();
    let xen = ensure_hypervisor()?;
    let tb = ensure_xl_testbed()?;
    eprintln!(
        "xtask: Xen test bed ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!("hypervisor:        {}", xen.display());
    println!("dom0 Linux kernel: {}", tb.vmlinux.display());
    println!("dom0 initramfs:    {}", tb.initramfs.display());
    let kernel = Path::new("PV-KERNEL");
    println!(
        "boot a PV kernel as dom0:\n  {}",
        qemu::shell_words(QEMU, &dom0_qemu_args(&xen, kernel, "ARGS"))
    );
    Ok(0)
}

/// QEMU arguments common to both paths: TCG (Xen cannot run under a software KVM),
/// `-cpu qemu64` (`max` makes a Linux dom0 crash through SMAP) with RDRAND (without it a
/// Linux dom0 has no entropy, and each `xl create` waits 3 s for libuuid's random
/// bytes), one CPU, no display, the serial port on stdio, isa-debug-exit.
/// `cpus` = 1: the fast path (the app is the only guest). 2 for the xl path: the Linux
/// dom0 is pinned to CPU 0 and the app's domain to CPU 1, so dom0's work (xenconsoled,
/// the init's console pump) does not delay the app (multi-threaded TCG runs each vCPU
/// on its own host thread).
fn machine_args(memory_mb: u32, cpus: u32) -> Vec<String> {
    let accel = if cpus > 1 { "tcg,thread=multi" } else { "tcg" };
    let mut a: Vec<String> = ["-accel", accel, "-cpu", "qemu64,+rdrand", "-smp"]
        .map(String::from)
        .to_vec();
    a.push(cpus.to_string());
    a.push("-m".into());
    a.push(format!("{memory_mb}M"));
    a.extend(
        [
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            // Host threads named `CPU N/TCG`: lets `top -H` or schedstat tell which
            // vCPU waits for a host CPU.
            "-name",
            "upcall-xen,debug-threads=on",
        ]
        .map(String::from),
    );
    a
}

/// QEMU's `-initrd` value for multiboot modules: `path cmdline` each, separated by
/// commas, with the commas inside doubled.
fn initrd_arg(modules: &[(&Path, &str)]) -> String {
    modules
        .iter()
        .map(|(path, cmdline)| {
            let path = path.display().to_string();
            let module = if cmdline.is_empty() {
                path
            } else {
                format!("{path} {cmdline}")
            };
            double_commas(&module)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Escapes commas for QEMU option values.
fn double_commas(s: &str) -> String {
    s.replace(',', ",,")
}

/// The domain's name: the app file's name, restricted to characters xl and file names
/// take.
fn domain_name(app: &Path) -> String {
    let stem = app.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name: String = stem
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("app{name}")
    } else {
        name
    }
}

/// The xl config that runs `kernel` (a path in dom0) as a PV domain on CPU 1 that is
/// destroyed however it ends.
fn xl_config(name: &str, kernel: &str, extra: &str, memory_mb: u32) -> Result<String, Failure> {
    if extra.chars().any(char::is_control) {
        return fail("xl test bed: the guest command line must not contain control characters");
    }
    let mut cfg = format!("name = \"{name}\"\ntype = \"pv\"\nkernel = \"{kernel}\"\n");
    if !extra.is_empty() {
        // libxlu's quoted strings take C-like backslash escapes.
        let quoted = extra.replace('\\', "\\\\").replace('"', "\\\"");
        cfg.push_str(&format!("extra = \"{quoted}\"\n"));
    }
    cfg.push_str(&format!(
        "memory = {memory_mb}\nvcpus = 1\ncpus = \"1\"\non_poweroff = \"destroy\"\n\
         on_reboot = \"destroy\"\non_crash = \"destroy\"\n"
    ));
    Ok(cfg)
}

/// Per-run initramfs files kept however old (each is as large as the base archive).
const RUNS_KEPT: usize = 16;

/// What the per-run archive holds for one domain, under `/dir`.
struct DomainFiles {
    dir: String,
    image: Vec<u8>,
    config: String,
    env: String,
}

/// Writes (unless it exists) the per-run initramfs: the base archive followed by one
/// holding `/domains` (the domains' directories in boot order) and each domain's
/// kernel, config and settings. Named by a hash of its contents, so parallel runs never
/// share a half-written file. Only the [`RUNS_KEPT`] most recently used ones and those
/// used in the last minute are kept (QEMU reads its `-initrd` files when it starts, so
/// removing one later does not disturb a running test).
fn run_initramfs(tb: &XlTestbed, domains: &[DomainFiles]) -> Result<PathBuf, Failure> {
    let meta = fs::metadata(&tb.initramfs)
        .or_else(|e| fail(format!("xl test bed: {}: {e}", tb.initramfs.display())))?;
    let mut h = Fnv::new();
    h.add(tb.initramfs.display().to_string().as_bytes());
    h.add(&meta.len().to_le_bytes());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
    h.add(&mtime.unwrap_or_default().as_nanos().to_le_bytes());
    for d in domains {
        for part in [
            d.dir.as_bytes(),
            &d.image,
            d.config.as_bytes(),
            d.env.as_bytes(),
        ] {
            h.add(&(part.len() as u64).to_le_bytes());
            h.add(part);
        }
    }
    let dir = cache_dir().join("runs");
    mkdir(&dir)?;
    let path = dir.join(format!("{:016x}.cpio", h.finish()));
    // Mark it used (a failure just means it does not exist yet).
    let reused = fs::File::options()
        .append(true)
        .open(&path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .is_ok();
    prune(&dir, RUNS_KEPT, Duration::from_secs(60));
    if reused {
        return Ok(path);
    }
    let mut cpio = Cpio::new(Vec::new());
    let written: io::Result<()> = (|| {
        let list: String = domains.iter().map(|d| format!("/{}\n", d.dir)).collect();
        cpio.file("domains", 0o644, list.as_bytes())?;
        cpio.dir("dom")?;
        for d in domains {
            cpio.dir(&d.dir)?;
            cpio.file(&format!("{}/kernel", d.dir), 0o755, &d.image)?;
            cpio.file(&format!("{}/cfg", d.dir), 0o644, d.config.as_bytes())?;
            cpio.file(&format!("{}/env", d.dir), 0o644, d.env.as_bytes())?;
        }
        Ok(())
    })();
    written.or_else(|e| fail(format!("xl test bed: domain archive: {e}")))?;
    let extra = cpio
        .finish()
        .or_else(|e| fail(format!("xl test bed: domain archive: {e}")))?;
    let tmp = temp_path(&path);
    fs::copy(&tb.initramfs, &tmp)
        .and_then(|_| fs::OpenOptions::new().append(true).open(&tmp))
        .and_then(|mut f| f.write_all(&extra))
        .and_then(|()| fs::rename(&tmp, &path))
        .or_else(|e| {
            let _ = fs::remove_file(&tmp);
            fail(format!("xl test bed: write {}: {e}", path.display()))
        })?;
    Ok(path)
}

/// Removes the files in `dir` except the `keep` most recently modified ones and those
/// modified within `age` (best effort).
fn prune(dir: &Path, keep: usize, age: Duration) {
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (modified, path) in files.into_iter().skip(keep) {
        if now.duration_since(modified).is_ok_and(|d| d > age) {
            let _ = fs::remove_file(path);
        }
    }
}

/// [`ensure_hypervisor`] with the lock held.
fn hypervisor() -> Result<PathBuf, Failure> {
    let out = cache_dir().join("xen-4.17-amd64");
    if out.is_file() {
        return Ok(out);
    }
    let debs = ensure_debs(&[XEN_PACKAGE.to_string()])?;
    let dir = unpack(&debs[0], &[])?;
    eprintln!("xtask: Xen test bed: gunzip {XEN_GZ}");
    let tmp = temp_path(&out);
    let file =
        fs::File::create(&tmp).or_else(|e| fail(format!("create {}: {e}", tmp.display())))?;
    host::run_checked(
        Command::new("gzip")
            .arg("-dc")
            .arg(dir.join(XEN_GZ))
            .stdout(file),
        "gunzip of the Xen hypervisor",
    )?;
    check_elf(&tmp)?;
    rename(&tmp, &out)?;
    Ok(out)
}

/// [`ensure_xl_testbed`] with the lock held.
fn xl_testbed() -> Result<XlTestbed, Failure> {
    let xen = hypervisor()?;
    let mut packages = vec![kernel_package()?];
    packages.extend(DOM0_PACKAGES.iter().map(|p| p.to_string()));
    let debs = ensure_debs(&packages)?;
    let mut key = Fnv::new();
    key.add(FORMAT.as_bytes());
    key.add(INIT.as_bytes());
    for deb in &debs {
        key.add(deb.file_name().unwrap_or_default().as_encoded_bytes());
    }
    let name = format!("xl-{:016x}", key.finish());
    let dir = cache_dir().join(&name);
    let tb = XlTestbed {
        xen,
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio"),
    };
    if tb.vmlinux.is_file() && tb.initramfs.is_file() {
        return Ok(tb);
    }
    let start = Instant::now();
    eprintln!(
        "xtask: Xen test bed: assembling the Linux dom0 in {} (once)",
        dir.display()
    );
    let kernel = unpack(&debs[0], KERNEL_FILES)?;
    let mut unpacked = BTreeMap::new();
    for (package, deb) in packages.iter().zip(&debs).skip(1) {
        unpacked.insert(package.as_str(), unpack(deb, &[])?);
    }
    let tmp = temp_path(&dir);
    mkdir(&tmp)?;
    let built = (|| {
        let vmlinuz = only_file(&kernel.join("boot"), "vmlinuz-")?;
        eprintln!(
            "xtask: Xen test bed: extracting vmlinux from {}",
            vmlinuz.display()
        );
        extract_vmlinux(&vmlinuz, &tmp.join("vmlinux"))?;
        eprintln!("xtask: Xen test bed: writing the dom0 initramfs");
        dom0_tree(&kernel, &unpacked)?.write(&tmp.join("initramfs.cpio"))
    })();
    if built.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        built?;
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        // Another process may have finished first: use its copy.
        let _ = fs::remove_dir_all(&tmp);
        if !(tb.vmlinux.is_file() && tb.initramfs.is_file()) {
            return fail(format!(
                "rename {} to {}: {e}",
                tmp.display(),
                dir.display()
            ));
        }
    }
    // Earlier versions of the dom0 (a new kernel package, a changed init) are garbage.
    for entry in fs::read_dir(cache_dir()).into_iter().flatten().flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if other.starts_with("xl-") && other != name && !other.contains(".tmp") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    eprintln!(
        "xtask: Xen test bed: dom0 assembled in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(tb)
}

/// The file in `dir` whose name starts with `prefix`; fails unless there is exactly one.
fn only_file(dir: &Path, prefix: &str) -> Result<PathBuf, Failure> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    match &found[..] {
        [one] => Ok(one.clone()),
        _ => fail(format!(
            "Xen test bed: expected one {prefix}* in {}, found {}",
            dir.display(),
            found.len()
        )),
    }
}

/// The dom0's root file system: busybox, the Xen tools and every library of the
/// library packages, the Xen modules, device and mount-point directories, `/init`.
fn dom0_tree(kernel: &Path, unpacked: &BTreeMap<&str, PathBuf>) -> Result<Tree, Failure> {
    let mut t = Tree::default();
    for dir in [
        "proc", "sys", "dev", "tmp", "run", "etc/xen", "var/log", "var/lib",
    ] {
        t.insert(dir, Node::Dir);
    }
    t.insert("dev/console", Node::CharDev(5, 1));
    t.insert("bin/sh", Node::Symlink("busybox".into()));
    t.insert("init", Node::Data(INIT.as_bytes().to_vec(), 0o755));
    t.insert("etc/xen/xl.conf", Node::Data(Vec::new(), 0o644));
    for (package, dir) in unpacked {
        match *package {
            "busybox-static" => t.add_file(dir, "bin/busybox")?,
            "xen-utils-4.17" => {
                for tool in XEN_TOOLS {
                    t.add_file(dir, &format!("{XEN_BIN}/{tool}"))?;
                }
            }
            _ => t.add_tree(dir, &|path: &str| {
                (path.starts_with("lib/")
                    || path.starts_with("lib64/")
                    || path.starts_with("usr/lib/x86_64-linux-gnu/"))
                    && !path.contains("/gconv/")
            })?,
        }
    }
    let modules = only_file(&kernel.join("lib/modules"), "")?.join("kernel/drivers/xen");
    for module in MODULES {
        let name = format!("{module}.ko");
        let path = [modules.join(&name), modules.join(module).join(&name)]
            .into_iter()
            .find(|p| p.is_file());
        let Some(path) = path else {
            return fail(format!(
                "Xen test bed: kernel module {name} not found under {}",
                modules.display()
            ));
        };
        t.insert(&format!("modules/{name}"), Node::File(path, 0o644));
    }
    t.check_libraries()?;
    Ok(t)
}

/// The kernel package that [`KERNEL_META`] depends on: the one already downloaded, else
/// asked of `apt-cache`.
fn kernel_package() -> Result<String, Failure> {
    let debs = cache_dir().join("debs");
    let mut have: Vec<String> = fs::read_dir(&debs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
        .filter_map(|n| n.split('_').next().map(str::to_string))
        .filter(|p| p != KERNEL_META)
        .collect();
    have.sort();
    if let Some(p) = have.pop() {
        return Ok(p);
    }
    for attempt in 0..2 {
        let out = Command::new("apt-cache")
            .args(["depends", KERNEL_META])
            .output()
            .or_else(|e| fail(format!("cannot start apt-cache: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let dep = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"));
        if let Some(p) = dep {
            return Ok(p.to_string());
        }
        if attempt == 0 {
            apt_update()?;
        }
    }
    fail(format!(
        "Xen test bed: apt-cache does not know {KERNEL_META} (is this Debian?)"
    ))
}

/// The `.deb` files of `packages` (same order), downloading the missing ones into
/// [`cache_dir`]`/debs` with one `apt-get download`.
fn ensure_debs(packages: &[String]) -> Result<Vec<PathBuf>, Failure> {
    let dir = cache_dir().join("debs");
    mkdir(&dir)?;
    let find = |package: &str| -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        found.pop()
    };
    let missing: Vec<&String> = packages.iter().filter(|p| find(p).is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|p| p.as_str()).collect();
        eprintln!(
            "xtask: Xen test bed: apt-get download {} (into {})",
            names.join(" "),
            dir.display()
        );
        let download = || {
            Command::new("apt-get")
                // As root, apt downloads as user _apt, who may not write to `dir`.
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                .args(&names)
                .current_dir(&dir)
                .status()
        };
        match download() {
            Ok(s) if s.success() => {}
            Ok(_) => {
                // Stale or missing package lists are the usual cause.
                apt_update()?;
                host::run_checked(
                    Command::new("apt-get")
                        .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                        .args(&names)
                        .current_dir(&dir),
                    "apt-get download",
                )?;
            }
            Err(e) => return fail(format!("cannot start apt-get: {e}")),
        }
    }
    packages
        .iter()
        .map(|p| match find(p) {
            Some(deb) => Ok(deb),
            None => fail(format!("apt-get download did not produce {p}_*.deb")),
        })
        .collect()
}

/// `apt-get update` where that is possible (root), else a failure naming the command.
fn apt_update() -> Result<(), Failure> {
    if !is_root() {
        return fail("Xen test bed: apt cannot find the packages; run `sudo apt-get update`");
    }
    eprintln!("xtask: Xen test bed: apt-get update");
    host::run_checked(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )
}

/// Whether we run as root.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Unpacks `deb` (only the members matching the `tar` wildcards `only`, if given) into
/// [`cache_dir`]`/unpacked/<deb name>`, unless already there; returns that directory.
fn unpack(deb: &Path, only: &[&str]) -> Result<PathBuf, Failure> {
    let stem = deb.file_stem().unwrap_or_default().to_string_lossy();
    let dir = cache_dir().join("unpacked").join(&*stem);
    if dir.is_dir() {
        return Ok(dir);
    }
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    eprintln!("xtask: Xen test bed: unpacking {name}");
    let tmp = temp_path(&dir);
    mkdir(&tmp)?;
    let unpacked = extract(deb, only, &tmp);
    if unpacked.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        unpacked?;
    }
    rename(&tmp, &dir)?;
    Ok(dir)
}

/// `dpkg-deb -x deb dir`, or only the members matching `only` through `tar`.
fn extract(deb: &Path, only: &[&str], dir: &Path) -> Result<(), Failure> {
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    if only.is_empty() {
        host::run_checked(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir),
            &format!("dpkg-deb -x {name}"),
        )
    } else {
        let mut dpkg = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(deb)
            .stdout(Stdio::piped())
            .spawn()
            .or_else(|e| fail(format!("cannot start dpkg-deb: {e}")))?;
        let tar = host::run_checked(
            Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(dir)
                .arg("--wildcards")
                .args(only)
                .stdin(dpkg.stdout.take().expect("stdout is piped")),
            &format!("tar -x of {name}"),
        );
        let dpkg = dpkg.wait();
        tar?;
        if !dpkg.is_ok_and(|s| s.success()) {
            return fail(format!("dpkg-deb --fsys-tarfile {name} failed"));
        }
        Ok(())
    }
}

/// Cuts the kernel's ELF out of a bzImage: the setup header locates the compressed
/// payload, whose last four bytes are the ELF's size; the payload is decompressed with
/// the matching tool (installed from Debian if missing and we are root).
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), Failure> {
    let data = read(bzimage)?;
    let bad = |what: &str| fail(format!("{}: {what}", bzimage.display()));
    if data.len() < 0x250 || &data[0x202..0x206] != b"HdrS" {
        return bad("not a bzImage (no HdrS setup header)");
    }
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248) as usize;
    let Some(payload) = data.get(start..start + u32_at(0x24c) as usize) else {
        return bad("payload outside the file");
    };
    if payload.len() < 8 {
        return bad("empty payload");
    }
    let size = u32::from_le_bytes(payload[payload.len() - 4..].try_into().expect("4 bytes"));
    let (tool, args, package): (&str, &[&str], &str) = match payload {
        [0x1f, 0x8b, ..] => ("gzip", &["-dc"], "gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", &["-dc", "--single-stream"], "xz-utils"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["-dcq"], "zstd"),
        _ => return bad("payload compressed with a method this tool does not handle"),
    };
    ensure_tool(tool, package)?;
    let file = fs::File::create(out).or_else(|e| fail(format!("create {}: {e}", out.display())))?;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .or_else(|e| fail(format!("cannot start {tool}: {e}")))?;
    // The trailing size makes some tools complain after they wrote everything: the
    // result is judged by its size, not by their exit status.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(payload);
    let _ = child.wait();
    let got = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    if got != u64::from(size) {
        return fail(format!(
            "{tool} unpacked {got} bytes of {}'s payload, expected {size}",
            bzimage.display()
        ));
    }
    check_elf(out)
}

/// Makes sure `tool` is on `PATH`, installing Debian `package` as root if it is not.
fn ensure_tool(tool: &str, package: &str) -> Result<(), Failure> {
    if vmm::which(tool).is_some() {
        return Ok(());
    }
    if !is_root() {
        return fail(format!(
            "{tool} not found; install it with: sudo apt-get install {package}"
        ));
    }
    eprintln!("xtask: {tool} not found; installing Debian package {package} (apt-get)...");
    host::run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {package}"),
    )
}

/// Fails unless `path` starts with the ELF magic.
fn check_elf(path: &Path) -> Result<(), Failure> {
    let mut magic = [0u8; 4];
    let ok = fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok();
    if ok && &magic == b"\x7fELF" {
        Ok(())
    } else {
        fail(format!("{} is not an ELF file", path.display()))
    }
}

/// Reads a whole file, failing with its name.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).or_else(|e| fail(format!("read {}: {e}", path.display())))
}

/// Creates a directory and its parents.
fn mkdir(dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))
}

/// Renames, failing with both names.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), Failure> {
    fs::rename(from, to).or_else(|e| {
        fail(format!(
            "rename {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// A sibling of `path` private to this call, renamed onto `path` when complete.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_doubles_commas() {
        assert_eq!(double_commas("a,b,,c"), "a,,b,,,,c");
        let arg = initrd_arg(&[(Path::new("/x,y/k"), "a=1,2 b"), (Path::new("/i.cpio"), "")]);
        assert_eq!(arg, "/x,,y/k a=1,,2 b,/i.cpio");
    }

    #[test]
    fn dom0_args_follow_the_recipe() {
        let a = dom0_qemu_args(Path::new("/x/xen"), Path::new("/k"), "reboot");
        let s = a.join(" ");
        for part in [
            "-accel tcg",
            "-cpu qemu64,+rdrand",
            "-no-reboot",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-serial stdio",
            "-kernel /x/xen",
            "dom0_mem=64M",
            "-initrd /k reboot",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }

    #[test]
    fn xl_config_quotes_extra() {
        let c = xl_config("hello", "/dom/1/kernel", r#"a "b c" d\e"#, 32).unwrap();
        assert!(c.contains(r#"extra = "a \"b c\" d\\e""#), "{c}");
        assert!(c.contains("memory = 32\n"));
        assert!(c.contains("name = \"hello\"\n"));
        assert!(c.contains("kernel = \"/dom/1/kernel\"\n"));
        assert!(!xl_config("x", "/k", "", 8).unwrap().contains("extra"));
        assert!(xl_config("x", "/k", "a\nb", 8).is_err());
    }

    #[test]
    fn domain_env_numbers_actions() {
        let a = |command, args, when| XlAction {
            command,
            args,
            when,
        };
        let d = |stream, settle| XlDomain {
            image: PathBuf::from("/k"),
            cmdline: String::new(),
            memory_mb: 8,
            actions: Vec::new(),
            timeout_secs: 60,
            stream,
            settle,
        };
        let env = domain_env(
            "s-1",
            &d(false, true),
            &[
                a("mem-set", "64", "ready"),
                a("mem-set", "128", "now 65536 KiB"),
            ],
        )
        .unwrap();
        assert_eq!(
            env,
            "name=s-1\ntimeout=60\nstream=0\nsettle=1\nactions=2\naction1='mem-set'\naction1_args='64'\n\
             action1_when='ready'\naction2='mem-set'\naction2_args='128'\n\
             action2_when='now 65536 KiB'\n"
        );
        assert!(domain_env("x", &d(true, false), &[a("destroy", "", "r")]).is_err());
        assert!(domain_env("x", &d(true, false), &[a("mem-set", "1;rm", "r")]).is_err());
        assert!(domain_env("x", &d(true, false), &[a("shutdown", "", "it's")]).is_err());
    }

    #[test]
    fn domain_names_are_safe() {
        assert_eq!(domain_name(Path::new("/t/hello")), "hello");
        assert_eq!(domain_name(Path::new("/t/a b$c.elf")), "a_b_c");
        assert_eq!(domain_name(Path::new("/t/.x")), "app.x");
    }

    #[test]
    fn init_is_valid_shell() {
        let mut sh = Command::new("sh")
            .arg("-n")
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh runs");
        sh.stdin.take().unwrap().write_all(INIT.as_bytes()).unwrap();
        assert!(sh.wait().unwrap().success(), "sh -n rejects INIT");
    }
}
