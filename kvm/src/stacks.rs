//! Exception stacks with guard pages.
//!
//! Each stack is one page of guard (left unmapped by `paging`) followed by the stack;
//! the TSS's IST slots point at the tops. An overflow hits the guard page and becomes a
//! #DF, which has a stack of its own.

/// Bytes of usable stack per IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;
const PAGE: usize = 4096;

/// A stack preceded by a guard page.
#[repr(C, align(4096))]
pub struct GuardedStack {
    guard: [u8; PAGE],
    stack: [u8; IST_STACK_SIZE],
}

impl GuardedStack {
    const fn new() -> Self {
        GuardedStack {
            guard: [0; PAGE],
            stack: [0; IST_STACK_SIZE],
        }
    }
}

// The stacks are `static mut` so they are writable; Rust code only ever takes their
// addresses (`&raw`), the CPU is the only user of the memory. They live in .noinit (the
// linker script), which boot does not zero: a stack is written before it is read, and
// zeroing 60 KiB costs 15,000 instructions on a software KVM.
#[unsafe(link_section = ".bss.noinit.ist_stacks")]
static mut DOUBLE_FAULT: GuardedStack = GuardedStack::new();
#[unsafe(link_section = ".bss.noinit.ist_stacks")]
static mut NMI: GuardedStack = GuardedStack::new();
#[unsafe(link_section = ".bss.noinit.ist_stacks")]
static mut MACHINE_CHECK: GuardedStack = GuardedStack::new();

/// The IST stacks in TSS order: IST1 = #DF, IST2 = NMI, IST3 = #MC.
pub fn ist_stacks() -> [*mut GuardedStack; 3] {
    [&raw mut DOUBLE_FAULT, &raw mut NMI, &raw mut MACHINE_CHECK]
}

/// The initial stack pointer of a stack (its highest address, 16-byte aligned).
pub fn top(s: *mut GuardedStack) -> u64 {
    s as u64 + size_of::<GuardedStack>() as u64
}

/// The guard page's address.
pub fn guard(s: *mut GuardedStack) -> u64 {
    s as u64
}
