//! `cargo xtask libvirt APP`: the domain XML that runs an image under libvirt (what
//! OpenStack Nova, oVirt and KubeVirt drive), and with `--run` a run on this host's
//! libvirt (`qemu:///system`), or for Xen in the Xen test bed's dom0
//! ([`crate::libvirt_xen`]).
//!
//! The XML uses no raw QEMU arguments (`<qemu:commandline>`), which managed fleets
//! cannot add: direct kernel boot, `<features><acpi/>` (else libvirt passes `-no-acpi`
//! and the image sees one CPU and cannot power off), the serial console to a file, an
//! ISA pvpanic device, USB and the memory balloon off, and no DAC relabelling of the
//! image. The image ends by ACPI poweroff (libvirt: "Stopped Shutdown") or, when it
//! crashed, through pvpanic ("Crashed Panicked", then "Stopped Crashed"); the exit
//! status is read from its console line `upcall: exit status N`.
//!
//! `--run` listens to libvirt's lifecycle events (what Nova listens to), creates the
//! domain (`virsh create`, transient), follows the console file, and ends with the
//! app's status. The domain is destroyed and its tap removed whatever happens: on
//! success, on failure, on the timeout, and on Ctrl-C/SIGTERM.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::libvirt_testbed::{self, URI};
use crate::symbolize::Symbols;
use crate::{Failure, MachineArg, Outcome, Platform, build, fail, host, qemu};

/// Status for "the guest ended without reporting an exit status".
const NO_STATUS: u8 = 125;
/// QEMU's qboot firmware (libvirt `<loader type='rom'>`).
const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// `--net tap:HOST_IP/GUEST_IP`: a managed tap with the host's address on it; the
/// guest gets `ip=GUEST_IP/24 gw=HOST_IP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapNet {
    /// The host side's address (the guest's router).
    pub host: Ipv4Addr,
    /// The guest's address.
    pub guest: Ipv4Addr,
}

/// The prefix length of the tap's subnet.
const TAP_PREFIX: u8 = 24;

impl FromStr for TapNet {
    type Err = String;

    fn from_str(s: &str) -> Result<TapNet, String> {
        let bad =
            || format!("`{s}`: expected tap:HOST_IP/GUEST_IP, e.g. tap:192.168.77.1/192.168.77.2");
        let (host, guest) = s
            .strip_prefix("tap:")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(bad)?;
        let host: Ipv4Addr = host.parse().map_err(|_| bad())?;
        let guest: Ipv4Addr = guest.parse().map_err(|_| bad())?;
        let net = |a: Ipv4Addr| u32::from(a) >> (32 - TAP_PREFIX);
        if host == guest || net(host) != net(guest) {
            return Err(format!(
                "`{s}`: the two addresses must differ and share a /{TAP_PREFIX} subnet"
            ));
        }
        Ok(TapNet { host, guest })
    }
}

/// What goes into a domain.
#[derive(Debug, Clone)]
pub struct Domain {
    /// The domain's name.
    pub name: String,
    /// KVM or Xen PV.
    pub platform: Platform,
    /// Machine and firmware (KVM).
    pub machine: MachineArg,
    /// Whether `/dev/kvm` with hardware virtualization backs it (`type='kvm'`), else TCG.
    pub kvm_accel: bool,
    /// Virtual CPUs.
    pub smp: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// The image, absolute.
    pub image: PathBuf,
    /// The kernel command line (libos options and the app's arguments).
    pub cmdline: String,
    /// The console log file, absolute (KVM).
    pub console: PathBuf,
    /// A tap and its name (KVM).
    pub net: Option<(TapNet, String)>,
}

/// XML-escapes text for an element or a single- or double-quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The kernel command line: the tap's static address first (libos options), then the
/// app's arguments.
pub fn cmdline(net: Option<TapNet>, args: &[String]) -> String {
    let mut words = Vec::new();
    if let Some(n) = net {
        words.push(format!("ip={}/{TAP_PREFIX}", n.guest));
        words.push(format!("gw={}", n.host));
    }
    let app = qemu::kernel_cmdline(args);
    if !app.is_empty() {
        words.push(app);
    }
    words.join(" ")
}

