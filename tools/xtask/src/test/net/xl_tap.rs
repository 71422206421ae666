//! The xl bed with a TAP link (`NetBed::XenXlTap`): hostile raw-socket clients reach an
//! xl domU through netback.
//!
//! ```text
//! host upcntN 10.213.N.1 ──TAP── e1000 #2 = dom0's eth1 ┐
//!                     QEMU user net ── e1000 #1 = eth0 ┼ bridge br0 ── vifD.0 ── netfront
//!                                                       (domU: 10.213.N.2, static)
//! ```
//!
//! QEMU's user network (slirp) completes a forwarded connection's handshake itself, so a
//! SYN flood through `hostfwd` never leaves a half-open connection in the guest. Here
//! the host's frames cross dom0's bridge unchanged: the same clients as on the KVM TAP
//! bed (`hostile.rs`), against netfront.

use std::path::Path;

use upcall_tests::net;

use super::Guest;
use super::hostile::Tap;
use crate::vmm::qemu;
use crate::vmm::xl_run::{XlDomain, xl_run_qemu_args};

/// Seconds dom0 lets the domain run before it destroys it (the harness stops QEMU
/// long before, once the checks are done).
const DOMAIN_TIMEOUT_S: u32 = 600;

/// Creates a TAP device and boots `image` as an xl domU with `args`
/// ([`net::TAP_GUEST`] replaced by the guest's address), dom0's bridge joining the
/// TAP device to the domU's vif.
pub(super) fn boot(image: &Path, args: &[&str]) -> Result<(Tap, Guest), String> {
    let mut tap = Tap::create()?;
    tap.guest_mac = net::XEN_GUEST_MAC;
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace(net::TAP_GUEST, &tap.guest))
        .collect();
    let tb = crate::testbed::dom0::ensure_xl_testbed().map_err(|f| f.message)?;
    let domain = XlDomain {
        image: image.to_path_buf(),
        cmdline: qemu::kernel_cmdline(&args),
        memory_mb: upcall_tests::XL_MEMORY_MB,
        vcpus: 1,
        actions: Vec::new(),
        timeout_secs: DOMAIN_TIMEOUT_S,
        stream: true,
        settle: false,
        // A vif on dom0's bridge; nothing forwarded (the host reaches it by the TAP).
        net: Some(Vec::new()),
        ramdisk: None,
    };
    let mut qemu_args = xl_run_qemu_args(&tb, std::slice::from_ref(&domain))
        .map_err(|f| f.message)?
        .qemu_args;
    qemu_args.extend(tap_card(&tap.name));
    let guest = Guest::boot(image, qemu_args)?;
    Ok((tap, guest))
}

/// QEMU arguments for dom0's second card, on host TAP device `name` (dom0's network
/// script bridges every e1000 it finds).
fn tap_card(name: &str) -> [String; 4] {
    [
        "-netdev".into(),
        format!("tap,id=tap0,ifname={name},script=no,downscript=no"),
        "-device".into(),
        // Not QEMU's default MAC, which dom0's first card has.
        "e1000,netdev=tap0,mac=52:54:00:12:34:57".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_card_is_on_the_tap() {
        let a = tap_card("upcnt7");
        assert_eq!(a[1], "tap,id=tap0,ifname=upcnt7,script=no,downscript=no");
        assert!(a[3].starts_with("e1000,netdev=tap0,"));
        assert!(!a[3].contains(net::GUEST_MAC));
    }
}
