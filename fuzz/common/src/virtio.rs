//! virtio targets: the virtio-pci capability walk, and the split virtqueue with
//! virtio-net's receive path driven by a device model.

use alloc::vec;
use alloc::vec::Vec;

use upcall_kvm::virtio_net_hdr::{self, Header, RxCsum};
use upcall_kvm::virtio_net_rx::{self, HEADER, Rx};
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
/// time and hostile sometimes, for as many steps as the input has: no panic, no buffer
/// ever lost (posted + with the driver = all of them), every frame inside its buffer,
/// every error reported, and a broken queue reported as such from then on.
pub fn virtio_net_rx(data: &[u8]) {
    let mut i = Input::new(data);
    let size = 1u16 << (i.u8() % 6);
    let l = Layout { size };
    let mut q: Virtq<VecMemory, Vec<u8>> =
        Virtq::new(VecMemory(vec![0; l.bytes()]), size).expect("valid size");
    let total = usize::from(size) + usize::from(i.u8() % 4);
    let mut spare: Vec<Vec<u8>> = (0..total).map(|_| vec![0u8; RX_BUFFER]).collect();
    while q.free() > 0 {
        virtio_net_rx::post(&mut q, spare.pop().expect("enough buffers")).unwrap();
    }
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
                let r = virtio_net_rx::receive(&mut q, &mut |_, f| {
                    assert!(f.len() + HEADER <= RX_BUFFER, "frame beyond its buffer");
                });
                match r {
                    Ok(Rx::Empty | Rx::Frame | Rx::Short) => assert!(!broken),
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

use upcall_kvm::virtq::RingMemory as _;

/// virtio-net's per-frame header from a hostile device, with a hostile frame: the
/// receive checksum decision and completion stay inside the frame; transmit
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
    let t = virtio_net_hdr::tx_offload(&mut frame);
    assert_eq!(frame.len(), len);
    if t.flags & virtio_net_hdr::NEEDS_CSUM != 0 {
        assert!(usize::from(t.csum_start) + usize::from(t.csum_offset) + 2 <= len);
    }
}