/// The domain XML.
pub fn domain_xml(d: &Domain) -> Result<String, String> {
    let mut x = String::new();
    let image = escape(&d.image.display().to_string());
    let cmd = escape(&d.cmdline);
    let name = escape(&d.name);
    match d.platform {
        Platform::Kvm => {
            let (machine, loader) = match d.machine {
                MachineArg::Microvm => ("microvm", None),
                MachineArg::Qboot => ("pc", Some(QBOOT)),
                MachineArg::Pc => ("pc", None),
            };
            if d.net.is_some() && d.machine == MachineArg::Microvm {
                // The image needs modern virtio-mmio there, which only a raw QEMU
                // argument (`-global virtio-mmio.force-legacy=false`) selects.
                return Err(
                    "--net needs --machine pc or qboot (virtio-net-pci); on microvm QEMU \
                     offers legacy virtio-mmio unless given a raw argument"
                        .into(),
                );
            }
            let _ = writeln!(
                x,
                "<domain type='{}'>",
                if d.kvm_accel { "kvm" } else { "qemu" }
            );
            let _ = writeln!(x, "  <name>{name}</name>");
            let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", d.memory_mb);
            let _ = writeln!(x, "  <vcpu>{}</vcpu>", d.smp);
            x.push_str("  <os>\n");
            let _ = writeln!(x, "    <type arch='x86_64' machine='{machine}'>hvm</type>");
            if let Some(l) = loader {
                let _ = writeln!(x, "    <loader type='rom'>{l}</loader>");
            }
            let _ = writeln!(x, "    <kernel>{image}</kernel>");
            let _ = writeln!(x, "    <cmdline>{cmd}</cmdline>");
            x.push_str("  </os>\n");
            x.push_str("  <features><acpi/></features>\n");
            if d.kvm_accel {
                x.push_str("  <cpu mode='host-passthrough'/>\n");
            }
            x.push_str(
                "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  \
                 <on_crash>destroy</on_crash>\n  <devices>\n",
            );
            let _ = writeln!(
                x,
                "    <serial type='file'>\n      <source path='{}'/>\n      <target port='0'/>\n    </serial>",
                escape(&d.console.display().to_string())
            );
            if let Some((net, tap)) = &d.net {
                let _ = writeln!(
                    x,
                    "    <interface type='ethernet'>\n      <target dev='{}' managed='yes'/>\n      \
                     <source>\n        <ip address='{}' prefix='{TAP_PREFIX}'/>\n      </source>\n      \
                     <model type='virtio'/>\n    </interface>",
                    escape(tap),
                    net.host
                );
            }
            x.push_str(
                "    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n    \
                 <panic model='isa'><address type='isa' iobase='0x505'/></panic>\n  </devices>\n  \
                 <seclabel type='none' model='dac'/>\n</domain>\n",
            );
        }
        Platform::Xen => {
            if d.net.is_some() {
                return Err(
                    "--net is for the KVM platform; a Xen domU gets a vif on a dom0 \
                            bridge (see docs/deploying.md)"
                        .into(),
                );
            }
            let _ = writeln!(x, "<domain type='xen'>");
            let _ = writeln!(x, "  <name>{name}</name>");
            let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", d.memory_mb);
            let _ = writeln!(x, "  <vcpu>{}</vcpu>", d.smp);
            x.push_str("  <os>\n    <type arch='x86_64' machine='xenpv'>linux</type>\n");
            let _ = writeln!(x, "    <kernel>{image}</kernel>");
            let _ = writeln!(x, "    <cmdline>{cmd}</cmdline>");
            x.push_str(
                "  </os>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  \
                 <on_crash>destroy</on_crash>\n  <devices>\n    \
                 <console type='pty'><target type='xen' port='0'/></console>\n  </devices>\n</domain>\n",
            );
        }
    }
    Ok(x)
}

/// Options of `cargo xtask libvirt`.
#[derive(Debug, Clone)]
pub struct Opts {
    /// KVM or Xen.
    pub platform: Platform,
    /// Machine and firmware (KVM).
    pub machine: MachineArg,
    /// Virtual CPUs.
    pub smp: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// A tap network.
    pub net: Option<TapNet>,
    /// Build with `--release`.
    pub release: bool,
    /// Start it on this host's libvirt.
    pub run: bool,
    /// Destroy the domain after this many seconds (0 = never).
    pub timeout: u64,
}

/// The domain's and its tap's names: `upcall-APP` and `upc-APP` for printed XML; for a
/// run, unique to this process and its `n`th domain (runs may overlap).
fn names(app: &str, run: bool, n: u32) -> (String, String) {
    if run {
        let pid = std::process::id();
        (format!("upcall-{app}-{pid}-{n}"), format!("upc{pid}x{n}"))
    } else {
        // Interface names have at most 15 bytes.
        let tap: String = format!("upc-{app}").chars().take(15).collect();
        (format!("upcall-{app}"), tap)
    }
}

