//! PCI configuration space through the legacy ports 0xcf8/0xcfc (bus 0 only: QEMU's
//! `-M pc` puts every device there), configuration-space snapshots and memory BARs.

use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Config-space offsets we use.
const VENDOR_ID: u8 = 0x00;
const COMMAND: u8 = 0x04;
const BAR0: u8 = 0x10;
/// Command register: respond to memory accesses; master DMA.
const CMD_MEMORY: u16 = 1 << 1;
const CMD_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx disabled when set.
const CMD_INTX_DISABLE: u16 = 1 << 10;

/// Where unassigned BARs get addresses: the bottom of `-M pc`'s 32-bit PCI hole, which
/// starts at 0xe0000000 whenever the guest has at most 3.5 GiB of RAM (the firmware
/// places its own BARs near the top, below 0xfec00000).
pub const BAR_WINDOW: u64 = 0xe000_0000;
const BAR_WINDOW_END: u64 = 0xf000_0000;
static NEXT_BAR: spinning_top::Spinlock<u64> = spinning_top::Spinlock::new(BAR_WINDOW);

/// A function on bus 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// Device number (0–31).
    pub device: u8,
    /// Function number (0–7).
    pub function: u8,
}

impl Function {
    fn address(self, offset: u8) -> u32 {
        (1 << 31)
            | (u32::from(self.device) << 11)
            | (u32::from(self.function) << 8)
            | u32::from(offset & 0xfc)
    }

    /// Reads the aligned 32-bit register holding `offset`.
    pub fn read32(self, offset: u8) -> u32 {
        let _irqs = libos::irqflags::IrqGuard::new();
        // SAFETY: 0xcf8/0xcfc are the PCI configuration mechanism #1 ports; selecting a
        // register and reading it has no side effect on memory. Irqs are off, so the
        // address/data pair is not interleaved with another access on this CPU.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(self.address(offset));
            Port::<u32>::new(CONFIG_DATA).read()
        }
    }

    /// Writes the aligned 32-bit register at `offset`.
    pub fn write32(self, offset: u8, value: u32) {
        let _irqs = libos::irqflags::IrqGuard::new();
        // SAFETY: as in `read32`; the registers written (command, BARs, interrupt line)
        // are the ones this module's callers own for the device they drive.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(self.address(offset));
            Port::<u32>::new(CONFIG_DATA).write(value);
        }
    }

    /// (vendor, device) ids.
    pub fn ids(self) -> (u16, u16) {
        let v = self.read32(VENDOR_ID);
        (v as u16, (v >> 16) as u16)
    }

    /// A copy of the function's 256 bytes of configuration space (parsed by pure code,
    /// which then sees one consistent snapshot).
    pub fn config_space(self) -> [u8; 256] {
        let mut c = [0u8; 256];
        for (i, w) in c.chunks_exact_mut(4).enumerate() {
            w.copy_from_slice(&self.read32(4 * i as u8).to_le_bytes());
        }
        c
    }

    /// The physical address of memory BAR `bar` (0–5), following a 64-bit BAR into its
    /// upper half; `None` for an I/O BAR or one the firmware left unassigned.
    pub fn memory_bar(self, bar: u8) -> Option<u64> {
        let (off, low, wide) = self.memory_bar_register(bar)?;
        let high = if wide { self.read32(off + 4) } else { 0 };
        let addr = (u64::from(high) << 32) | u64::from(low & !0xf);
        (addr != 0).then_some(addr)
    }

    /// Memory BAR `bar`'s address and size, giving it an address first if the firmware
    /// left it unassigned; `None` for an I/O BAR or one that cannot be placed.
    ///
    /// qboot (QEMU's fast firmware) leaves 64-bit BARs such as virtio-pci's BAR 4
    /// unassigned; they get room from [`BAR_WINDOW`] upwards, naturally aligned.
    /// Context: before [`Function::enable`] (sizing turns memory decoding off briefly).
    pub fn memory_bar_assigned(self, bar: u8) -> Option<(u64, u64)> {
        let (off, low, wide) = self.memory_bar_register(bar)?;
        // Size it: all ones in, the size mask out (decoding off meanwhile).
        let cmd = self.read32(COMMAND);
        self.write32(COMMAND, cmd & !u32::from(CMD_MEMORY));
        self.write32(off, u32::MAX);
        let mask = self.read32(off) & !0xf;
        self.write32(off, low);
        let size = u64::from((!mask).wrapping_add(1));
        let placed = if mask == 0 || !size.is_power_of_two() {
            None
        } else if let Some(addr) = self.memory_bar(bar) {
            Some((addr, size))
        } else {
            let _irqs = libos::irqflags::IrqGuard::new();
            let mut next = NEXT_BAR.lock();
            let addr = next.next_multiple_of(size);
            if addr + size > BAR_WINDOW_END {
                None
            } else {
                *next = addr + size;
                self.write32(off, addr as u32 | (low & 0xf));
                if wide {
                    self.write32(off + 4, 0);
                }
                Some((addr, size))
            }
        };
        self.write32(COMMAND, cmd);
        placed
    }

    /// Memory BAR `bar`'s config offset, its low word, and whether it is 64 bits wide
    /// (its upper half in the next BAR); `None` for an I/O BAR or `bar` > 5.
    fn memory_bar_register(self, bar: u8) -> Option<(u8, u32, bool)> {
        if bar > 5 {
            return None;
        }
        let off = BAR0 + 4 * bar;
        let low = self.read32(off);
        if low & 1 != 0 {
            return None;
        }
        Some((off, low, (low >> 1) & 3 == 2 && bar < 5))
    }

    /// Lets the device answer memory accesses, master DMA and raise INTx.
    pub fn enable(self) {
        let cmd = self.read32(COMMAND);
        let bits = (cmd as u16 | CMD_MEMORY | CMD_BUS_MASTER) & !CMD_INTX_DISABLE;
        self.write32(COMMAND, (cmd & 0xffff_0000) | u32::from(bits));
    }

    /// The ISA IRQ the function's INTx pin raises: by the PIIX3's PIRQ routing where
    /// there is one (the firmware's Interrupt Line note can be wrong, see `pci_intx`),
    /// else by that note.
    pub fn intx_irq(self) -> Result<u8, crate::pci_intx::IntxError> {
        let bridge = Function {
            device: crate::pci_intx::PIIX_DEVICE,
            function: 0,
        };
        let piix = crate::pci_intx::is_piix(bridge.ids()).then(|| bridge.config_space());
        crate::pci_intx::isa_irq(self.device, &self.config_space(), piix.as_ref())
    }
}

/// Every present function on bus 0.
pub fn functions() -> impl Iterator<Item = Function> {
    (0..32u8)
        .flat_map(|device| (0..8u8).map(move |function| Function { device, function }))
        .filter(|f| f.ids().0 != 0xffff)
}

/// Whether a PCI host bridge answers (`-M microvm` has no PCI bus by default).
pub fn bus_present() -> bool {
    Function {
        device: 0,
        function: 0,
    }
    .ids()
    .0 != 0xffff
}
