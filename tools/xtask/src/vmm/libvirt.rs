//! `cargo xtask libvirt APP`: the domain XML that runs an image under libvirt (what
//! OpenStack Nova, oVirt and KubeVirt drive), and with `--run` a run on this host's
//! libvirt (`qemu:///system`), or for Xen in the Xen test bed's dom0
//! ([`crate::testbed::libvirt_xen`]).
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

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::symbolize::Symbols;
use crate::testbed::libvirt::{self as libvirt_testbed, URI};
use crate::vmm::libvirt_xml::cmdline;
pub use crate::vmm::libvirt_xml::{Domain, TapNet, domain_xml};
use crate::vmm::qemu;
use crate::{Failure, MachineArg, Outcome, Platform, build, fail, host};

/// Status for "the guest ended without reporting an exit status".
const NO_STATUS: u8 = 125;
/// Options of `cargo xtask libvirt`.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Platform the image is built for.
    #[arg(long, value_enum, default_value_t = Platform::Kvm)]
    pub platform: Platform,
    /// Machine type and firmware (KVM): `pc` is SeaBIOS, what Nova and oVirt use.
    #[arg(long, value_enum, default_value_t = MachineArg::Pc)]
    pub machine: MachineArg,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1, value_parser = qemu::parse_smp)]
    pub smp: u32,
    /// Memory in MiB [default: the app's declared memory, else 128].
    #[arg(long = "memory", value_name = "MEMORY")]
    pub memory_mb: Option<u32>,
    /// A managed tap: the host side gets HOST_IP/24, the guest `ip=GUEST_IP/24
    /// gw=HOST_IP` (KVM, machine pc or qboot).
    #[arg(long, value_name = "tap:HOST_IP/GUEST_IP")]
    pub net: Option<TapNet>,
    /// Build with --release.
    #[arg(long)]
    pub release: bool,
    /// Start it (`virsh create`), follow its console, exit with the app's status.
    #[arg(long)]
    pub run: bool,
    /// With --run: destroy the domain after this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
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
    let memory_mb = build::App::in_repo(app)?.memory_mb(o.memory_mb)?;
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
        memory_mb,
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
        return crate::testbed::libvirt_xen::run(&d, o.timeout);
    }
    libvirt_testbed::ensure()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // Ctrl-C and SIGTERM only set the flag: the run loop then cleans up and ends.
    crate::vmm::child::defer_signals_to(flag);
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
    host::output_checked(
        virsh().args(["create", &xml_path.display().to_string()]),
        "virsh create",
    )?;
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