/// Makes the [`Domain`] for `app` (building it).
pub fn prepare(app: &str, args: &[String], o: &Opts, n: u32) -> Result<Domain, Failure> {
    host::check_app(app)?;
    let image = build::build(app, o.platform, o.release)?;
    let image = image
        .canonicalize()
        .or_else(|e| fail(format!("{}: {e}", image.display())))?;
    let (name, tap) = names(app, o.run, n);
    let dir = host::target_dir().join("libvirt");
    std::fs::create_dir_all(&dir).or_else(|e| fail(format!("{}: {e}", dir.display())))?;
    Ok(Domain {
        console: dir.join(format!("{name}.console.log")),
        name,
        platform: o.platform,
        machine: o.machine,
        kvm_accel: host::has_hw_virt(),
        smp: o.smp,
        memory_mb: o.memory_mb,
        image,
        cmdline: cmdline(o.net, args),
        net: o.net.map(|n| (n, tap)),
    })
}

/// `cargo xtask libvirt APP ...`.
pub fn command(app: &str, args: &[String], o: &Opts) -> Outcome {
    let d = prepare(app, args, o, 0)?;
    let xml = domain_xml(&d).or_else(fail)?;
    if !o.run {
        print!("{xml}");
        return Ok(0);
    }
    if o.platform == Platform::Xen {
        // libvirtd with the libxl driver runs in a Xen dom0: the test bed's.
        return crate::libvirt_xen::run(&d, o.timeout);
    }
    libvirt_testbed::ensure()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // Ctrl-C and SIGTERM only set the flag: the run loop then cleans up and ends.
    crate::child::defer_signals_to(flag);
    let symbols = Symbols::load(&d.image).ok();
    let r = run(&d, &xml, o.timeout, &stop, &mut |line| {
        println!(
            "{}",
            symbols
                .as_ref()
                .map_or(line.to_string(), |s| s.annotate(line))
        );
    })?;
    eprintln!("xtask: libvirt: {}", r.summary());
    if r.interrupted {
        return Ok(130);
    }
    Ok(r.status())
}

/// How a libvirt run ended.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// The console.
    pub console: String,
    /// The app's exit status from its console line, if printed.
    pub status: Option<i32>,
    /// libvirt's lifecycle events for the domain, in order (e.g. `Stopped Shutdown`).
    pub events: Vec<String>,
    /// The timeout destroyed it.
    pub timed_out: bool,
    /// Ctrl-C/SIGTERM ended the run.
    pub interrupted: bool,
    /// From just before `virsh create` to the first complete console line (polled
    /// every 2 ms until then).
    pub first_line: Option<Duration>,
}

impl RunEnd {
    /// The final `Stopped ...` event's reason (`Shutdown`, `Crashed`, `Destroyed`...).
    pub fn stop_reason(&self) -> Option<&str> {
        self.events
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("Stopped "))
    }

    /// Whether libvirt saw the guest panic (pvpanic).
    pub fn panicked(&self) -> bool {
        self.events.iter().any(|e| e == "Crashed Panicked")
    }

    /// The status to exit with: the app's, if it printed one and libvirt saw the
    /// domain end on its own; else 125.
    pub fn status(&self) -> u8 {
        match (self.stop_reason(), self.status) {
            (Some("Shutdown" | "Crashed"), Some(s)) => u8::try_from(s).unwrap_or(NO_STATUS),
            _ => NO_STATUS,
        }
    }

    /// One line: what libvirt reported and the status.
    pub fn summary(&self) -> String {
        let how = match self.stop_reason() {
            Some("Shutdown") => "shut off (shutdown: the guest powered off)".to_string(),
            Some("Crashed") if self.panicked() => {
                "crashed (panicked: pvpanic), then shut off (crashed)".to_string()
            }
            Some(r) => format!("shut off ({})", r.to_lowercase()),
            None => "no stop event".to_string(),
        };
        let status = self
            .status
            .map_or("no exit status on the console".to_string(), |s| {
                format!("app exit status {s}")
            });
        let why = if self.interrupted {
            "; interrupted (domain destroyed)"
        } else if self.timed_out {
            "; timed out (domain destroyed)"
        } else {
            ""
        };
        format!("{how}; {status}{why}")
    }
}

