//! virtio-net: the network card as libos's `Nic`, on either transport.
//!
//! Queue 0 receives, queue 1 transmits; each buffer is one descriptor holding the
//! 12-byte virtio-net header (virtio 1.x) followed by the frame. Every receive buffer
//! is posted at start and re-posted once its frame was handed on; transmit buffers are
//! copies of the frames, reclaimed when the device returns them.
//!
//! Notifications: buffers are announced once per poll of the net task ([`Nic::flush`]),
//! and with `VIRTIO_RING_F_EVENT_IDX` only when the device's `avail_event` asks; the
//! device interrupts for the next received frame, and for sent frames only when the
//! transmit queue is full (otherwise the next poll reclaims them).
//!
//! Offloads: TCP checksums both ways where the device offers them (`VIRTIO_NET_F_CSUM`,
//! `VIRTIO_NET_F_GUEST_CSUM`; the header work is in `crate::virtio_net_hdr`). QEMU
//! offers them only with a backend that takes the header (TAP), not on user
//! networking; without them smoltcp computes and verifies every checksum. No
//! segmentation offload: smoltcp 0.12 never builds a segment larger than the peer's MSS.

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec;

use libos::net::{Nic, NicError, Offloads};
use libos::println;

use super::mmio::Mmio;
use super::pci::{self as virtio_pci, Pci};
use super::{DEVICE_NET, DmaMemory, InitError, Transport, begin_init, finish_init};
use crate::mmio_devices::MmioDevice;
use crate::virtio_net_hdr::{self as hdr, Header, RxCsum};
use crate::virtio_net_rx::{self, HEADER, Rx};
use crate::virtq::{Layout, Virtq};
use crate::{apic, devirq, ioapic, pci};

/// Feature: the device completes checksums of frames marked `NEEDS_CSUM`.
const F_CSUM: u64 = 1 << 0;
/// Feature: the driver accepts frames with partial (`NEEDS_CSUM`) or verified
/// (`DATA_VALID`) checksums.
const F_GUEST_CSUM: u64 = 1 << 1;
/// Feature: the device has a MAC address in its configuration.
const F_MAC: u64 = 1 << 5;
/// Feature: `VIRTIO_RING_F_EVENT_IDX` (interrupt and notification thresholds).
const F_EVENT_IDX: u64 = 1 << 29;
/// Receive buffer: header + a full Ethernet frame (1514), rounded up.
const RX_BUFFER: usize = 2048;
/// Largest queue we use.
const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Standard Ethernet MTU.
const MTU: usize = 1500;

type Queue = Virtq<DmaMemory, Box<[u8]>>;

/// One virtio-net device.
struct VirtioNet<T> {
    transport: T,
    mac: [u8; 6],
    rx: Queue,
    tx: Queue,
    offloads: Offloads,
}

fn make_queue(t: &mut dyn Transport, q: u16) -> Result<Queue, InitError> {
    let max = t.queue_max(q);
    if max == 0 {
        return Err(InitError::Queue(q, "absent"));
    }
    // The largest power of two within both limits (split rings need one).
    let size = 1u16 << (15 - max.min(QUEUE_SIZE).leading_zeros().min(15));
    let layout = Layout { size };
    let mem =
        DmaMemory::new(layout.bytes()).ok_or(InitError::Resources("out of memory for a queue"))?;
    let (desc, driver, device) = (
        mem.paddr(layout.desc()),
        mem.paddr(layout.avail()),
        mem.paddr(layout.used()),
    );
    let vq = Virtq::new(mem, size).map_err(|_| InitError::Queue(q, "unusable size"))?;
    t.setup_queue(q, size, desc, driver, device)?;
    Ok(vq)
}

impl<T: Transport> VirtioNet<T> {
    fn new(mut transport: T) -> Result<Self, InitError> {
        let features = begin_init(
            &mut transport,
            F_MAC | F_CSUM | F_GUEST_CSUM | F_EVENT_IDX,
            &[],
        )?;
        let mut rx = make_queue(&mut transport, RX_QUEUE)?;
        let mut tx = make_queue(&mut transport, TX_QUEUE)?;
        rx.set_event_idx(features & F_EVENT_IDX != 0);
        tx.set_event_idx(features & F_EVENT_IDX != 0);
        let mut mac = [0u8; 6];
        if features & F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = transport.config_u8(i);
            }
        } else {
            // A locally administered unicast address from the TSC.
            mac = libos::arch::rdtsc().to_le_bytes()[..6]
                .try_into()
                .expect("6 bytes");
            mac[0] = (mac[0] & 0xfe) | 0x02;
        }
        finish_init(&mut transport);
        let offloads = Offloads {
            tx_tcp_checksum: features & F_CSUM != 0,
            rx_tcp_checksum: features & F_GUEST_CSUM != 0,
        };
        let mut net = VirtioNet {
            transport,
            mac,
            rx,
            tx,
            offloads,
        };
        while net.rx.free() > 0 {
            net.post_rx(vec![0u8; RX_BUFFER].into_boxed_slice())
                .map_err(|_| InitError::Queue(RX_QUEUE, "cannot post buffers"))?;
        }
        net.rx.interrupt_after(1);
        net.flush();
        Ok(net)
    }

    fn post_rx(&mut self, buf: Box<[u8]>) -> Result<(), crate::virtq::Error> {
        virtio_net_rx::post(&mut self.rx, buf)
    }

    /// Frees the transmit buffers the device is done with.
    fn reclaim_tx(&mut self) -> Result<(), NicError> {
        loop {
            match self.tx.pop_used() {
                Ok(Some(_sent)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(NicError::Device(e.to_string())),
            }
        }
    }
}

