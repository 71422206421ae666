//! The seed corpus: one or a few well-formed inputs per target (what QEMU, Xen or an
//! honest device would give), so the fuzzers start from the deep paths. The test
//! `write_seeds` (ignored; `cargo test -p upcall-fuzz-common -- --ignored`) writes
//! them to `fuzz/seeds/<target>/`; the replay test runs them from there.

use alloc::vec;
use alloc::vec::Vec;

fn le32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// A virtio-pci config space as QEMU builds it, after the target's BAR prefix.
fn virtio_pci() -> Vec<u8> {
    // BAR sizes (log2; BAR 4 = 16 KiB) and bases (in pages).
    let mut v = vec![0, 0, 0, 0, 14, 0];
    for b in [0u32, 0, 0, 0, 0xe0000, 0] {
        le32(&mut v, b);
    }
    let mut c = vec![0u8; 256];
    c[6] = 1 << 4;
    c[0x34] = 0x84;
    // (offset, next, cfg_type, offset in BAR, multiplier)
    for (at, next, ty, off, mult) in [
        (0x84usize, 0x70u8, 1u8, 0x0000u32, 0u32),
        (0x70, 0x60, 3, 0x1000, 0),
        (0x60, 0x4c, 4, 0x2000, 0),
        (0x4c, 0, 2, 0x3000, 4),
    ] {
        c[at] = 0x09;
        c[at + 1] = next;
        c[at + 2] = if ty == 2 { 20 } else { 16 };
        c[at + 3] = ty;
        c[at + 4] = 4;
        c[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
        c[at + 12..at + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        if ty == 2 {
            c[at + 16..at + 20].copy_from_slice(&mult.to_le_bytes());
        }
    }
    v.extend_from_slice(&c);
    // Notify offsets of a few queues.
    v.extend_from_slice(&[0, 0, 1, 0, 2, 0]);
    v
}

/// A `NEEDS_CSUM` header (TCP at 34, checksum at +16) and an Ethernet + IPv4 + TCP
/// frame with a few payload bytes, as a TAP-backed device hands one over.
fn virtio_net_hdr() -> Vec<u8> {
    let mut v = vec![1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 1, 0];
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    v.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
    v.extend_from_slice(&[
        0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
    ]);
    v.extend_from_slice(&[0x12, 0x34, 0, 0, b'a', b'b', b'c', b'd']);
    v
}

/// Xen's `start_info` for a PV domU, with a command line.
fn xen_start_info() -> Vec<u8> {
    let mut s = vec![0u8; 1024 + 32];
    s[..14].copy_from_slice(b"xen-3.0-x86_64");
    s[32..40].copy_from_slice(&32768u64.to_le_bytes()); // nr_pages
    s[88..96].copy_from_slice(&0x40_0000u64.to_le_bytes()); // pt_base
    s[96..104].copy_from_slice(&4u64.to_le_bytes()); // nr_pt_frames
    s[104..112].copy_from_slice(&0x30_0000u64.to_le_bytes()); // mfn_list
    let cmd = b"loglevel=debug -- a b";
    let at = s.len() - 1024;
    s[at..at + cmd.len()].copy_from_slice(cmd);
    s
}

/// PVH `hvm_start_info` whose memory map entries follow in the same bytes.
fn kvm_start_info() -> Vec<u8> {
    let mut h = vec![0u8; 56];
    h[0..4].copy_from_slice(&0x336e_c578u32.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&0x7000u64.to_le_bytes());
    h[40..48].copy_from_slice(&0x8000u64.to_le_bytes());
    h[48..52].copy_from_slice(&2u32.to_le_bytes());
    for (addr, size, ty) in [(0u64, 0x9fc00u64, 1u32), (0x10_0000, 0x7f0_0000, 1)] {
        h.extend_from_slice(&addr.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        le32(&mut h, ty);
        le32(&mut h, 0);
    }
    h
}

/// A MADT with two local APICs and an I/O APIC.
fn madt() -> Vec<u8> {
    let mut body = Vec::new();
    le32(&mut body, 0xfee0_0000);
    le32(&mut body, 1);
    for id in 0..2u8 {
        body.extend_from_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
    let mut t = b"APIC".to_vec();
    le32(&mut t, 36 + body.len() as u32);
    t.extend_from_slice(&[4, 0]);
    t.extend_from_slice(b"UPCALL");
    t.extend_from_slice(&[0; 20]);
    t.extend_from_slice(&body);
    let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

/// Honest sequences for the stateful targets: their step selectors (see each target).
fn steps(pattern: &[u8], rounds: usize) -> Vec<u8> {
    pattern
        .iter()
        .copied()
        .cycle()
        .take(pattern.len() * rounds)
        .collect()
}

/// Every seed: (target, input).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("virtio_pci_caps", virtio_pci()),
        ("virtio_net_hdr", virtio_net_hdr()),
        ("xen_start_info", xen_start_info()),
        ("kvm_start_info", kvm_start_info()),
        ("madt", madt()),
        (
            "cmdline",
            b"loglevel=debug preempt=dynamic:full hz=250 ip=10.0.2.15/24 gw=10.0.2.2 -- \"a b\" c\\\"d".to_vec(),
        ),
        (
            "mmio_devices",
            b"console=ttyS0 virtio_mmio.device=512@0xfeb00000:12 virtio_mmio.device=512@0xfeb00200:13 x"
                .to_vec(),
        ),
        ("pvclock", {
            let mut p = Vec::new();
            p.extend_from_slice(&1_000_000u64.to_le_bytes());
            p.extend_from_slice(&5_000_000_000u64.to_le_bytes());
            le32(&mut p, 0x8000_0000);
            p.push(1);
            p.extend_from_slice(&2_000_000u64.to_le_bytes());
            p.extend_from_slice(&3_000_000u64.to_le_bytes());
            p
        }),
        // send, answer, read; with a watch event now and then.
        // Knob 0x47: head limit 120 bytes, body limit 100, reads of 4 bytes. Two
        // keep-alive requests, the first with a body to skip.
        ("httpd", {
            let mut v = vec![0x47];
            v.extend_from_slice(
                b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            );
            v
        }),
        ("xenstore", steps(&[0, 2, 8, 7, 9, 12, 2, 11, 3, 1, 15, 4, 1], 20)),
        // take, answer RX, receive; transmit, take, answer TX, reclaim.
        ("netfront", steps(&[0, 1, 3, 9, 5, 0, 3, 7, 2, 40, 9], 30)),
        // device takes, completes with a length, driver receives.
        // (size 8, 1 spare, plain buffers, limit 1514.)
        ("virtio_net_rx", {
            let mut v = vec![3, 1, 0, 0xea, 0x05];
            v.extend(steps(&[0, 3, 0, 60, 0, 0, 7], 40));
            v
        }),
        // Limit 3000 bytes, 2048-byte buffers, queue 256: honest frames of 100 and
        // 2500 bytes (selector, length, bytes, flags).
        ("virtio_net_mrg", {
            let mut v = Vec::new();
            for x in [3000u16, 2036, 255] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            for (len, byte) in [(100u16, 0x11), (2500, 0x22)] {
                v.push(1);
                v.extend_from_slice(&len.to_le_bytes());
                v.extend(core::iter::repeat_n(byte, usize::from(len)));
                v.push(1);
            }
            v
        }),
    ]
}
