//! Task and irq stacks (heap memory with a guard page), and the context switch.

use alloc::alloc::{Layout, alloc, dealloc};

use crate::console;

pub(crate) const PAGE: usize = 4096;

/// The heap could not hold a stack of this many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory(pub usize);

impl core::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "out of memory allocating a {}-byte stack", self.0)
    }
}

/// A stack: `size` usable bytes above one guard page, all page-aligned.
#[derive(Debug)]
pub struct Stack {
    base: *mut u8,
    layout: Layout,
    guarded: bool,
}

// SAFETY: the stack is plain memory owned by this value; moving ownership between
// contexts is fine (only the task running on it touches its contents).
unsafe impl Send for Stack {}

impl Stack {
    /// Allocates a stack of `size` bytes (rounded up to pages) plus a guard page.
    ///
    /// # Panics
    /// If the heap is exhausted.
    pub fn new(size: usize) -> Stack {
        Stack::try_new(size).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Allocates a stack of `size` bytes (rounded up to pages) plus a guard page, or
    /// says that the heap cannot hold it.
    pub fn try_new(size: usize) -> Result<Stack, OutOfMemory> {
        let size = size.next_multiple_of(PAGE);
        let layout = Layout::from_size_align(size + PAGE, PAGE).map_err(|_| OutOfMemory(size))?;
        // SAFETY: the layout has a non-zero size. (Not zeroed: a stack is written before
        // it is read, and zeroing costs boot time.)
        let base = unsafe { alloc(layout) };
        if base.is_null() {
            return Err(OutOfMemory(size));
        }
        let guarded = console::platform().is_some_and(|p| p.guard_page(base as u64, true));
        Ok(Stack {
            base,
            layout,
            guarded,
        })
    }

    /// The lowest usable address (above the guard page).
    pub fn bottom(&self) -> u64 {
        self.base as u64 + PAGE as u64
    }

    /// The initial stack pointer (exclusive top, 16-byte aligned).
    pub fn top(&self) -> u64 {
        self.base as u64 + self.layout.size() as u64
    }

    /// Whether the guard page is really inaccessible.
    pub fn guarded(&self) -> bool {
        self.guarded
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.guarded {
            // The heap will hand this page out again: make it accessible first.
            let ok = console::platform().is_some_and(|p| p.guard_page(self.base as u64, false));
            assert!(ok, "cannot unprotect a stack guard page");
        }
        // SAFETY: `base` came from `alloc` with this layout (in `new`) and is freed once.
        unsafe { dealloc(self.base, self.layout) }
    }
}

core::arch::global_asm!(
    r#"
    .section .text.libos_switch, "ax"
    .global libos_switch_stack
    .type libos_switch_stack, @function
/* libos_switch_stack(save_sp: *mut u64 (rdi), next_sp: u64 (rsi)) */
libos_switch_stack:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global libos_task_trampoline
    .type libos_task_trampoline, @function
/* First "return" of a new task: r12 = its task id. rbp = 0 ends backtraces. */
libos_task_trampoline:
    xor ebp, ebp
    mov rdi, r12
    call libos_task_start
    ud2
"#
);

unsafe extern "C" {
    fn libos_switch_stack(save_sp: *mut u64, next_sp: u64);
    fn libos_task_trampoline();
}

/// Saves the callee-saved registers and stack pointer into `*save_sp`, then resumes the
/// context whose stack pointer is `next_sp`.
///
/// # Safety
/// Irqs off; `next_sp` is a stack pointer saved by this function or built by
/// [`initial_frame`], whose stack stays alive; `save_sp` stays valid until resumed.
pub unsafe fn switch_stack(save_sp: *mut u64, next_sp: u64) {
    // SAFETY: (caller's contract) both contexts are valid.
    unsafe { libos_switch_stack(save_sp, next_sp) }
}

/// Builds the first frame of a new task on `stack`; returns its stack pointer. The
/// task starts in `libos_task_start(id)` with irqs off.
pub fn initial_frame(stack: &Stack, id: u64) -> u64 {
    // Layout from the returned sp upwards: r15 r14 r13 r12 rbx rbp, return address,
    // then two pad words: after the pops and `ret`, rsp = top - 16, so the trampoline's
    // `call` happens with rsp 16-byte aligned as the ABI wants.
    let frame: [u64; 9] = [
        0,
        0,
        0,
        id,
        0,
        0,
        libos_task_trampoline as *const () as u64,
        0,
        0,
    ];
    let sp = stack.top() - size_of_val(&frame) as u64;
    // SAFETY: the frame lies in the top bytes of the stack, which we own and which
    // nothing runs on yet.
    unsafe { core::ptr::write(sp as *mut [u64; 9], frame) };
    sp
}
