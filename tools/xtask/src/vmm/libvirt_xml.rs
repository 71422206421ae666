//! The libvirt domain XML that runs an image (see [`crate::vmm::libvirt`]): direct
//! kernel boot, ACPI, the serial console to a file, pvpanic, no raw QEMU arguments;
//! the `--net tap:HOST/GUEST` network and the kernel command line that goes with it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::vmm::qemu;
use crate::{MachineArg, Platform};

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
}
