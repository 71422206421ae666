//! The register frame every entry stub builds.
//!
//! Both backends' asm stubs push the general-purpose registers in this order on top of
//! the hardware (or Xen-normalized) exception frame, so the handlers and the entry
//! core see one layout. Field order is memory order, lowest address first.

use core::fmt;

/// Saved registers of an interrupted context.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs, reason = "register names are their own documentation")]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number, pushed by the stub.
    pub vector: u64,
    /// Error code (the CPU's, or 0 pushed by the stub).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl fmt::Display for Regs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            [("rax", self.rax), ("rbx", self.rbx), ("rcx", self.rcx)],
            [("rdx", self.rdx), ("rsi", self.rsi), ("rdi", self.rdi)],
            [("rbp", self.rbp), ("rsp", self.rsp), ("r8 ", self.r8)],
            [("r9 ", self.r9), ("r10", self.r10), ("r11", self.r11)],
            [("r12", self.r12), ("r13", self.r13), ("r14", self.r14)],
            [("r15", self.r15), ("rip", self.rip), ("rfl", self.rflags)],
        ];
        for row in rows {
            for (i, (name, v)) in row.iter().enumerate() {
                let sep = if i == 0 { "  " } else { " " };
                write!(f, "{sep}{name}={v:016x}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "  cs={:04x} ss={:04x}", self.cs, self.ss)
    }
}
