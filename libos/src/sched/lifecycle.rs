//! A task's life: spawning it (fallibly), its first instructions on its own stack,
//! its end (joiners woken, stack freed by the next switch), and joining it.

use super::*;

/// Entered on a new task's stack by the trampoline.
#[unsafe(no_mangle)]
extern "C" fn libos_task_start(id: u64) -> ! {
    // SAFETY: a task starts from `schedule` with irqs off.
    let irqs_off = unsafe { IrqsOff::assume() };
    finish_switch(&irqs_off);
    if TaskId(id) == IDLE {
        idle_loop();
    }
    let entry = with(&irqs_off, |s| {
        s.tasks.get_mut(&TaskId(id)).and_then(|t| t.entry.take())
    });
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
    with(&irqs_off, |s| {
        let id = s.cur();
        let t = s.tasks.get_mut(&id).expect("current exists");
        t.state = State::Dead;
        let joiners = core::mem::take(&mut t.joiners);
        s.zombies.push_back(id);
        for j in joiners {
            // (The switch below decides who runs; a joiner left queued here is
            // placed again by the next reschedule, which the tick of the task that
            // runs next provides if it must share the CPU.)
            make_ready(s, j);
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
            let done = with(&irqs_off, |s| {
                let me = s.cur();
                match s.tasks.get_mut(&self.id) {
                    Some(t) if t.state != State::Dead => {
                        t.joiners.push(me);
                        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
                        false
                    }
                    _ => true,
                }
            });
            if done {
                self.joined = true;
                with(&irqs_off, |s| {
                    if let Some(t) = s.tasks.get_mut(&self.id) {
                        t.detached = true;
                        if t.stack.is_none() {
                            s.tasks.remove(&self.id);
                        }
                    }
                });
                return;
            }
            schedule(&irqs_off);
        }
    }
}

impl Drop for JoinHandle {
    fn drop(&mut self) {
        if !self.joined {
            let guard = IrqGuard::new();
            with(&guard.token(), |s| {
                if let Some(t) = s.tasks.get_mut(&self.id) {
                    t.detached = true;
                    // Already dead and its stack freed (it ended before its handle was
                    // dropped): nobody else removes it, as in `join`.
                    if t.state == State::Dead && t.stack.is_none() {
                        s.tasks.remove(&self.id);
                    }
                }
            });
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
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    let id = with(&irqs_off, |s| {
        let id = TaskId(s.next_id);
        s.next_id += 1;
        let sp = stack::initial_frame(&stack, id.0);
        let mut task = Task::new(name, prio, State::Blocked, sp, Some(stack));
        task.entry = Some(Box::new(f));
        // Placement's first choice, if idle: the spawner's CPU.
        task.last_cpu = PerCpu::get(&irqs_off).id();
        s.tasks.insert(id, Box::new(task));
        make_ready(s, id);
        id
    });
    crate::time::program_next_event(&irqs_off);
    drop(guard);
    // A higher-priority task may preempt right away under full.
    drop(crate::preempt::preempt_disable());
    Ok(JoinHandle { id, joined: false })
}
