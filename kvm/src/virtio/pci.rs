//! The modern virtio-pci transport (virtio 1.x §4.1): the common, notify, ISR and
//! device configuration structures found through vendor capabilities in PCI config
//! space, inside memory BARs.

use super::{InitError, MmioWindow, Transport};
use crate::pci::Function;
use crate::virtio_pci_caps::{self as caps, Bar};

/// Red Hat's vendor id, which virtio devices use.
pub const VENDOR: u16 = 0x1af4;

/// Offsets in the common configuration structure.
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// Queues whose notify offsets are kept (virtio-net without multiqueue uses 2).
const MAX_QUEUES: usize = 4;

/// MSI-X "no vector": the device uses INTx (MSI-X stays disabled).
const NO_VECTOR: u16 = 0xffff;

/// The PCI device id of a virtio device of type `device_type`: modern (0x1040 + type)
/// or transitional (net = 0x1000).
pub fn matches(ids: (u16, u16), device_type: u32) -> bool {
    let modern = 0x1040 + device_type as u16;
    let transitional = match device_type {
        super::DEVICE_NET => Some(0x1000),
        _ => None,
    };
    ids.0 == VENDOR && (ids.1 == modern || Some(ids.1) == transitional)
}

/// One modern virtio-pci device.
#[derive(Debug)]
pub struct Pci {
    common: MmioWindow,
    notify: MmioWindow,
    notify_multiplier: u32,
    /// Per queue set up: its register's byte offset in the notify structure (checked
    /// against the structure's length).
    notify_off: [Option<u64>; MAX_QUEUES],
    isr: MmioWindow,
    device: MmioWindow,
}

impl Pci {
    /// Finds the virtio structures of `f`, checks them against their BARs (see
    /// [`crate::virtio_pci_caps`]), maps them and enables the function.
    pub fn new(f: Function) -> Result<Pci, InitError> {
        let config = f.config_space();
        let bar = |n: u8| {
            f.memory_bar_assigned(n)
                .map(|(base, size)| Bar { base, size })
        };
        let found = caps::parse(&config, bar).map_err(InitError::Capabilities)?;
        let pci = Pci {
            common: MmioWindow::map(found.common.base, found.common.len)?,
            notify: MmioWindow::map(found.notify.base, found.notify.len)?,
            notify_multiplier: found.notify_multiplier,
            notify_off: [None; MAX_QUEUES],
            isr: MmioWindow::map(found.isr.base, found.isr.len)?,
            device: MmioWindow::map(found.device.base, found.device.len)?,
        };
        f.enable();
        Ok(pci)
    }

    /// The ISR status register (for the interrupt handler).
    pub fn isr(&self) -> MmioWindow {
        self.isr
    }

    /// Reads (and so acknowledges: reading clears it) the ISR status, lowering INTx.
    ///
    /// Context: the device's interrupt handler.
    pub fn ack_interrupt(isr: MmioWindow) -> u8 {
        isr.read::<u8>(0)
    }
}

impl Transport for Pci {
    fn device_features(&mut self) -> u64 {
        let mut f = 0;
        for half in 0..2u32 {
            self.common
                .write::<u32>(common::DEVICE_FEATURE_SELECT, half);
            f |= u64::from(self.common.read::<u32>(common::DEVICE_FEATURE)) << (32 * half);
        }
        f
    }

    fn set_driver_features(&mut self, features: u64) {
        for half in 0..2u32 {
            self.common
                .write::<u32>(common::DRIVER_FEATURE_SELECT, half);
            self.common
                .write::<u32>(common::DRIVER_FEATURE, (features >> (32 * half)) as u32);
        }
    }

    fn status(&mut self) -> u8 {
        self.common.read::<u8>(common::DEVICE_STATUS)
    }

    fn set_status(&mut self, status: u8) {
        self.common.write::<u8>(common::DEVICE_STATUS, status);
    }

    fn queue_max(&mut self, q: u16) -> u16 {
        self.common.write::<u16>(common::QUEUE_SELECT, q);
        self.common.read::<u16>(common::QUEUE_SIZE)
    }

    fn setup_queue(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), InitError> {
        let c = &self.common;
        c.write::<u16>(common::QUEUE_SELECT, q);
        c.write::<u16>(common::QUEUE_SIZE, size);
        c.write::<u16>(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
        // 64-bit fields as two 32-bit halves (QEMU splits wider accesses anyway).
        for (field, addr) in [
            (common::QUEUE_DESC, desc),
            (common::QUEUE_DRIVER, driver),
            (common::QUEUE_DEVICE, device),
        ] {
            c.write::<u32>(field, addr as u32);
            c.write::<u32>(field + 4, (addr >> 32) as u32);
        }
        let slot = self
            .notify_off
            .get_mut(usize::from(q))
            .ok_or(InitError::Queue(q, "more queues than the driver keeps"))?;
        let off = c.read::<u16>(common::QUEUE_NOTIFY_OFF);
        *slot = Some(
            caps::notify_offset(off, self.notify_multiplier, self.notify.size()).ok_or(
                InitError::Queue(q, "notify register outside the notify structure"),
            )?,
        );
        c.write::<u16>(common::QUEUE_ENABLE, 1);
        Ok(())
    }

    fn notify(&mut self, q: u16) {
        if let Some(&Some(at)) = self.notify_off.get(usize::from(q)) {
            self.notify.write::<u16>(at, q);
        }
    }

    fn config_u8(&mut self, offset: usize) -> u8 {
        // The structure is at least MIN_DEVICE (6, the MAC) bytes long; past its end
        // reads as 0xff, like an absent register.
        if caps::access_inside(offset as u64, 1, self.device.size()) {
            self.device.read::<u8>(offset as u64)
        } else {
            0xff
        }
    }
}
