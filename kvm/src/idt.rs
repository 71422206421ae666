//! The interrupt descriptor table: every vector enters a stub in `traps`.

use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;

use crate::gdt::ist;
use crate::traps;

/// A 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0..3: IST slot (0 = stay on the current stack).
    ist: u8,
    /// Present, DPL 0, type 0xE (interrupt gate: clears IF on entry).
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const INTERRUPT_GATE: u8 = 0x8e;

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64, selector: SegmentSelector, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: selector.0,
            ist,
            type_attr: INTERRUPT_GATE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// The vectors that run on an IST stack, and their slot; every other vector stays on
/// the current stack (slot 0).
const IST_SLOTS: [(u8, u8); 3] = [
    (8, ist::DOUBLE_FAULT),
    (2, ist::NMI),
    (18, ist::MACHINE_CHECK),
];

// Filled once by `init` before `lidt`; afterwards only the CPU reads it. Every gate is
// written before the first `lidt`, so boot need not zero it (.noinit, the linker script).
#[unsafe(link_section = ".bss.noinit.idt")]
static mut IDT: [Gate; 256] = [Gate::MISSING; 256];

/// Fills and loads the IDT.
///
/// Context: boot CPU, once, irqs off, after `gdt::init`.
pub fn init(code: SegmentSelector) {
    let idt = &raw mut IDT;
    // SAFETY: runs once on the boot CPU before the IDT is loaded, so nothing else reads
    // or writes IDT concurrently.
    let idt = unsafe { &mut *idt };
    // The stubs are evenly spaced, so each gate is the previous one's handler plus the
    // stride; the few vectors on an IST stack are patched afterwards. (Splitting every
    // address and matching every vector cost about 10,000 instructions of boot.)
    let mut handler = traps::stub_address(0);
    for gate in idt.iter_mut() {
        *gate = Gate::interrupt(handler, code, 0);
        handler += libos::arch::ENTRY_STUB_STRIDE;
    }
    for (vector, slot) in IST_SLOTS {
        idt[usize::from(vector)].ist = slot;
    }
    load();
}

/// Loads the (filled) IDT on this CPU: application processors share the boot CPU's.
///
/// Context: irqs off, after [`init`] ran on the boot CPU.
pub fn load() {
    let idt = &raw const IDT;
    // SAFETY: after `init`, IDT is only read (by CPUs and here).
    let idt = unsafe { &*idt };
    let ptr = DescriptorTablePointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: VirtAddr::new(idt.as_ptr() as u64),
    };
    // SAFETY: `ptr` describes the static IDT, which lives forever and holds valid gates.
    unsafe { lidt(&ptr) };
}
