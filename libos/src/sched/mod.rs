//! The scheduler: tasks with their own stacks, priorities, sleep, yield, join, wait
//! queues, and preemption according to the model in force.
//!
//! SMP: each CPU has its own run queue, current task and idle task. A task that becomes
//! ready is queued on an idle CPU, on the CPU running the lowest priority below its
//! own (either is kicked), or else on the CPU it ran on last; a CPU runs the best task
//! of all queues, its own first at equal priority, and steals from another queue when
//! that one is longer by a margin or its own is empty ([`balance`] holds the policy as
//! pure functions). All scheduler state, the queues included, sits behind `SCHED`, a
//! spin lock taken only with irqs off (the functions demand an [`IrqsOff`] token), so
//! interrupt handlers and tasks never deadlock on it, on one CPU or many (one lock for
//! all queues: a CPU's pick compares every queue under it; a lock per queue is the
//! next step when CPUs outnumber the two of the test beds). `schedule()` drops the lock before
//! switching stacks, so a task it queued could be picked by another CPU before this one
//! has left the task's stack: each task's `on_cpu` flag (Linux's `p->on_cpu`, changed
//! only under the lock) says a CPU still stands on its stack, and `schedule` never
//! picks such a task (no CPU ever waits for another, so no cycle of waits). The CPU
//! clears it right after its switch, when the task's saved stack pointer and
//! in-preemptible flag are final, and places it again if it is ready (a CPU that skipped
//! it may have gone idle). Kicks are reschedule IPIs.

pub mod balance;
mod dump;
mod lifecycle;
mod queue;
mod runq;
mod sleep;
mod stack;
pub mod stack_check;
mod wait;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use balance::{CpuView, QueueView};
pub use dump::dump;
pub use lifecycle::{JoinHandle, spawn, try_spawn};
pub use queue::{Priority, RunQueue};
pub(crate) use sleep::{NextEvent, next_event, on_timer};
pub use sleep::{sleep_ns, sleep_until};
pub use stack::{OutOfMemory, Stack};
pub use wait::{WaitQueue, block_on_unless, block_on_until_unless};

use crate::irqflags::{self, IrqGuard, IrqsOff};
use crate::percpu::{self, CpuId, MAX_CPUS, PerCpu, this_cpu};

/// Bytes of a task's stack.
pub const TASK_STACK_SIZE: usize = 64 * 1024;

/// A task's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

/// The boot CPU's idle task (runs when nothing else is ready; never queued). Other CPUs'
/// idle tasks are their boot contexts, registered by [`init_secondary`].
const IDLE: TaskId = TaskId(0);
/// The boot context, which runs the application's `main`.
const MAIN: TaskId = TaskId(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Ready,
    Blocked,
    Dead,
}

struct Task {
    name: &'static str,
    prio: Priority,
    state: State,
    /// Saved stack pointer while not running.
    sp: u64,
    /// `None` for the boot context, which runs on the boot stack.
    stack: Option<Stack>,
    entry: Option<Box<dyn FnOnce() + Send>>,
    /// Tasks blocked in `join` on this one.
    joiners: Vec<TaskId>,
    /// Dropped JoinHandle: free everything once dead.
    detached: bool,
    /// The per-CPU in-preemptible flag while this task is switched out: saved by the
    /// CPU switching away from it, loaded by the CPU switching to it (Per Bilse, "Re:
    /// [PATCH] Updates to Xen hypercall preemption", LKML / xen-devel, 2023-06-21). Under
    /// the lock, and final by the time the task can be picked (`on_cpu` clear).
    in_preemptible: bool,
    /// A CPU still runs on this task's stack: set by the CPU switching to it, cleared
    /// by that CPU once it has switched away (both under the lock, which orders the
    /// saved stack pointer before the next CPU's pick). The task is not picked, and its
    /// memory not freed, while set.
    on_cpu: bool,
    /// Whether this is a CPU's idle task (never queued).
    is_idle: bool,
    /// The CPU that ran it last (placement prefers it, and statistics).
    last_cpu: CpuId,
    /// The CPU whose run queue holds it (`Some` exactly while it is queued).
    queued_on: Option<CpuId>,
}

impl Task {
    fn new(
        name: &'static str,
        prio: Priority,
        state: State,
        sp: u64,
        stack: Option<Stack>,
    ) -> Task {
        Task {
            name,
            prio,
            state,
            sp,
            stack,
            entry: None,
            joiners: Vec::new(),
            detached: false,
            in_preemptible: false,
            on_cpu: state == State::Running,
            is_idle: false,
            last_cpu: 0,
            queued_on: None,
        }
    }
}

