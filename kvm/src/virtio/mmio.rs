//! The virtio-mmio transport, version 2 (virtio 1.x). QEMU's microvm offers version 1
//! (legacy) unless started with `-global virtio-mmio.force-legacy=false`.

use super::{InitError, MmioWindow, Transport};

/// Register offsets (virtio 1.x §4.2.2).
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const CONFIG: u64 = 0x100;
}

/// The register window: the registers up to 0x100 and 0x100 bytes of device
/// configuration (QEMU's transports are 512 bytes apart).
const WINDOW: u32 = 0x200;

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;

/// One virtio-mmio transport.
#[derive(Debug)]
pub struct Mmio {
    regs: MmioWindow,
}

impl Mmio {
    /// The transport at `base` if it holds a device of type `device_id`: `Ok(None)` for
    /// an empty slot or another device type.
    pub fn probe(base: u64, device_id: u32) -> Result<Option<Mmio>, InitError> {
        let regs = MmioWindow::map(base, WINDOW)?;
        if regs.read::<u32>(reg::MAGIC) != MAGIC || regs.read::<u32>(reg::DEVICE_ID) != device_id {
            return Ok(None);
        }
        match regs.read::<u32>(reg::VERSION) {
            2 => Ok(Some(Mmio { regs })),
            1 => Err(InitError::Legacy(
                "virtio-mmio version 1; start QEMU with -global virtio-mmio.force-legacy=false",
            )),
            _ => Err(InitError::Legacy("unknown virtio-mmio version")),
        }
    }

    /// Reads and acknowledges the interrupt status (lowers the device's line).
    ///
    /// Context: the device's interrupt handler.
    pub fn ack_interrupt(regs: MmioWindow) -> u32 {
        let pending = regs.read::<u32>(reg::INTERRUPT_STATUS);
        regs.write::<u32>(reg::INTERRUPT_ACK, pending);
        pending
    }

    /// The register window (for the interrupt handler).
    pub fn window(&self) -> MmioWindow {
        self.regs
    }
}

impl Transport for Mmio {
    fn device_features(&mut self) -> u64 {
        let mut f = 0;
        for half in 0..2u32 {
            self.regs.write::<u32>(reg::DEVICE_FEATURES_SEL, half);
            f |= u64::from(self.regs.read::<u32>(reg::DEVICE_FEATURES)) << (32 * half);
        }
        f
    }

    fn set_driver_features(&mut self, features: u64) {
        for half in 0..2u32 {
            self.regs.write::<u32>(reg::DRIVER_FEATURES_SEL, half);
            self.regs
                .write::<u32>(reg::DRIVER_FEATURES, (features >> (32 * half)) as u32);
        }
    }

    fn status(&mut self) -> u8 {
        self.regs.read::<u32>(reg::STATUS) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.regs.write::<u32>(reg::STATUS, u32::from(status));
    }

    fn queue_max(&mut self, q: u16) -> u16 {
        self.regs.write::<u32>(reg::QUEUE_SEL, u32::from(q));
        self.regs
            .read::<u32>(reg::QUEUE_NUM_MAX)
            .min(u32::from(u16::MAX)) as u16
    }

    fn setup_queue(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), InitError> {
        let r = &self.regs;
        r.write::<u32>(reg::QUEUE_SEL, u32::from(q));
        r.write::<u32>(reg::QUEUE_NUM, u32::from(size));
        // Each address is a LOW register with its HIGH half 4 bytes above.
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, driver),
            (reg::QUEUE_DEVICE_LOW, device),
        ] {
            r.write::<u32>(low, addr as u32);
            r.write::<u32>(low + 4, (addr >> 32) as u32);
        }
        r.write::<u32>(reg::QUEUE_READY, 1);
        Ok(())
    }

    fn notify(&mut self, q: u16) {
        self.regs.write::<u32>(reg::QUEUE_NOTIFY, u32::from(q));
    }

    fn config_u8(&mut self, offset: usize) -> u8 {
        let at = reg::CONFIG.saturating_add(offset as u64);
        if crate::virtio_pci_caps::access_inside(at, 1, WINDOW) {
            self.regs.read::<u8>(at)
        } else {
            0xff
        }
    }
}
