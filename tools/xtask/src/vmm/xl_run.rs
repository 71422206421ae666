//! Running domains as xl domUs of the Linux-dom0 test bed (see [`crate::testbed::xen`]):
//! their xl configs and settings, the per-run initramfs that carries them to dom0's
//! `/init` (`xen_dom0_init.sh`), and the QEMU command line.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::testbed::dom0::XlTestbed;
use crate::testbed::files::{mkdir, read, temp_path};
use crate::testbed::initramfs::{Cpio, Fnv};
use crate::testbed::xen::{
    LINUX_CMDLINE, LINUX_DOM0_MEM_MB, XEN_CMDLINE, cache_dir, initrd_arg, machine_args,
};
use crate::{Failure, fail};

/// Seconds the dom0 init waits for a domain of `cargo xtask run` to end before it
/// destroys it and reports status 125.
const XL_TIMEOUT_SECS: u32 = 300;

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
    /// Its vCPUs (xl's `vcpus`), pinned to QEMU CPUs 1..=N (dom0 has CPU 0).
    pub vcpus: u32,
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
    /// `Some`: the domain gets a vif on dom0's bridge to QEMU's user network, and these
    /// host ports are forwarded to it (see `xen_net`).
    pub net: Option<Vec<crate::vmm::qemu::Forward>>,
    /// An initramfs for the kernel (xl's `ramdisk`; a Linux guest's, for comparisons).
    pub ramdisk: Option<PathBuf>,
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
/// `xl create`, or no shutdown within 300 s. With `forwards`, the domain has a network
/// and those host ports reach it.
pub fn xl_qemu_args(
    tb: &XlTestbed,
    app: &Path,
    extra: &str,
    app_mem_mb: u32,
    vcpus: u32,
    forwards: &[crate::vmm::qemu::Forward],
) -> Result<Vec<String>, Failure> {
    let domain = XlDomain {
        image: app.to_path_buf(),
        cmdline: extra.to_string(),
        memory_mb: app_mem_mb,
        vcpus,
        actions: Vec::new(),
        timeout_secs: XL_TIMEOUT_SECS,
        stream: true,
        settle: false,
        net: (!forwards.is_empty()).then(|| forwards.to_vec()),
        ramdisk: None,
    };
    Ok(xl_run_qemu_args(tb, std::slice::from_ref(&domain))?.qemu_args)
}

/// QEMU arguments booting Xen + the Linux dom0 of `tb`, whose init runs `domains` one
/// after another in one boot (each as described for [`xl_qemu_args`]; QEMU's exit
/// status is the last one's). Split the console output per domain with
/// [`crate::vmm::xl_output::split`]. A single domain is named after its image file, several
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
        let kernel = format!("/{dir}/kernel");
        let mut config = if tb.libvirt {
            // The libvirt flavour's dom0 defines the domain from libvirt XML.
            crate::testbed::libvirt_xen::domain_xml(&name, &kernel, d)?
        } else {
            xl_config(&name, &kernel, &d.cmdline, d.memory_mb, d.vcpus)?
        };
        if d.net.is_some() {
            config.push_str(crate::testbed::xen_net::VIF_CONFIG);
        }
        let ramdisk = match &d.ramdisk {
            Some(path) => {
                config.push_str(&format!("ramdisk = \"/{dir}/ramdisk\"\n"));
                read(path)?
            }
            None => Vec::new(),
        };
        let env = domain_env(&name, d, &d.actions)?;
        files.push(DomainFiles {
            dir,
            image: read(&d.image)?,
            // A Linux guest (a bzImage-like kernel without our symbols) gets an empty map.
            system_map: crate::symbolize::Symbols::load(&d.image)
                .map(|s| s.system_map())
                .unwrap_or_default(),
            ramdisk,
            config,
            env,
        });
        names.push(name);
    }
    let forwards: Vec<crate::vmm::qemu::Forward> = domains
        .iter()
        .flat_map(|d| d.net.iter().flatten().copied())
        .collect();
    let networked = domains.iter().any(|d| d.net.is_some());
    let initramfs = run_initramfs(tb, &files, networked)?;
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
    // CPU 0 for dom0, the others for the domain with the most vCPUs.
    let vcpus = domains.iter().map(|d| d.vcpus).max().unwrap_or(1);
    let mut a = machine_args(memory, 1 + vcpus);
    if tb.libvirt {
        crate::testbed::libvirt_xen::set_cpu(&mut a);
    }
    a.extend([
        "-kernel".to_string(),
        tb.xen.display().to_string(),
        "-append".to_string(),
        format!("{XEN_CMDLINE} dom0_mem={LINUX_DOM0_MEM_MB}M dom0_max_vcpus=1 dom0_vcpus_pin"),
        "-initrd".to_string(),
        initrd_arg(&[(&tb.vmlinux, LINUX_CMDLINE), (&initramfs, "")]),
    ]);
    if networked {
        a.extend(crate::testbed::xen_net::qemu_args(&forwards));
    }
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