struct Scheduler {
    tasks: BTreeMap<TaskId, Box<Task>>,
    /// Each CPU's run queue (ready tasks only; see [`Task::queued_on`]).
    ready: [RunQueue<TaskId>; MAX_CPUS],
    /// (deadline ns, sequence) → sleeping task.
    sleepers: BTreeMap<(u64, u64), TaskId>,
    /// Each CPU's running task (meaningful for online CPUs).
    current: [TaskId; MAX_CPUS],
    /// Each CPU's idle task.
    idle: [TaskId; MAX_CPUS],
    /// CPUs registered (the boot CPU and every AP that called [`init_secondary`]):
    /// 1 + the highest id, as ids are given out in order. Queues and CPUs beyond are
    /// never looked at.
    cpus: usize,
    next_id: u64,
    sleep_seq: u64,
    /// Dead tasks whose stacks are freed by the next task to run.
    zombies: VecDeque<TaskId>,
}

static SCHED: spinning_top::Spinlock<Option<Scheduler>> = spinning_top::Spinlock::new(None);
static SWITCHES: AtomicU64 = AtomicU64::new(0);
static STEALS: AtomicU64 = AtomicU64::new(0);
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);

fn with<R>(_: &IrqsOff<'_>, f: impl FnOnce(&mut Scheduler) -> R) -> R {
    let mut guard = SCHED.lock();
    f(guard.as_mut().expect("scheduler used before sched::init"))
}

/// Context switches so far.
pub fn switches() -> u64 {
    SWITCHES.load(Relaxed)
}

/// Tasks a CPU took from another CPU's run queue so far (work stealing).
pub fn steals() -> u64 {
    STEALS.load(Relaxed)
}

/// Switches into a task on another CPU than the one it ran on last, so far.
pub fn migrations() -> u64 {
    MIGRATIONS.load(Relaxed)
}

/// Creates the scheduler: the boot context becomes task `main`; an idle task is made.
pub(crate) fn init() {
    let guard = IrqGuard::new();
    let idle_stack = Stack::new(16 * 1024);
    let idle_sp = stack::initial_frame(&idle_stack, IDLE.0);
    let mut tasks = BTreeMap::new();
    let mut idle = Task::new(
        "idle",
        Priority::Low,
        State::Ready,
        idle_sp,
        Some(idle_stack),
    );
    idle.is_idle = true;
    tasks.insert(IDLE, Box::new(idle));
    tasks.insert(
        MAIN,
        Box::new(Task::new("main", Priority::Normal, State::Running, 0, None)),
    );
    *SCHED.lock() = Some(Scheduler {
        tasks,
        ready: [const { RunQueue::new() }; MAX_CPUS],
        sleepers: BTreeMap::new(),
        current: [MAIN; MAX_CPUS],
        idle: [IDLE; MAX_CPUS],
        cpus: 1,
        next_id: 2,
        sleep_seq: 0,
        zombies: VecDeque::new(),
    });
    drop(guard);
}

/// Registers the running context of an application processor as its idle task.
///
/// Context: the AP, irqs off, per-CPU base set, once, before it goes online.
pub(crate) fn init_secondary(irqs_off: &IrqsOff<'_>) {
    let cpu = PerCpu::get(irqs_off).id() as usize;
    with(irqs_off, |s| {
        let id = TaskId(s.next_id);
        s.next_id += 1;
        let mut t = Task::new("idle", Priority::Low, State::Running, 0, None);
        t.is_idle = true;
        t.last_cpu = cpu as CpuId;
        s.tasks.insert(id, Box::new(t));
        s.current[cpu] = id;
        s.idle[cpu] = id;
        s.cpus = s.cpus.max(cpu + 1);
    });
}

/// The running task's id.
pub fn current() -> TaskId {
    let g = IrqGuard::new();
    with(&g.token(), |s| s.cur())
}

/// The running task's name.
pub fn current_name() -> &'static str {
    let g = IrqGuard::new();
    with(&g.token(), |s| s.tasks[&s.cur()].name)
}

/// The address of the running task's stack guard page (`None` for a stack without
/// one, such as the boot context's).
pub fn current_stack_guard() -> Option<u64> {
    let g = IrqGuard::new();
    with(&g.token(), |s| {
        s.tasks[&s.cur()]
            .stack
            .as_ref()
            .filter(|st| st.guarded())
            .map(|st| st.bottom() - stack::PAGE as u64)
    })
}

/// The CPU that ran task `id` last (`None` if it is gone).
pub fn last_cpu(id: TaskId) -> Option<CpuId> {
    let g = IrqGuard::new();
    with(&g.token(), |s| s.tasks.get(&id).map(|t| t.last_cpu))
}

/// Makes `id` ready: queues it where [`balance::place`] says, kicking that CPU if it
/// should run it now. Returns true if it now waits in this CPU's queue without a kick:
/// it competes with the running task for a time slice, so the caller must see that the
/// tick runs ([`wake_tasks`]).
fn make_ready(s: &mut Scheduler, id: TaskId) -> bool {
    let Some(t) = s.tasks.get_mut(&id) else {
        return false;
    };
    if t.state != State::Blocked {
        return false;
    }
    t.state = State::Ready;
    s.place(id)
}

