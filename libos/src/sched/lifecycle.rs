//! A task's life: spawning it (fallibly), its first instructions on its own stack,
//! its end (joiners woken; freed by the CPU that leaves its stack, once detached), and
//! joining it.

use alloc::boxed::Box;

use super::runq::{self as rq, RQ};
use super::switch::{finish_switch, idle_loop, schedule};
use super::task::{self, IDLE, State, Task, TaskId};
use super::{OutOfMemory, Priority, Stack, TASK_STACK_SIZE, current_ref};
use crate::irqflags::{self, IrqGuard, IrqsOff};
use crate::percpu::PerCpu;

/// Entered on a new task's stack by the trampoline.
#[unsafe(no_mangle)]
extern "C" fn libos_task_start(id: u64) -> ! {
    // SAFETY: a task starts from `schedule` with irqs off.
    let irqs_off = unsafe { IrqsOff::assume() };
    finish_switch(&irqs_off);
    if TaskId(id) == IDLE {
        idle_loop();
    }
    let me = current_ref(&irqs_off);
    let entry = me.get().entry.lock().take();
    irqflags::local_irq_enable();
    if let Some(f) = entry {
        f();
    }
    exit_current()
}

/// Ends the running task: wakes its joiners and never returns.
pub(super) fn exit_current() -> ! {
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    let me = PerCpu::get(&irqs_off).id();
    task::with_table(&irqs_off, |tab| {
        let cur = current_ref(&irqs_off);
        {
            let _rq = RQ[me as usize].lock();
            cur.get().set_state(State::Dead);
        }
        let joiners = tab
            .map
            .get_mut(&cur.get().id)
            .map(|e| core::mem::take(&mut e.joiners))
            .unwrap_or_default();
        for j in joiners {
            // (The switch below decides who runs; a joiner left queued here is
            // placed again by the next reschedule, which the tick of the task that
            // runs next provides if it must share the CPU.)
            if let Some(t) = tab.get(j) {
                rq::wake(t, me);
            }
        }
    });
    schedule(&irqs_off);
    unreachable!("a dead task was scheduled again");
}

/// A handle to wait for a spawned task.
#[derive(Debug)]
pub struct JoinHandle {
    id: TaskId,
    joined: bool,
}

impl JoinHandle {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Blocks until the task has finished.
    pub fn join(mut self) {
        loop {
            let guard = IrqGuard::new();
            let irqs_off = guard.token();
            let done = task::with_table(&irqs_off, |tab| {
                let me = current_ref(&irqs_off);
                match tab.map.get_mut(&self.id) {
                    // (Its state is set to dead under the table lock too.)
                    Some(e) if e.task.get().state() != State::Dead => {
                        e.joiners.push(me.get().id);
                        let _rq = RQ[PerCpu::get(&irqs_off).id() as usize].lock();
                        me.get().set_state(State::Blocked);
                        false
                    }
                    _ => true,
                }
            });
            if done {
                self.joined = true;
                self.detach(&irqs_off);
                return;
            }
            schedule(&irqs_off);
        }
    }

    /// Its task no longer needs keeping once dead: free it now if it is.
    fn detach(&self, irqs_off: &IrqsOff<'_>) {
        let reaped = task::with_table(irqs_off, |tab| {
            if let Some(e) = tab.map.get_mut(&self.id) {
                e.detached = true;
            }
            tab.reap(self.id)
        });
        // Dropped outside the lock (frees heap memory and re-maps guard pages).
        drop(reaped);
    }
}

impl Drop for JoinHandle {
    fn drop(&mut self) {
        if !self.joined {
            let guard = IrqGuard::new();
            self.detach(&guard.token());
        }
    }
}

/// Starts `f` as a new task with priority `prio`.
///
/// # Panics
/// If the heap cannot hold the task's stack ([`try_spawn`] returns an error instead).
pub fn spawn(name: &'static str, prio: Priority, f: impl FnOnce() + Send + 'static) -> JoinHandle {
    try_spawn(name, prio, f).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `f` as a new task with priority `prio`, or returns an error (dropping `f`)
/// if the heap cannot hold the task's stack, the one large allocation of a spawn: a
/// server can refuse one connection instead of ending the image.
pub fn try_spawn(
    name: &'static str,
    prio: Priority,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle, OutOfMemory> {
    crate::time::ensure_init();
    let stack = Stack::try_new(TASK_STACK_SIZE)?;
    let entry: Box<dyn FnOnce() + Send> = Box::new(f);
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    // Placement's first choice, if idle: the spawner's CPU.
    let me = PerCpu::get(&irqs_off).id();
    let id = task::with_table(&irqs_off, |tab| {
        let id = tab.next_id();
        let task = Task::new(id, name, prio, State::Blocked, me).with_stack(stack);
        *task.entry.lock() = Some(entry);
        rq::wake(tab.insert(task), me);
        id
    });
    crate::time::program_next_event(&irqs_off);
    drop(guard);
    // A higher-priority task may preempt right away under full.
    drop(crate::preempt::preempt_disable());
    Ok(JoinHandle { id, joined: false })
}
