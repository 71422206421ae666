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

/// The heart of every backend's exception/interrupt stub, as Intel-syntax assembly
/// text for `global_asm!`: with the hardware (or Xen-normalized) frame, error code and
/// vector already on the stack, it saves the general-purpose registers as a
/// [`crate::regs::Regs`] frame, pushes a fake frame record (interrupted rbp and rip) so
/// backtraces continue into the interrupted code, calls `$handler(&mut Regs)`, then
/// restores the registers and drops vector and error code, leaving the hardware frame
/// for the backend's return instruction.
///
/// Stack alignment: the CPU aligns rsp to 16 before its 5-word frame; with error code
/// and vector that is 7 words, the 15 registers make 22 and the fake frame 24, so rsp is
/// 16-byte aligned at the call as the ABI wants. (Xen PV builds the same frame.)
#[macro_export]
macro_rules! entry_frame_asm {
    ($handler:literal) => {
        concat!(
            "push rax\n push rbx\n push rcx\n push rdx\n push rsi\n push rdi\n push rbp\n",
            "push r8\n push r9\n push r10\n push r11\n push r12\n push r13\n push r14\n push r15\n",
            "mov rdi, rsp\n",
            "push qword ptr [rdi + 136]\n", // fake frame: interrupted rip ...
            "push qword ptr [rdi + 64]\n",  // ... and rbp
            "mov rbp, rsp\n",
            "cld\n",
            "call ",
            $handler,
            "\n",
            "add rsp, 16\n",
            "pop r15\n pop r14\n pop r13\n pop r12\n pop r11\n pop r10\n pop r9\n pop r8\n",
            "pop rbp\n pop rdi\n pop rsi\n pop rdx\n pop rcx\n pop rbx\n pop rax\n",
            "add rsp, 16\n", // vector, error code
        )
    };
}

/// Assembly text defining 256 stubs, `$stride` bytes apart from label `$table`: each
/// pushes a zero error code (for vectors where the CPU pushes none), its vector, and
/// jumps to `$common`. `$prologue` runs first in every stub (Xen PV pops the rcx/r11 it
/// pushed).
#[macro_export]
macro_rules! entry_stubs_asm {
    ($table:literal, $common:literal, $prologue:literal) => {
        concat!(
            ".balign 32\n.global ", $table, "\n.type ", $table, ", @function\n", $table, ":\n",
            ".set vec, 0\n",
            ".rept 256\n",
            ".balign 32\n",
            $prologue, "\n",
            // Vectors with a CPU-pushed error code: 8, 10-14, 17, 21, 29, 30.
            ".if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)\n",
            ".else\n push 0\n .endif\n",
            "push vec\n",
            "jmp ", $common, "\n",
            ".set vec, vec + 1\n",
            ".endr\n",
        )
    };
}

/// Bytes between the stubs of [`entry_stubs_asm`].
pub const ENTRY_STUB_STRIDE: u64 = 32;
