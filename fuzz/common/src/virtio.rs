//! virtio targets: the virtio-pci capability walk, the split virtqueue with
//! virtio-net's receive path driven by a device model, and the assembly of frames
//! over mergeable receive buffers.

use alloc::vec;
use alloc::vec::Vec;

use upcall_kvm::virtio_net_hdr::{self, Header, RxCsum};
use upcall_kvm::virtio_net_rx::{self, HEADER, Receiver, Rx};
use upcall_kvm::virtio_pci_caps::{self as caps, Bar};
use upcall_kvm::virtq::mock::{Device, VecMemory};
use upcall_kvm::virtq::{Error, Layout, Virtq};

use crate::input::Input;

/// The capability walk over a hostile config space and hostile BARs: every window
/// that comes out lies inside its BAR and one mapped page and is long enough; every
/// notify register inside the notify window.
pub fn virtio_pci_caps(data: &[u8]) {
    let mut i = Input::new(data);
    let sizes = [i.u8(), i.u8(), i.u8(), i.u8(), i.u8(), i.u8()];
    let bases = [i.u32(), i.u32(), i.u32(), i.u32(), i.u32(), i.u32()];
    let bar = |n: u8| {
        let k = usize::from(n);
        let log = u32::from(*sizes.get(k)?) % 40;
        (log >= 4).then(|| Bar {
            base: u64::from(bases[k]) << 12,
            size: 1 << log,
        })
    };
    let mut config = [0u8; caps::CONFIG_SPACE];
    let body = i.bytes(caps::CONFIG_SPACE);
    config[..body.len()].copy_from_slice(body);
    let Ok(found) = caps::parse(&config, bar) else {
        return;
    };
    for (w, min) in [
        (found.common, caps::MIN_COMMON),
        (found.notify, caps::MIN_NOTIFY),
        (found.isr, caps::MIN_ISR),
        (found.device, caps::MIN_DEVICE),
    ] {
        assert!(w.len >= min, "window {w:?} shorter than {min}");
        let last = w.base + u64::from(w.len) - 1;
        assert_eq!(w.base / caps::MAP_PAGE, last / caps::MAP_PAGE, "{w:?}");
        assert!(
            (0..6)
                .filter_map(bar)
                .any(|b| w.base >= b.base && last < b.base + b.size),
            "window {w:?} in no BAR"
        );
    }
    while !i.is_empty() {
        if let Some(at) = caps::notify_offset(i.u16(), found.notify_multiplier, found.notify.len) {
            assert!(caps::access_inside(at, 2, found.notify.len));
        }
    }
}

/// Receive buffers the driver posts.
const RX_BUFFER: usize = 128;

/// The receive queue of virtio-net against a device model that is honest most of the
/// time and hostile sometimes, for as many steps as the input has, with or without
/// mergeable buffers: no panic, no buffer ever lost (posted + with the driver = all of
/// them), no frame beyond the limit or from more buffers than the queue has, every
/// error reported, and a broken queue reported as such from then on. (The model writes
/// lengths only: the buffers' contents, headers and `num_buffers` included, are the
/// input's, given before they are posted.)
pub fn virtio_net_rx(data: &[u8]) {
    let mut i = Input::new(data);
    let size = 1u16 << (i.u8() % 6);
    let l = Layout { size };
    let mut q: Virtq<VecMemory, Vec<u8>> =
        Virtq::new(VecMemory(vec![0; l.bytes()]), size).expect("valid size");
    let total = usize::from(size) + usize::from(i.u8() % 4);
    let knobs = i.u8();
    let mergeable = knobs & 1 != 0;
    let max_frame = usize::from(i.u16()) % 1024;
    let mut spare: Vec<Vec<u8>> = (0..total)
        .map(|_| {
            let mut b = vec![0u8; RX_BUFFER];
            if knobs & 2 != 0 {
                // A header: flags, gso, and num_buffers 1..=4 or anything.
                b[..HEADER].copy_from_slice(i.bytes(HEADER).get(..HEADER).unwrap_or(&[0; HEADER]));
                if knobs & 4 != 0 {
                    b[10] = 1 + b[10] % 4;
                    b[11] = 0;
                }
            }
            b
        })
        .collect();
    while q.free() > 0 {
        virtio_net_rx::post(&mut q, spare.pop().expect("enough buffers")).unwrap();
    }
    let mut rx = Receiver::new(mergeable, max_frame);
    let mut dev = Device::default();
    let mut held: Vec<(u16, u32)> = Vec::new();
    let mut broken = false;
    while !i.is_empty() {
        let mem = q.memory_mut();
        match i.u8() % 8 {
            // The device takes what was posted.
            0..=2 => {
                while let Some((id, _, len, writable)) = dev.take(mem, l) {
                    assert!(writable, "a receive buffer must be device-writable");
                    held.push((id, len));
                }
            }
            // Honest completion of one held buffer.
            3..=5 => {
                if !held.is_empty() {
                    let (id, max) = held.remove(usize::from(i.u8()) % held.len());
                    let len = i.u32() % (max + 1);
                    dev.give(mem, l, u32::from(id), len);
                }
            }
            // Hostile: any id, any length, any used index.
            6 => {
                if i.one_in(2) {
                    dev.give(mem, l, i.u32() % (u32::from(size) * 2), i.u32());
                } else {
                    dev.used_idx = dev.used_idx.wrapping_add(i.u16() % 4);
                    mem.write_u16(l.used() + 2, dev.used_idx);
                }
            }
            // The driver's receive step.
            _ => {
                let r = rx.receive(&mut q, &mut |_, f, n| {
                    assert!(f.len() <= max_frame, "frame beyond the limit");
                    assert!(n >= 1 && n <= size && (mergeable || n == 1));
                    assert!(
                        f.len() + HEADER <= RX_BUFFER * usize::from(n),
                        "frame beyond its buffers"
                    );
                });
                match r {
                    Ok(Rx::Empty | Rx::Frame { .. } | Rx::Dropped(_)) => assert!(!broken),
                    Err(Error::Broken) => assert!(broken, "broken without a report"),
                    Err(Error::UsedIndexJump { .. }) => {
                        assert!(!broken, "the break is reported once");
                        broken = true;
                    }
                    Err(_) => {}
                }
            }
        }
        if !broken {
            // No buffer lost: each is posted (in flight) or spare.
            assert_eq!(
                q.in_flight() + spare.len(),
                total,
                "a receive buffer was lost"
            );
            assert_eq!(q.in_flight(), usize::from(size) - q.free());
        }
    }
}