/// The domain's name: the app file's name, restricted to characters xl and file names
/// take.
fn domain_name(app: &Path) -> String {
    let stem = app.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = crate::host::safe_name(&stem.unwrap_or_default(), "-_.");
    if name.is_empty() || name.starts_with('.') {
        format!("app{name}")
    } else {
        name
    }
}

/// The xl config that runs `kernel` (a path in dom0) as a PV domain with `vcpus` vCPUs
/// on CPUs 1..=`vcpus` (CPU 0 is dom0's) that is destroyed however it ends.
fn xl_config(
    name: &str,
    kernel: &str,
    extra: &str,
    memory_mb: u32,
    vcpus: u32,
) -> Result<String, Failure> {
    if vcpus == 0 {
        return fail("xl test bed: a domain needs at least one vCPU");
    }
    if extra.chars().any(char::is_control) {
        return fail("xl test bed: the guest command line must not contain control characters");
    }
    let mut cfg = format!("name = \"{name}\"\ntype = \"pv\"\nkernel = \"{kernel}\"\n");
    if !extra.is_empty() {
        // libxlu's quoted strings take C-like backslash escapes.
        let quoted = extra.replace('\\', "\\\\").replace('"', "\\\"");
        cfg.push_str(&format!("extra = \"{quoted}\"\n"));
    }
    // vCPU k on CPU k + 1, each alone: pinned to a range, Xen's scheduler may queue
    // two vCPUs on one CPU for a time slice (tens of ms late wake-ups under TCG).
    let cpus = if vcpus == 1 {
        "\"1\"".to_string()
    } else {
        let each: Vec<String> = (1..=vcpus).map(|c| format!("\"{c}\"")).collect();
        format!("[{}]", each.join(", "))
    };
    cfg.push_str(&format!(
        "memory = {memory_mb}\nvcpus = {vcpus}\ncpus = {cpus}\non_poweroff = \"destroy\"\n\
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
    /// The kernel's functions (`System.map`), for `xenctx` when the domain hangs.
    system_map: String,
    /// Empty: none.
    ramdisk: Vec<u8>,
    config: String,
    env: String,
}

/// Writes (unless it exists) the per-run initramfs: the base archive followed by one
/// holding `/domains` (the domains' directories in boot order) and each domain's
/// kernel, config and settings. Named by a hash of its contents, so parallel runs never
/// share a half-written file. Only the [`RUNS_KEPT`] most recently used ones and those
/// used in the last minute are kept (QEMU reads its `-initrd` files when it starts, so
/// removing one later does not disturb a running test).
fn run_initramfs(
    tb: &XlTestbed,
    domains: &[DomainFiles],
    networked: bool,
) -> Result<PathBuf, Failure> {
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
    if networked {
        h.add(crate::testbed::xen_net::NET_SH.as_bytes());
    }
    for d in domains {
        for part in [
            d.dir.as_bytes(),
            &d.image,
            &d.ramdisk,
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
        if networked {
            cpio.file("net.sh", 0o644, crate::testbed::xen_net::NET_SH.as_bytes())?;
        }
        cpio.dir("dom")?;
        for d in domains {
            cpio.dir(&d.dir)?;
            cpio.file(&format!("{}/kernel", d.dir), 0o755, &d.image)?;
            if !d.ramdisk.is_empty() {
                cpio.file(&format!("{}/ramdisk", d.dir), 0o644, &d.ramdisk)?;
            }
            cpio.file(&format!("{}/cfg", d.dir), 0o644, d.config.as_bytes())?;
            cpio.file(&format!("{}/env", d.dir), 0o644, d.env.as_bytes())?;
            cpio.file(
                &format!("{}/System.map", d.dir),
                0o644,
                d.system_map.as_bytes(),
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_config_quotes_extra() {
        let c = xl_config("hello", "/dom/1/kernel", r#"a "b c" d\e"#, 32, 1).unwrap();
        assert!(c.contains(r#"extra = "a \"b c\" d\\e""#), "{c}");
        assert!(c.contains("memory = 32\n"));
        assert!(c.contains("name = \"hello\"\n"));
        assert!(c.contains("kernel = \"/dom/1/kernel\"\n"));
        assert!(c.contains("vcpus = 1\ncpus = \"1\"\n"), "{c}");
        assert!(!xl_config("x", "/k", "", 8, 1).unwrap().contains("extra"));
        assert!(xl_config("x", "/k", "a\nb", 8, 1).is_err());
    }

    #[test]
    fn xl_config_pins_vcpus_beside_dom0() {
        let c = xl_config("s", "/k", "", 8, 2).unwrap();
        assert!(c.contains("vcpus = 2\ncpus = [\"1\", \"2\"]\n"), "{c}");
        assert!(xl_config("s", "/k", "", 8, 0).is_err());
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
            vcpus: 1,
            actions: Vec::new(),
            timeout_secs: 60,
            stream,
            settle,
            net: None,
            ramdisk: None,
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
}
