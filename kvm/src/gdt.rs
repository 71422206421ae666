//! GDT with a 64-bit TSS whose IST slots hold the exception stacks.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use crate::stacks;

/// IST slot numbers as the IDT names them (1-based; 0 = no stack switch).
pub mod ist {
    /// Double fault.
    pub const DOUBLE_FAULT: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Machine check.
    pub const MACHINE_CHECK: u8 = 3;
}

// Written once by `init` on the boot CPU before the GDT is loaded, then only read by
// the CPU; Rust code takes their addresses with `&raw`.
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

/// Loads the GDT and TSS; returns the kernel code selector.
///
/// Context: boot CPU, once, irqs off, before the IDT is loaded.
pub fn init() -> SegmentSelector {
    let (tss, gdt) = (&raw mut TSS, &raw mut GDT);
    // SAFETY: `init` runs once on the boot CPU before anything else references TSS or
    // GDT, so these exclusive references are unique; afterwards both are only read.
    let (tss, gdt) = unsafe { (&mut *tss, &mut *gdt) };
    load(tss, gdt, stacks::ist_stacks().map(stacks::top))
}

/// Gives an application processor a GDT and TSS of its own, with IST stacks (each
/// with a guard page) from the heap; they live as long as the CPU. The selectors are
/// the boot CPU's, so the shared IDT's gates fit.
///
/// Context: the AP, once, irqs off, per-CPU base set (the heap's lock traces into it).
pub fn init_ap() {
    let tops = [(); 3].map(|()| {
        let stack = libos::sched::Stack::new(stacks::IST_STACK_SIZE);
        let top = stack.top();
        // The CPU uses it until the image ends.
        core::mem::forget(stack);
        top
    });
    let tss = alloc::boxed::Box::leak(alloc::boxed::Box::new(TaskStateSegment::new()));
    let gdt = alloc::boxed::Box::leak(alloc::boxed::Box::new(GlobalDescriptorTable::new()));
    load(tss, gdt, tops);
}

/// Fills `tss`'s IST slots with `ist_tops`, builds `gdt` (code, data, TSS) and loads
/// both on this CPU.
fn load(
    tss: &'static mut TaskStateSegment,
    gdt: &'static mut GlobalDescriptorTable,
    ist_tops: [u64; 3],
) -> SegmentSelector {
    // (The TSS is packed: build the table, then store it whole.)
    let mut table = tss.interrupt_stack_table;
    for (slot, top) in table.iter_mut().zip(ist_tops) {
        *slot = VirtAddr::new(top);
    }
    tss.interrupt_stack_table = table;
    let tss: &'static TaskStateSegment = tss;
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose descriptors are valid
    // 64-bit code/data/TSS descriptors; the TSS outlives the program (static).
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_sel);
    }
    code
}
