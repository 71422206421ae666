//! The interrupt descriptor table: every vector enters a stub in `traps`.

use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;

use crate::gdt::ist;
use crate::traps;

/// A 64-bit interrupt gate, as the two quadwords the CPU reads:
///
/// ```text
/// low:  bits 0..16 offset 0..16, 16..32 selector, 32..35 IST slot (0 = stay on the
///       current stack), 40..48 type (0x8e: present, DPL 0, interrupt gate, which
///       clears IF on entry), 48..64 offset 16..32
/// high: bits 0..32 offset 32..64, 32..64 reserved
/// ```
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    low: u64,
    high: u64,
}

const INTERRUPT_GATE: u64 = 0x8e;

impl Gate {
    const MISSING: Gate = Gate { low: 0, high: 0 };

    fn interrupt(handler: u64, selector: SegmentSelector) -> Gate {
        Gate {
            low: (handler & 0xffff)
                | u64::from(selector.0) << 16
                | INTERRUPT_GATE << 40
                | (handler & 0xffff_0000) << 32,
            high: handler >> 32,
        }
    }

    fn set_ist(&mut self, slot: u8) {
        self.low = (self.low & !(0x7 << 32)) | u64::from(slot & 0x7) << 32;
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
    // The stubs are evenly spaced, so within a 64 KiB run of stubs each gate is the
    // previous one plus the stride (the offset's low 16 bits are the gate's low bits);
    // a run starts afresh where a stub crosses a 64 KiB boundary. The few vectors on an
    // IST stack are patched afterwards. (Splitting every address cost about 14
    // instructions a gate; this loop is about 6, which counts on uhyve here, where KVM
    // emulates every guest instruction.)
    const STRIDE: u64 = libos::arch::ENTRY_STUB_STRIDE;
    let mut vector = 0;
    while vector < idt.len() {
        let handler = traps::stub_address(vector as u8);
        let to_boundary = (0x1_0000 - (handler & 0xffff)).div_ceil(STRIDE) as usize;
        let run = to_boundary.min(idt.len() - vector);
        let mut gate = Gate::interrupt(handler, code);
        for slot in &mut idt[vector..vector + run] {
            *slot = gate;
            gate.low += STRIDE;
        }
        vector += run;
    }
    for (vector, slot) in IST_SLOTS {
        idt[usize::from(vector)].set_ist(slot);
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
