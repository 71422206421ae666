//! virtio 1.x devices: the two transports QEMU offers (virtio-mmio on `-M microvm`,
//! modern virtio-pci on `-M pc`) behind one [`Transport`] trait, queue memory, device
//! initialization, and the network driver. The ring logic is in `crate::virtq`.

mod mmio;
mod net;
mod pci;

use alloc::alloc::{Layout, alloc_zeroed};
use core::fmt;

use crate::virtq::RingMemory;

pub use net::probe_all;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The driver gave up.
    pub const FAILED: u8 = 128;
}

/// Device feature: virtio 1.x (modern) interface.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device type ids.
pub const DEVICE_NET: u32 = 1;

/// What can go wrong bringing a device up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// The transport does not speak virtio 1.x.
    Legacy(&'static str),
    /// The device does not offer a feature we need.
    MissingFeature(&'static str),
    /// The device refused our features.
    FeaturesRejected,
    /// A queue is missing or unusable.
    Queue(u16, &'static str),
    /// No memory or mapping for the device.
    Resources(&'static str),
    /// Interrupt routing failed.
    Interrupt(&'static str),
    /// The PCI capabilities describing the device's registers are unusable.
    Capabilities(crate::virtio_pci_caps::CapError),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Legacy(how) => write!(f, "legacy virtio device ({how})"),
            InitError::MissingFeature(what) => write!(f, "device lacks feature {what}"),
            InitError::FeaturesRejected => write!(f, "device rejected the negotiated features"),
            InitError::Queue(q, why) => write!(f, "queue {q}: {why}"),
            InitError::Resources(why) => write!(f, "{why}"),
            InitError::Interrupt(why) => write!(f, "interrupt routing: {why}"),
            InitError::Capabilities(e) => write!(f, "virtio-pci capabilities: {e}"),
        }
    }
}

/// How the driver talks to a device, whichever the bus.
pub trait Transport: Send {
    /// The 64 feature bits the device offers.
    fn device_features(&mut self) -> u64;
    /// Tells the device which features the driver uses.
    fn set_driver_features(&mut self, features: u64);
    /// Reads the device status.
    fn status(&mut self) -> u8;
    /// Writes the device status (0 resets the device).
    fn set_status(&mut self, status: u8);
    /// The largest size queue `q` supports (0 = no such queue).
    fn queue_max(&mut self, q: u16) -> u16;
    /// Gives queue `q` its size and area addresses and enables it; an error if the
    /// device's answers make the queue unusable.
    fn setup_queue(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), InitError>;
    /// Tells the device queue `q` has new buffers.
    fn notify(&mut self, q: u16);
    /// Reads a byte of the device-specific configuration.
    fn config_u8(&mut self, offset: usize) -> u8;
}

/// Resets the device and negotiates the features `choose` picks out of those offered
/// (of which `required` must be offered; [`F_VERSION_1`] always is required). Returns
/// the features offered and those in use; the caller sets up queues, then calls
/// [`finish_init`].
pub fn begin_init(
    t: &mut dyn Transport,
    choose: impl Fn(u64) -> u64,
    required: &[(u64, &'static str)],
) -> Result<(u64, u64), InitError> {
    t.set_status(0);
    let mut spins = 0u32;
    while t.status() != 0 {
        spins += 1;
        if spins > 1_000_000 {
            return Err(InitError::Resources("device does not finish its reset"));
        }
        core::hint::spin_loop();
    }
    t.set_status(status::ACKNOWLEDGE);
    t.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let offered = t.device_features();
    if offered & F_VERSION_1 == 0 {
        fail(t);
        return Err(InitError::MissingFeature("VIRTIO_F_VERSION_1"));
    }
    for &(bit, name) in required {
        if offered & bit == 0 {
            fail(t);
            return Err(InitError::MissingFeature(name));
        }
    }
    let features = offered & (choose(offered) | F_VERSION_1);
    t.set_driver_features(features);
    t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    if t.status() & status::FEATURES_OK == 0 {
        fail(t);
        return Err(InitError::FeaturesRejected);
    }
    Ok((offered, features))
}

/// Marks the driver ready: the device may now use the queues.
pub fn finish_init(t: &mut dyn Transport) {
    t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
}

fn fail(t: &mut dyn Transport) {
    let s = t.status();
    t.set_status(s | status::FAILED);
}

/// Memory shared with a device (queue rings): zeroed, page-aligned heap memory that is
/// never freed (the device may hold its address for as long as the image runs). RAM is
/// identity-mapped, so the address is the physical address the device uses.
#[derive(Debug)]
pub struct DmaMemory {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the memory is owned by one queue, which its driver moves between tasks only
// as a whole; nothing else holds the pointer on the CPU side.
unsafe impl Send for DmaMemory {}

impl DmaMemory {
    /// `len` zeroed bytes, page-aligned.
    pub fn new(len: usize) -> Option<DmaMemory> {
        let layout = Layout::from_size_align(len.max(1), 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(DmaMemory { ptr, len })
    }

    /// The physical address of byte `offset`.
    pub fn paddr(&self, offset: usize) -> u64 {
        self.ptr as u64 + offset as u64
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        assert!(
            offset.is_multiple_of(align_of::<T>()) && offset + size_of::<T>() <= self.len,
            "ring access at {offset} outside the queue memory"
        );
        // SAFETY: the assert keeps `offset` inside the allocation.
        unsafe { self.ptr.add(offset).cast::<T>() }
    }
}

impl RingMemory for DmaMemory {
    fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: `at` checks bounds and alignment; the device may write concurrently,
        // hence volatile (x86 is little-endian, as virtio 1.x is).
        unsafe { self.at::<u16>(offset).read_volatile() }
    }
    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in `read_u16`.
        unsafe { self.at::<u32>(offset).read_volatile() }
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        // SAFETY: as in `read_u16`.
        unsafe { self.at::<u16>(offset).write_volatile(value) }
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read_u16`.
        unsafe { self.at::<u32>(offset).write_volatile(value) }
    }
    fn write_u64(&mut self, offset: usize, value: u64) {
        // SAFETY: as in `read_u16`.
        unsafe { self.at::<u64>(offset).write_volatile(value) }
    }
    fn size(&self) -> usize {
        self.len
    }
}

/// A device register window (MMIO), mapped uncached: `len` bytes at `base`, all inside
/// the one 2 MiB page [`MmioWindow::map`] mapped.
#[derive(Debug, Clone, Copy)]
pub struct MmioWindow {
    base: u64,
    len: u32,
}

impl MmioWindow {
    /// Maps the window of `len` bytes at `base` (the 2 MiB page around it) and returns
    /// it; an error if the window does not lie inside that one page.
    pub fn map(base: u64, len: u32) -> Result<MmioWindow, InitError> {
        let page = crate::virtio_pci_caps::MAP_PAGE;
        let last = base.checked_add(u64::from(len).max(1) - 1);
        if len == 0 || last.is_none_or(|last| last / page != base / page) {
            return Err(InitError::Resources(
                "device register window crosses a 2 MiB page",
            ));
        }
        if crate::paging::map_mmio(base) {
            Ok(MmioWindow { base, len })
        } else {
            Err(InitError::Resources(
                "cannot map the device registers (page-table pool full)",
            ))
        }
    }

    /// The window's length in bytes.
    pub fn size(&self) -> u32 {
        self.len
    }

    /// The address of a `T` at `offset`, which must lie inside the window.
    fn at<T>(&self, offset: u64) -> u64 {
        assert!(
            crate::virtio_pci_caps::access_inside(offset, size_of::<T>(), self.len)
                && offset.is_multiple_of(align_of::<T>() as u64),
            "device register access at {offset:#x} outside its {}-byte window",
            self.len
        );
        self.base + offset
    }

    /// Reads the register of type `T` at `offset`.
    ///
    /// # Panics
    /// If the register does not lie inside the window (a driver bug: offsets that come
    /// from the device are checked against the window before they reach here).
    pub fn read<T: Copy>(&self, offset: u64) -> T {
        let addr = self.at::<T>(offset);
        // SAFETY: `map` mapped the 2 MiB page holding the whole window uncached, and
        // `at` checked that the aligned access lies inside the window.
        unsafe { (addr as *const T).read_volatile() }
    }

    /// Writes the register of type `T` at `offset`.
    ///
    /// # Panics
    /// As [`MmioWindow::read`].
    pub fn write<T: Copy>(&self, offset: u64, value: T) {
        let addr = self.at::<T>(offset);
        // SAFETY: as in `read`.
        unsafe { (addr as *mut T).write_volatile(value) }
    }
}
