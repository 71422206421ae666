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

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: copies rsp into a register; no memory or flags are touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    rsp
}

core::arch::global_asm!(
    r#"
    .section .text.libos_probe, "ax"
    .global libos_probe_trap
    .type libos_probe_trap, @function
libos_probe_trap:
    ud2
    ret
"#
);

unsafe extern "C" {
    fn libos_probe_trap();
}

/// Address of the `ud2` that [`probe_trap`] executes (the trap handler resumes it).
pub fn probe_trap_address() -> u64 {
    libos_probe_trap as *const () as u64
}

/// Raises a *resumable* exception: a `ud2` at a known address, which the #UD handler
/// recognizes, counts ([`crate::trap::probes`]) and steps over, as Linux does for
/// `WARN()`. A probe of the whole exception path (stub, entry core, irq stack, exit).
/// (`int3` would be the classic choice, but the software KVM of our test machines
/// cannot deliver it to the guest.)
pub fn probe_trap() {
    // SAFETY: the #UD handler resumes at the `ret` after the `ud2` with all registers
    // preserved, so this is a plain call that returns.
    unsafe { libos_probe_trap() }
}

/// Executes `ud2` (an invalid opcode): the backend reports #UD and ends the image.
pub fn invalid_opcode() -> ! {
    // SAFETY: ud2 raises #UD; the handler for it never returns here.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