/// The last `upcall: exit status N` on the console.
pub fn console_status(console: &str) -> Option<i32> {
    console.lines().rev().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix("upcall: exit status ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The event for `domain` in a `virsh event` line: `event 'lifecycle' for domain
/// 'NAME': Stopped Shutdown` → `Stopped Shutdown`.
pub fn parse_event(line: &str, domain: &str) -> Option<String> {
    let rest = line.strip_prefix("event 'lifecycle' for domain '")?;
    let rest = rest.strip_prefix(domain)?.strip_prefix("': ")?;
    Some(rest.trim().to_string())
}

/// Reads a growing console file line by line.
#[derive(Default)]
struct Follower {
    pos: u64,
    partial: String,
}

impl Follower {
    /// Hands every new complete line to `on_line` and appends it to `r.console`.
    fn follow(&mut self, path: &Path, r: &mut RunEnd, on_line: &mut dyn FnMut(&str)) {
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            self.pos += buf.len() as u64;
            self.partial.push_str(&String::from_utf8_lossy(&buf));
            while let Some(i) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=i).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                on_line(line);
                r.console.push_str(line);
                r.console.push('\n');
            }
        }
    }
}

fn virsh() -> Command {
    let mut c = Command::new("virsh");
    c.args(["-q", "-c", URI]);
    c
}