impl<T: Transport> Nic for VirtioNet<T> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    fn offloads(&self) -> Offloads {
        self.offloads
    }

    fn can_transmit(&mut self) -> bool {
        // A device error here surfaces on the next transmit or receive instead.
        let _ = self.reclaim_tx();
        if self.tx.free() == 0 {
            // Full: the net task waits for the interrupt of the next buffer returned
            // (asked for, then looked for once more).
            self.flush();
            self.tx.interrupt_after(1);
            let _ = self.reclaim_tx();
        }
        self.tx.free() > 0
    }

    fn flush(&mut self) {
        // One notification per queue and poll at most, and only when the device wants
        // one (event index or NO_NOTIFY). Transmit completions interrupt only when the
        // queue is full (see `can_transmit`): otherwise the next poll reclaims them.
        if self.tx.kick_needed() {
            self.transport.notify(TX_QUEUE);
        }
        if self.rx.kick_needed() {
            self.transport.notify(RX_QUEUE);
        }
        if self.tx.free() > 0 {
            self.tx.interrupt_after(0);
        }
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError> {
        self.reclaim_tx()?;
        let mut buf = vec![0u8; HEADER + frame.len()].into_boxed_slice();
        buf[HEADER..].copy_from_slice(frame);
        if self.offloads.tx_tcp_checksum {
            let h = hdr::tx_offload(&mut buf[HEADER..]);
            buf[..HEADER].copy_from_slice(&h.to_bytes());
        }
        let (addr, len) = (buf.as_ptr() as u64, buf.len());
        // Announced by `flush` at the end of the net task's poll.
        match self.tx.push(addr, len, false, buf) {
            Ok(_) => Ok(()),
            Err(crate::virtq::Error::Full) => Err(NicError::Busy),
            Err(e) => Err(NicError::Device(e.to_string())),
        }
    }

    fn receive(&mut self, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        let r = self.receive_one(deliver);
        if r != Ok(false) {
            return r;
        }
        // Ask for an interrupt at the next frame, then look once more (a frame that
        // came in between raised none).
        self.rx.interrupt_after(1);
        if self.rx.has_used() {
            return self.receive_one(deliver);
        }
        Ok(false)
    }
}

impl<T: Transport> VirtioNet<T> {
    fn receive_one(&mut self, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        // Every buffer that comes back is posted again (see `virtio_net_rx`); device
        // errors are counted by libos (device_errors) like every other.
        // With GUEST_CSUM smoltcp no longer verifies TCP checksums: every frame passes
        // `virtio_net_hdr::rx_checksum` first (a bad one is dropped and reported).
        let check = self.offloads.rx_tcp_checksum;
        let mut bad = None;
        let r = virtio_net_rx::receive(&mut self.rx, &mut |header, frame| {
            if !check {
                return deliver(frame);
            }
            match hdr::rx_checksum(&Header::parse(header), frame) {
                Ok(RxCsum::Deliver) => deliver(frame),
                Ok(RxCsum::Complete { start, field }) => {
                    let mut copy = frame.to_vec();
                    hdr::complete(&mut copy, start, field);
                    deliver(&copy);
                }
                Err(e) => bad = Some(e),
            }
        });
        // Re-posted buffers are announced by `flush`, once per poll.
        match r {
            Ok(Rx::Empty) => Ok(false),
            Ok(Rx::Frame) if bad.is_some() => Err(NicError::Malformed(match bad {
                Some(hdr::HdrError::BadChecksum) => "bad TCP checksum",
                _ => "checksum offsets outside the frame",
            })),
            Ok(Rx::Frame) => Ok(true),
            Ok(Rx::Short) => Err(NicError::Malformed("shorter than the virtio-net header")),
            Err(e) => Err(NicError::Device(e.to_string())),
        }
    }
}