/// Wakes tasks `ids` (blocked ones become ready) and, if one of them now competes with
/// the running task on this CPU, starts the time-slice tick: an idle-tickless CPU would
/// otherwise let the running task keep the CPU until it blocks (Linux starts the tick
/// when a wake-up gives the running task competition). A task worth running at once was
/// kicked instead; under `full` the caller's irq-guard release then preempts.
///
/// Context: irqs off; takes the scheduler lock.
fn wake_tasks(irqs_off: &IrqsOff<'_>, ids: impl IntoIterator<Item = TaskId>) {
    let compete = with(irqs_off, |s| {
        ids.into_iter().fold(false, |c, id| make_ready(s, id) | c)
    });
    if compete {
        crate::time::start_tick(irqs_off);
    }
}

/// Picks the next task and switches to it. Returns when this task runs again (on
/// whichever CPU).
///
/// Context: irqs off, preemptible (preemption count 0, not on the irq stack); any
/// model (the callers decide whether a reschedule is allowed).
pub fn schedule(irqs_off: &IrqsOff<'_>) {
    irqflags::assert_irqs_disabled();
    let cpu = PerCpu::get(irqs_off);
    // Linux's `in_atomic()` check. From a handler or bottom half the switch would leave
    // the irq stack with the nesting count still raised: every later entry on this CPU
    // would then count as nested (no stack switch, no exit work, no preemption).
    let nesting = cpu.irq_nesting.load(Relaxed);
    assert!(
        nesting == 0,
        "BUG: scheduling from interrupt context (in an interrupt handler or bottom half, irq nesting {nesting})"
    );
    // (`assert!`, not `assert_eq!`: the latter links `Debug` formatting into every image.)
    let count = cpu.preempt_count.load(Relaxed);
    assert!(
        count == 0,
        "BUG: scheduling while atomic (preempt count {count})"
    );
    let me = cpu.id() as usize;
    stack_check::check(me, crate::arch::stack_pointer());
    let switch = with(irqs_off, |s| {
        cpu.need_resched.store(false, Relaxed);
        let prev = s.current[me];
        let prev_task = s.tasks.get_mut(&prev).expect("current task exists");
        // (A task woken between blocking and this call is Ready and queued already.)
        if prev_task.state == State::Running && !prev_task.is_idle {
            prev_task.state = State::Ready;
            s.enqueue(prev, me as CpuId);
        }
        let next = match balance::source(me, &s.views(prev)[..s.cpus]) {
            Some(from) => {
                let next = s.pop_runnable(from, prev);
                if from != me {
                    STEALS.fetch_add(1, Relaxed);
                }
                next
            }
            None => s.idle[me],
        };
        if next == prev {
            s.tasks.get_mut(&prev).expect("exists").state = State::Running;
            return None;
        }
        // The in-preemptible flag is the task's, not the CPU's (see
        // `Task::in_preemptible`): park it with the task, load the next task's, on
        // whichever CPU each of them ran before.
        // (`hcall_resched=cpuflag` skips both to reproduce the bug for tests.)
        let follows_task = !crate::preempt::section_flag_stays_on_cpu();
        let prev_task = s.tasks.get_mut(&prev).expect("exists");
        if follows_task {
            prev_task.in_preemptible = cpu.in_preemptible.load(Relaxed);
        }
        let save: *mut u64 = &raw mut prev_task.sp;
        let next_task = s.tasks.get_mut(&next).expect("queued task exists");
        next_task.state = State::Running;
        if next_task.last_cpu != me as CpuId && !next_task.is_idle {
            MIGRATIONS.fetch_add(1, Relaxed);
        }
        next_task.last_cpu = me as CpuId;
        next_task.on_cpu = true;
        if follows_task {
            cpu.in_preemptible.store(next_task.in_preemptible, Relaxed);
        }
        let next_sp = next_task.sp;
        stack_check::set_current(me, next.0, next_task.stack.as_ref().map(Stack::bottom));
        s.current[me] = next;
        SWITCHED_FROM[me].store(prev.0 + 1, Relaxed);
        Some((save, next_sp))
    });
    if let Some((save, next_sp)) = switch {
        SWITCHES.fetch_add(1, Relaxed);
        cpu.task_switches.fetch_add(1, Relaxed);
        // SAFETY: irqs are off; `save` points into the boxed prev Task, which is not
        // freed while its `on_cpu` is set (cleared under the lock by `finish_switch`
        // after this switch); `next_sp` was saved by the switch away from `next`, which
        // completed before that CPU cleared `on_cpu` under the lock we then took (or
        // built by `initial_frame`), and no other CPU enters `next` while we are on it.
        unsafe { stack::switch_stack(save, next_sp) };
        finish_switch(irqs_off);
    }
}

