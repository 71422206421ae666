//! Networking for the Xen xl test bed: a domU's `vif` reaches the host.
//!
//! ```text
//! host 127.0.0.1:H ──QEMU user net (slirp, hostfwd)──▶ e1000 = dom0's eth0
//!   dom0: bridge br0 = { eth0, vifD.0 } (no address of its own)
//!   domU: netfront ◀─ netback vifD.0; DHCP from slirp: 10.0.2.15, router 10.0.2.2
//! ```
//!
//! dom0 only bridges: the domU is directly on QEMU's user network and gets slirp's
//! first lease, 10.0.2.15 — the address `hostfwd` forwards to by default — so no NAT or
//! proxy runs in dom0. Every domain's vif has the same MAC, so every domain of a batch
//! gets that same lease. libxl runs `/etc/xen/scripts/vif-bridge` (ours, for busybox)
//! to put the vif on the bridge; netback waits for its `hotplug-status`.

use std::path::Path;

use crate::testbed::initramfs::{Node, Tree};
use crate::vmm::qemu::Forward;
use crate::{Failure, fail};

/// The Debian package with the `xenstore` tool (the vif script writes `hotplug-status`).
pub const PACKAGE: &str = "xenstore-utils";
/// The multi-call `xenstore` binary inside [`PACKAGE`].
pub const XENSTORE_TOOL: &str = "usr/bin/xenstore";

/// Kernel modules for dom0's network, relative to `lib/modules/*/kernel/`, in load
/// order: netback, the bridge (after its dependencies), and the e1000 driver for the
/// NIC QEMU gives dom0.
pub const MODULES: &[&str] = &[
    "drivers/net/xen-netback/xen-netback.ko",
    "net/llc/llc.ko",
    "net/802/stp.ko",
    "net/bridge/bridge.ko",
    "drivers/net/ethernet/intel/e1000/e1000.ko",
];

/// `tar` wildcards unpacking [`MODULES`] from the kernel package.
pub const KERNEL_FILES: &[&str] = &[
    "./lib/modules/*/kernel/drivers/net/xen-netback/*",
    "./lib/modules/*/kernel/net/llc/llc.ko",
    "./lib/modules/*/kernel/net/802/stp.ko",
    "./lib/modules/*/kernel/net/bridge/bridge.ko",
    "./lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/*",
];

/// The vif's line in a domain's xl config.
pub const VIF_CONFIG: &str = "vif = [ 'mac=00:16:3e:75:70:01,bridge=br0' ]\n";

/// The address slirp leases to the domU (and `hostfwd` forwards to).
pub const GUEST_IP: &str = "10.0.2.15";

/// `/etc/xen/scripts/vif-bridge` for busybox: libxl runs it with `online`/`offline`
/// (or `add`/`remove`) and `$vif`, `$XENBUS_PATH` in the environment.
const VIF_SCRIPT: &str = r#"#!/bin/sh
# vif hotplug of Upcall's Xen test bed (tools/xtask/src/testbed/xen_net.rs).
export PATH=/usr/lib/xen-4.17/bin:/usr/bin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
case "$1" in
    online|add)
        ip link set "$vif" up &&
        brctl addif br0 "$vif" &&
        xenstore write "$XENBUS_PATH/hotplug-status" connected
        ;;
    offline|remove)
        brctl delif br0 "$vif" 2>/dev/null
        ip link set "$vif" down 2>/dev/null
        xenstore rm "$XENBUS_PATH/hotplug-status" 2>/dev/null
        true
        ;;
esac
"#;

/// `/net.sh`, sourced by the dom0 init when a run has networking: loads the modules and
/// builds the bridge. Uses the init's `run` and `say`.
pub const NET_SH: &str = r#"# dom0 network of Upcall's Xen test bed (tools/xtask/src/testbed/xen_net.rs).
for m in xen-netback llc stp bridge e1000; do
    run insmod /modules/$m.ko
done
# Every e1000 (8086:100e) QEMU gave dom0 joins the bridge: eth0 on QEMU's user network,
# and for hostile-client tests a second one on a host TAP device (nettest/xl_tap.rs).
cards=$(cat /sys/bus/pci/devices/*/device | grep -c 0x100e)
n=0
until [ "$(ls -d /sys/class/net/eth* 2>/dev/null | wc -l)" -ge "$cards" ]; do
    n=$((n + 1)); [ "$n" -gt 50 ] && { say "only $(ls /sys/class/net) of $cards e1000 cards in dom0"; finish 125; }
    nap 0.1
done
run brctl addbr br0
for card in /sys/class/net/eth*; do
    run brctl addif br0 "${card##*/}"
    run ip link set "${card##*/}" up
done
run ip link set br0 up
say "network: br0 = $cards card(s) + vifs; domU leases 10.0.2.15 from QEMU"
"#;

/// Adds the network pieces to the base dom0 tree: the modules (from the unpacked
/// kernel package at `kernel`), the `xenstore` tool (from `xenstore_utils`), the vif
/// script.
pub fn add_to_tree(t: &mut Tree, kernel: &Path, xenstore_utils: &Path) -> Result<(), Failure> {
    let modules = crate::testbed::files::only_file(&kernel.join("lib/modules"), "")?.join("kernel");
    for rel in MODULES {
        let path = modules.join(rel);
        if !path.is_file() {
            return fail(format!(
                "Xen test bed: kernel module {} not found",
                path.display()
            ));
        }
        let name = Path::new(rel).file_name().unwrap_or_default();
        t.insert(
            &format!("modules/{}", name.to_string_lossy()),
            Node::File(path, 0o644),
        );
    }
    t.add_file(xenstore_utils, XENSTORE_TOOL)?;
    t.insert(
        "etc/xen/scripts/vif-bridge",
        Node::Data(VIF_SCRIPT.as_bytes().to_vec(), 0o755),
    );
    Ok(())
}

/// QEMU arguments giving dom0 an e1000 on user networking with `forwards` to the domU.
pub fn qemu_args(forwards: &[Forward]) -> Vec<String> {
    let netdev = std::iter::once("user,id=net0".to_string())
        .chain(forwards.iter().map(|f| f.hostfwd_to(GUEST_IP)))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        "e1000,netdev=net0".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_valid_shell() {
        for (name, script) in [("vif-bridge", VIF_SCRIPT), ("net.sh", NET_SH)] {
            let ok = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{name} does not parse");
        }
    }

    #[test]
    fn forwards_reach_the_domu_lease() {
        let f: Forward = "8080:80".parse().unwrap();
        let a = qemu_args(&[f]);
        assert_eq!(a[1], "user,id=net0,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80");
        assert_eq!(a[3], "e1000,netdev=net0");
    }
}
