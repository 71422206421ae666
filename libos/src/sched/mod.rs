//! The scheduler: tasks with their own stacks, priorities, sleep, yield, join, wait
//! queues, and preemption according to the model in force.
//!
//! SMP: each CPU has its own run queue, under its own lock, with its current task and
//! idle task. A CPU picks the first task of its queue's best priority level in O(1),
//! without looking at other queues; only when it would go idle, or when its tick saw
//! competition elsewhere, does it look at every queue and steal. A task that becomes
//! ready goes to an idle CPU, or to the CPU running the lowest priority below its own
//! (either is kicked, by reschedule IPI), or else waits on the CPU it ran on last; the
//! common cases of that choice read two bits of an idle-CPU mask. [`balance`] holds the
//! policy as pure functions, host-tested.
//!
//! The files, by mechanism: `task` (what a task is, which lock guards which of its
//! fields, and when it is freed), `runq` (the per-CPU run queues, the lock order, and
//! the moves between them: wake-up, stealing, the hand-off after a switch), `protocol`
//! (the pure decisions on a task's state under its run-queue lock, model-checked),
//! `switch` (the switch itself, yield, migration, the idle loop), `lifecycle` (spawn,
//! a task's start and end, join), `wait` (wait queues and blocking), `sleep` (sleeping
//! and the timer's side), `queue` (the pure priority queue), `stack` (stacks and the
//! stack switch), `dump` (the state of every task and CPU for a hung system, taking no
//! lock it would wait for); this file is the public API.

pub mod balance;
mod dump;
mod lifecycle;
mod protocol;
mod queue;
mod runq;
mod sleep;
mod stack;
pub mod stack_check;
mod switch;
mod task;
mod timerq;
mod wait;

use core::sync::atomic::Ordering::Relaxed;

pub use dump::dump;
pub use lifecycle::{JoinHandle, spawn, try_spawn};
pub use queue::{Priority, RunQueue};
use runq as rq;
pub(crate) use sleep::{NextEvent, next_event, on_timer};
pub use sleep::{sleep_ns, sleep_until};
pub use stack::{OutOfMemory, Stack};
pub(crate) use switch::idle_loop;
pub use switch::{migrate_to, schedule, yield_now};
pub use task::TaskId;
use task::{IDLE, MAIN, State, Task, TaskRef};
pub use wait::{WaitQueue, block_on_unless, block_on_until_unless};

use crate::irqflags::{IrqGuard, IrqsOff};
use crate::percpu::{self, CpuId, MAX_CPUS, PerCpu};

/// Bytes of a task's stack.
pub const TASK_STACK_SIZE: usize = 64 * 1024;

/// Context switches so far, all CPUs.
pub fn switches() -> u64 {
    (0..MAX_CPUS as CpuId)
        .filter_map(percpu::cpu)
        .map(|c| c.task_switches.load(Relaxed))
        .sum()
}

/// Tasks a CPU took from another CPU's run queue so far (work stealing).
pub fn steals() -> u64 {
    rq::STEALS.iter().map(|s| s.load(Relaxed)).sum()
}

/// Switches into a task on another CPU than the one it ran on last, so far.
pub fn migrations() -> u64 {
    rq::MIGRATIONS.iter().map(|s| s.load(Relaxed)).sum()
}

/// Creates the scheduler: the boot context becomes task `main`; an idle task is made.
pub(crate) fn init() {
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    let me = PerCpu::get(&irqs_off).id();
    let (idle, main) = task::with_table(&irqs_off, |tab| {
        let mut idle = Task::new(IDLE, "idle", Priority::Low, State::Ready, me)
            .with_stack(switch::idle_stack());
        idle.is_idle = true;
        let idle = tab.insert(idle);
        let main = tab.insert(Task::new(
            MAIN,
            "main",
            Priority::Normal,
            State::Running,
            me,
        ));
        tab.next_id = 2;
        (idle, main)
    });
    let mut rq = rq::RQ[me as usize].lock();
    rq.cpu = me as usize;
    rq.current = Some(main);
    rq.idle = Some(idle);
    rq.switched(true, main.get());
    drop(rq);
    drop(guard);
}

/// Registers the running context of an application processor as its idle task.
///
/// Context: the AP, irqs off, per-CPU base set, once, before it goes online.
pub(crate) fn init_secondary(irqs_off: &IrqsOff<'_>) {
    let cpu = PerCpu::get(irqs_off).id();
    let idle = task::with_table(irqs_off, |tab| {
        let mut t = Task::new(tab.next_id(), "idle", Priority::Low, State::Running, cpu);
        t.is_idle = true;
        tab.insert(t)
    });
    let mut rq = rq::RQ[cpu as usize].lock();
    rq.cpu = cpu as usize;
    rq.current = Some(idle);
    rq.idle = Some(idle);
    rq.switched(false, idle.get());
    rq::NCPUS.fetch_max(cpu as usize + 1, Relaxed);
}

/// This CPU's running task.
fn current_ref(irqs_off: &IrqsOff<'_>) -> TaskRef {
    rq::RQ[PerCpu::get(irqs_off).id() as usize]
        .lock()
        .current
        .expect("CPU registered")
}

/// The running task's id.
pub fn current() -> TaskId {
    let g = IrqGuard::new();
    TaskId(rq::CURRENT_ID[PerCpu::get(&g).id() as usize].load(Relaxed))
}

/// The running task's name.
pub fn current_name() -> &'static str {
    let g = IrqGuard::new();
    current_ref(&g.token()).get().name
}

/// The address of the running task's stack guard page (`None` for a stack without
/// one, such as the boot context's).
pub fn current_stack_guard() -> Option<u64> {
    let g = IrqGuard::new();
    current_ref(&g.token()).get().guard_page
}

/// The CPU that ran task `id` last (`None` if it is gone).
pub fn last_cpu(id: TaskId) -> Option<CpuId> {
    let g = IrqGuard::new();
    task::with_table(&g.token(), |tab| {
        tab.get(id).map(|t| t.get().last_cpu.load(Relaxed))
    })
}