/// Per CPU: 1 + the id of the task that CPU is switching away from (0 = none). Written
/// by `schedule` under the lock just before the stack switch, taken by `finish_switch`
/// on the same CPU right after it.
static SWITCHED_FROM: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Runs in the task that was just switched to: lets go of the previous task (its
/// `on_cpu`; if it is ready, another CPU may take it now: [`Scheduler::offer`]), then
/// frees the stacks of dead tasks no CPU stands on.
fn finish_switch(irqs_off: &IrqsOff<'_>) {
    let me = PerCpu::get(irqs_off).id() as usize;
    let prev = SWITCHED_FROM[me].swap(0, Relaxed);
    let mut left_idle = false;
    let dead: Vec<Box<Task>> = with(irqs_off, |s| {
        if let Some(t) = prev
            .checked_sub(1)
            .and_then(|id| s.tasks.get_mut(&TaskId(id)))
        {
            // Under the lock: the stack switch away from it is complete, and whoever
            // takes the lock next sees its final saved state.
            t.on_cpu = false;
            left_idle = t.is_idle;
            if t.state == State::Ready {
                s.offer(TaskId(prev - 1));
            }
        }
        let mut freed = Vec::new();
        for _ in 0..s.zombies.len() {
            let Some(id) = s.zombies.pop_front() else {
                break;
            };
            let t = s.tasks.get_mut(&id).expect("zombie exists");
            if t.on_cpu {
                // Another CPU is still leaving this stack: later.
                s.zombies.push_back(id);
                continue;
            }
            if t.detached {
                freed.push(s.tasks.remove(&id).expect("exists"));
            } else if let Some(stack) = t.stack.take() {
                let mut husk = Task::new(t.name, t.prio, State::Dead, 0, Some(stack));
                husk.detached = true;
                freed.push(Box::new(husk));
            }
        }
        freed
    });
    // Dropped outside the lock (frees heap memory and re-maps guard pages).
    drop(dead);
    if left_idle {
        // The timer was armed for an idle CPU (the next sleeper at most): start the
        // tick if the task now running wants it (`NextEvent::tick`).
        crate::time::program_next_event(irqs_off);
    }
}

/// The idle task (every CPU's): halts until an interrupt whenever nothing is ready.
pub(crate) fn idle_loop() -> ! {
    // SAFETY: idle starts from `schedule` with irqs off and keeps them off except
    // inside `idle_wait`, which returns with them off again.
    let irqs_off = unsafe { IrqsOff::assume() };
    let platform = crate::console::platform().expect("platform registered");
    loop {
        let nothing_ready = with(&irqs_off, |s| s.ready.iter().all(RunQueue::is_empty));
        let work = crate::softirq::pending() || crate::notify::pending();
        if nothing_ready && !percpu::need_resched() && !work {
            crate::time::program_next_event(&irqs_off);
            this_cpu().in_idle.store(true, Relaxed);
            irqflags::trace_hardirqs_on();
            platform.idle_wait();
            irqflags::trace_hardirqs_off();
            this_cpu().in_idle.store(false, Relaxed);
        }
        if crate::softirq::pending() {
            crate::entry::do_softirq();
        }
        if crate::notify::pending() {
            // Raised by an interrupt that hit idle: its exit leaves them to idle, which
            // runs them now rather than at some later, unrelated interrupt's exit.
            irqflags::local_irq_enable();
            crate::notify::run_pending();
            irqflags::local_irq_disable();
        }
        schedule(&irqs_off);
    }
}

/// Gives up the CPU to other ready tasks (of any priority ≥ Low).
pub fn yield_now() {
    let guard = IrqGuard::new();
    schedule(&guard.token());
}

/// Moves the running task to CPU `cpu`'s run queue, kicks that CPU and gives up this
/// one: the task runs next on `cpu`, unless work stealing takes it elsewhere first.
/// Returns false (and does nothing) if `cpu` is this CPU or not online. For stress
/// tests that force migrations; placement and stealing move tasks on their own.
pub fn migrate_to(cpu: CpuId) -> bool {
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    let me = PerCpu::get(&irqs_off).id();
    if cpu == me || !percpu::cpu(cpu).is_some_and(PerCpu::is_online) {
        return false;
    }
    with(&irqs_off, |s| {
        let id = s.cur();
        s.tasks.get_mut(&id).expect("current exists").state = State::Ready;
        s.enqueue(id, cpu);
        crate::smp::kick(cpu);
    });
    // `schedule` finds this task queued elsewhere, not runnable from here (this CPU
    // stands on it), and switches away; `finish_switch` kicks `cpu` again in case it
    // looked in between.
    schedule(&irqs_off);
    true
}