/// Frames over mergeable buffers (`Receiver::buffer`): honest frames as QEMU fills
/// buffers, interleaved with hostile buffers (any bytes, any used length, any
/// `num_buffers`). No panic; nothing beyond the limit; and an honest frame that
/// starts while no frame is half received comes out exactly as it went in.
pub fn virtio_net_mrg(data: &[u8]) {
    let mut i = Input::new(data);
    let max = usize::from(i.u16()) % 8192;
    let cap = (HEADER + usize::from(i.u16()) % 2048) as u32;
    let queue_size = 1 + i.u16() % 512;
    let mut rx = Receiver::new(true, max);
    while !i.is_empty() {
        if i.one_in(3) {
            let len = usize::from(i.u16());
            let n = usize::from(i.u8());
            let mut b = i.bytes(n).to_vec();
            if b.len() >= HEADER && i.one_in(2) {
                b[10..HEADER].copy_from_slice(&(i.u16() % 8).to_le_bytes());
            }
            rx.buffer(&b, len, queue_size, &mut |_, f, n| {
                assert!(f.len() <= max && n >= 1 && n <= queue_size);
            });
            continue;
        }
        let n = usize::from(i.u16()) % 4096;
        let frame = i.bytes(n).to_vec();
        let mut header = [0u8; HEADER];
        header[0] = i.u8();
        let caps = vec![cap; 1 + (HEADER + frame.len()) / cap as usize];
        let lens = virtio_net_rx::fill(&mut header, &frame, &caps).expect("enough buffers");
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&frame);
        let fresh = !rx.in_frame();
        let mut got = None;
        let mut at = 0;
        for &(_, n) in &lens {
            let mut b = vec![0u8; cap as usize];
            b[..n as usize].copy_from_slice(&bytes[at..at + n as usize]);
            at += n as usize;
            rx.buffer(&b, n as usize, queue_size, &mut |h, f, k| {
                assert!(f.len() <= max && k >= 1 && k <= queue_size);
                got = Some((h[0], f.to_vec(), k));
            });
        }
        let whole = frame.len() <= max && lens.len() <= usize::from(queue_size);
        if fresh && whole {
            assert_eq!(
                got,
                Some((header[0], frame, lens.len() as u16)),
                "honest frame garbled"
            );
            assert!(!rx.in_frame());
        }
    }
}

use upcall_kvm::virtq::RingMemory as _;

/// virtio-net's per-frame header from a hostile device, with a hostile frame: the
/// receive checksum decision and completion stay inside the frame, segmentation fields
/// are accepted only as negotiated and consistent; transmit
/// preparation of the same bytes leaves the length alone and only ever asks the device
/// for a checksum field inside the frame.
pub fn virtio_net_hdr(data: &[u8]) {
    let mut i = Input::new(data);
    let mut hdr = [0u8; virtio_net_hdr::LEN];
    hdr.iter_mut().for_each(|b| *b = i.u8());
    let h = Header::parse(&hdr);
    assert_eq!(h.to_bytes(), hdr);
    let mut frame = i.rest().to_vec();
    let len = frame.len();
    if let Ok(RxCsum::Complete { start, field }) = virtio_net_hdr::rx_checksum(&h, &frame) {
        assert!(field + 2 <= len, "checksum field beyond the frame");
        virtio_net_hdr::complete(&mut frame, start, field);
    }
    for tso4 in [false, true] {
        if virtio_net_hdr::rx_gso(&h, &frame, tso4) == Ok(true) {
            assert!(tso4 && h.gso_type == virtio_net_hdr::GSO_TCPV4 && h.gso_size != 0);
        }
    }
    if let Some(g) = virtio_net_hdr::tx_gso(&mut frame.clone(), h.gso_size) {
        assert!(usize::from(g.hdr_len) < len && g.gso_size == h.gso_size);
        assert!(usize::from(g.csum_start) + usize::from(g.csum_offset) + 2 <= len);
    }
    let t = virtio_net_hdr::tx_offload(&mut frame);
    assert_eq!(frame.len(), len);
    if t.flags & virtio_net_hdr::NEEDS_CSUM != 0 {
        assert!(usize::from(t.csum_start) + usize::from(t.csum_offset) + 2 <= len);
    }
}