/// Destroys the domain (if it still exists) and removes its tap (if libvirt left it),
/// and stops the event listener: on every way out of [`run`].
struct Cleanup<'a> {
    d: &'a Domain,
    events: Option<Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let exists = virsh()
            .args(["domstate", &self.d.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if exists {
            let _ = virsh()
                .args(["destroy", &self.d.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some((_, tap)) = &self.d.net
            && Path::new("/sys/class/net").join(tap).exists()
        {
            let _ = Command::new("ip").args(["link", "del", tap]).status();
        }
        if let Some(mut c) = self.events.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a KVM domain on the local libvirt: starts the event listener, creates the
/// domain, follows its console (each complete line to `on_line`) until libvirt says
/// it stopped, `stop` is set or `timeout` seconds pass; always destroys it.
pub fn run(
    d: &Domain,
    xml: &str,
    timeout: u64,
    stop: &AtomicBool,
    on_line: &mut dyn FnMut(&str),
) -> Result<RunEnd, Failure> {
    run_with(d, xml, timeout, stop, on_line, &mut |_| {})
}

/// As [`run`], and calls `while_running` with the console so far on every poll while
/// the domain runs (tests use it to talk to the guest, and end the run through `stop`).
pub fn run_with(
    d: &Domain,
    xml: &str,
    timeout: u64,
    stop: &AtomicBool,
    on_line: &mut dyn FnMut(&str),
    while_running: &mut dyn FnMut(&str),
) -> Result<RunEnd, Failure> {
    let xml_path = d.console.with_extension("xml");
    std::fs::write(&xml_path, xml).or_else(|e| fail(format!("{}: {e}", xml_path.display())))?;
    let _ = std::fs::remove_file(&d.console);
    // Listen first, so no event of the domain is missed.
    let mut listener = virsh()
        .args(["event", "--event", "lifecycle", "--loop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|e| fail(format!("cannot run virsh event: {e}")))?;
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = listener.stdout.take().expect("piped");
    {
        let events = Arc::clone(&events);
        let name = d.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(e) = parse_event(&line, &name) {
                    events.lock().expect("events lock").push(e);
                }
            }
        });
    }
    let cleanup = Cleanup {
        d,
        events: Some(listener),
    };
    // `virsh event` subscribes right after connecting: give it that moment.
    std::thread::sleep(Duration::from_millis(300));
    let created_at = Instant::now();
    let created = virsh()
        .args(["create", &xml_path.display().to_string()])
        .output()
        .or_else(|e| fail(format!("cannot run virsh create: {e}")))?;
    if !created.status.success() {
        return fail(format!(
            "virsh create failed: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        ));
    }
    let start = Instant::now();
    let mut r = RunEnd::default();
    let mut console = Follower::default();
    loop {
        console.follow(&d.console, &mut r, on_line);
        if r.first_line.is_none() && !r.console.is_empty() {
            r.first_line = Some(created_at.elapsed());
        }
        let stopped = events
            .lock()
            .expect("events lock")
            .iter()
            .any(|e| e.starts_with("Stopped "));
        if stopped {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            r.interrupted = true;
            break;
        }
        if timeout > 0 && start.elapsed() > Duration::from_secs(timeout) {
            r.timed_out = true;
            break;
        }
        while_running(&r.console);
        // Fine-grained until the first line (the boot benchmark times it), then
        // relaxed.
        let poll = if r.first_line.is_none() { 2 } else { 50 };
        std::thread::sleep(Duration::from_millis(poll));
    }
    drop(cleanup);
    console.follow(&d.console, &mut r, on_line);
    if !console.partial.is_empty() {
        on_line(&console.partial);
        r.console.push_str(&console.partial);
    }
    r.events = events.lock().expect("events lock").clone();
    r.status = console_status(&r.console);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(platform: Platform, machine: MachineArg, net: bool) -> Domain {
        Domain {
            name: "upcall-hello-1-0".into(),
            platform,
            machine,
            kvm_accel: false,
            smp: 2,
            memory_mb: 64,
            image: "/abs/target/images/kvm/hello".into(),
            cmdline: cmdline(None, &["a&b".into(), "<x y>".into(), "'q'".into()]),
            console: "/abs/target/libvirt/c.log".into(),
            net: net.then(|| {
                (
                    "tap:192.168.77.1/192.168.77.2".parse().unwrap(),
                    "upc1x0".into(),
                )
            }),
        }
    }

    #[test]
    fn kvm_xml_has_what_libvirt_needs_and_no_raw_arguments() {
        let x = domain_xml(&domain(Platform::Kvm, MachineArg::Qboot, true)).unwrap();
        for want in [
            "<domain type='qemu'>",
            "<vcpu>2</vcpu>",
            "<memory unit='MiB'>64</memory>",
            "machine='pc'>hvm</type>",
            "<loader type='rom'>/usr/share/qemu/qboot.rom</loader>",
            "<kernel>/abs/target/images/kvm/hello</kernel>",
            "<cmdline>a&amp;b &quot;&lt;x y&gt;&quot; &apos;q&apos;</cmdline>",
            "<features><acpi/></features>",
            "<panic model='isa'>",
            "<target dev='upc1x0' managed='yes'/>",
            "<ip address='192.168.77.1' prefix='24'/>",
            "<seclabel type='none' model='dac'/>",
        ] {
            assert!(x.contains(want), "missing {want} in\n{x}");
        }
        assert!(!x.contains("qemu:commandline"));
        let m = domain_xml(&domain(Platform::Kvm, MachineArg::Microvm, false)).unwrap();
        assert!(m.contains("machine='microvm'") && !m.contains("<loader"));
        assert!(domain_xml(&domain(Platform::Kvm, MachineArg::Microvm, true)).is_err());
        let x = domain_xml(&domain(Platform::Xen, MachineArg::Pc, false)).unwrap();
        assert!(x.contains("<domain type='xen'>") && x.contains("machine='xenpv'>linux"));
        assert!(x.contains("<console type='pty'>"));
    }

    #[test]
    fn cmdline_puts_the_tap_address_first() {
        let net = Some("tap:10.0.0.1/10.0.0.9".parse().unwrap());
        assert_eq!(cmdline(net, &["x".into()]), "ip=10.0.0.9/24 gw=10.0.0.1 x");
        assert_eq!(cmdline(None, &[]), "");
    }

    #[test]
    fn tap_nets_are_checked() {
        assert!("tap:10.0.0.1/10.0.1.2".parse::<TapNet>().is_err());
        assert!("tap:10.0.0.1/10.0.0.1".parse::<TapNet>().is_err());
        assert!("10.0.0.1/10.0.0.2".parse::<TapNet>().is_err());
        assert!("tap:10.0.0.1/x".parse::<TapNet>().is_err());
    }

    #[test]
    fn events_and_status_are_read() {
        let d = "upcall-hello-7-0";
        assert_eq!(
            parse_event(
                "event 'lifecycle' for domain 'upcall-hello-7-0': Stopped Shutdown",
                d
            ),
            Some("Stopped Shutdown".into())
        );
        assert_eq!(
            parse_event(
                "event 'lifecycle' for domain 'upcall-hello-7-01': Stopped Shutdown",
                d
            ),
            None
        );
        assert_eq!(
            console_status("x\nupcall: exit status 3\nupcall: powering off\n"),
            Some(3)
        );
        assert_eq!(console_status("upcall: exit status\n"), None);
        let mut o = RunEnd {
            status: Some(101),
            events: vec![
                "Started Booted".into(),
                "Crashed Panicked".into(),
                "Stopped Crashed".into(),
            ],
            ..RunEnd::default()
        };
        assert_eq!(
            (o.stop_reason(), o.panicked(), o.status()),
            (Some("Crashed"), true, 101)
        );
        o.events = vec!["Stopped Destroyed".into()];
        assert_eq!(o.status(), NO_STATUS);
    }
}
