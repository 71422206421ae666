//! The few x86-64 instructions libos itself needs (both backends are x86-64).

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only reads the TSC into edx:eax; it touches no memory.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The current frame pointer (valid because images build with frame pointers).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: copies rbp into a register; no memory or flags are touched.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    rbp
}

/// Raises a breakpoint exception (`int3`); the backend's trap handler counts it in
/// [`crate::trap::breakpoints`] and resumes after the instruction.
#[inline(never)]
pub fn breakpoint() {
    // SAFETY: the backend installs a #BP handler that returns to the next instruction
    // with all registers preserved, so to this function int3 is a no-op.
    unsafe { core::arch::asm!("int3") };
}

/// Executes `ud2` (an invalid opcode): the backend reports #UD and ends the image.
pub fn invalid_opcode() -> ! {
    // SAFETY: ud2 raises #UD; the handler for it never returns here.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