const NAMES: [&str; 8] = [
    "eth0", "eth1", "eth2", "eth3", "eth4", "eth5", "eth6", "eth7",
];

/// Brings up `transport`'s device as the next interface and routes its interrupt line
/// `gsi` to a handler that runs `ack` (quieting the line) and tells libos.
fn start<T: Transport + 'static>(
    transport: T,
    gsi: u32,
    ack: impl Fn() + Sync + 'static,
) -> Result<(), InitError> {
    let name = NAMES
        .get(libos::net::card_count())
        .ok_or(InitError::Resources("too many network cards"))?;
    let nic = VirtioNet::new(transport)?;
    let o = nic.offloads;
    if (o.tx_tcp_checksum || o.rx_tcp_checksum)
        && libos::boot::loglevel() != libos::cmdline::LogLevel::Quiet
    {
        println!(
            "virtio-net: {name} TCP checksum offload:{}{}",
            if o.tx_tcp_checksum { " tx" } else { "" },
            if o.rx_tcp_checksum { " rx" } else { "" }
        );
    }
    let id = libos::net::register_nic(name, Box::new(nic))
        .ok_or(InitError::Resources("too many network cards"))?;
    let handler: &'static (dyn Fn() + Sync) = Box::leak(Box::new(move || {
        ack();
        libos::net::interrupt(id);
    }));
    let vector = devirq::register(handler).ok_or(InitError::Interrupt("no free vector"))?;
    // I/O APIC destinations are 8-bit xAPIC ids (all CPUs QEMU gives us fit).
    ioapic::route(gsi, vector, apic::id() as u8)
        .map_err(|_| InitError::Interrupt("line beyond the I/O APICs"))?;
    // The device may have raised its line (DHCP's first reply) before the route
    // existed; that assertion was never delivered and a level-triggered line that
    // stays high never interrupts again. Run the handler once, irqs off as in an
    // interrupt, to lower it; later events raise it anew.
    let irqs = libos::irqflags::IrqGuard::new();
    handler();
    drop(irqs);
    Ok(())
}

/// QEMU's `-M microvm` layout (hw/i386/microvm.c): virtio-mmio transports every 512
/// bytes from 0xfeb00000; with the second I/O APIC, 24 of them on GSIs 24–47, else 8
/// on GSIs 5–12. Used when QEMU did not announce them on the command line (it does not
/// for PVH kernels).
fn microvm_transports() -> alloc::vec::Vec<MmioDevice> {
    const BASE: u64 = 0xfeb0_0000;
    const SIZE: u64 = 512;
    let (count, first_irq) = if ioapic::second_present() {
        (24, 24)
    } else {
        (8, 5)
    };
    (0..count)
        .map(|i| MmioDevice {
            base: BASE + SIZE * u64::from(i),
            size: SIZE,
            irq: first_irq + i,
        })
        .collect()
}

/// Finds and starts every virtio-net device: the virtio-mmio transports QEMU announced
/// on the command line, then virtio-pci functions on PCI bus 0 (if there is one).
///
/// Context: task context (`Platform::start_services`).
pub fn probe_all(mmio: &[MmioDevice]) {
    let report = |what: core::fmt::Arguments<'_>, r: Result<(), InitError>| {
        if let Err(e) = r {
            println!("virtio-net: {what}: {e}; not used");
        }
    };
    if libos::boot::loglevel() == libos::cmdline::LogLevel::Debug {
        println!(
            "virtio: {} virtio-mmio transport(s) announced on the command line",
            mmio.len()
        );
    }
    let scanned;
    let mmio = if mmio.is_empty() && !pci::bus_present() {
        scanned = microvm_transports();
        &scanned[..]
    } else {
        mmio
    };
    for d in mmio {
        match Mmio::probe(d.base, DEVICE_NET) {
            Ok(None) => {}
            Ok(Some(m)) => {
                let window = m.window();
                report(
                    format_args!("virtio-mmio at {:#x}", d.base),
                    start(m, d.irq, move || {
                        Mmio::ack_interrupt(window);
                    }),
                );
            }
            Err(e) => report(format_args!("virtio-mmio at {:#x}", d.base), Err(e)),
        }
    }
    if !pci::bus_present() {
        return;
    }
    for f in pci::functions().filter(|f| virtio_pci::matches(f.ids(), DEVICE_NET)) {
        let what = format_args!("virtio-pci at 00:{:02x}.{}", f.device, f.function);
        let line = match f.intx_irq() {
            Ok(line) => line,
            Err(e) => {
                report(what, Err(InitError::Interrupt(e.why())));
                continue;
            }
        };
        let r = Pci::new(f).and_then(|p| {
            let isr = p.isr();
            start(p, u32::from(line), move || {
                Pci::ack_interrupt(isr);
            })
        });
        report(what, r);
    }
}
