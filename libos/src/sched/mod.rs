//! The scheduler: tasks with their own stacks, priorities, sleep, yield, join, wait
//! queues, and preemption according to the model in force.
//!
//! SMP, first step: one run queue shared by all CPUs. All scheduler state sits behind
//! [`SCHED`], a spin lock taken only with irqs off (the functions demand an [`IrqsOff`]
//! token), so interrupt handlers and tasks never deadlock on it, on one CPU or many.
//! Each CPU has its own current task and idle task. `schedule()` drops the lock before
//! switching stacks, so a task it queued could be picked by another CPU before this one
//! has left the task's stack: each task's `on_cpu` flag (Linux's `p->on_cpu`, changed
//! only under the lock) says a CPU still stands on its stack, and `schedule` never
//! picks such a task (no CPU ever waits for another, so no cycle of waits). The CPU
//! clears it right after its switch, when the task's saved stack pointer and
//! in-preemptible flag are final, and kicks a CPU for it if it is ready. Wake-ups kick
//! an idle CPU, or one running a lower-priority task, with a reschedule IPI.

mod queue;
mod stack;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use queue::{Priority, RunQueue};
pub use stack::Stack;

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
    /// CPU switching away from it, loaded by the CPU switching to it (seed 001). Under
    /// the lock, and final by the time the task can be picked (`on_cpu` clear).
    in_preemptible: bool,
    /// A CPU still runs on this task's stack: set by the CPU switching to it, cleared
    /// by that CPU once it has switched away (both under the lock, which orders the
    /// saved stack pointer before the next CPU's pick). The task is not picked, and its
    /// memory not freed, while set.
    on_cpu: bool,
    /// Whether this is a CPU's idle task (never queued).
    is_idle: bool,
    /// The CPU that ran it last (statistics and tests).
    last_cpu: CpuId,
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
        }
    }
}

struct Scheduler {
    tasks: BTreeMap<TaskId, Box<Task>>,
    ready: RunQueue<TaskId>,
    /// (deadline ns, sequence) → sleeping task.
    sleepers: BTreeMap<(u64, u64), TaskId>,
    /// Each CPU's running task (meaningful for online CPUs).
    current: [TaskId; MAX_CPUS],
    /// Each CPU's idle task.
    idle: [TaskId; MAX_CPUS],
    next_id: u64,
    sleep_seq: u64,
    /// Dead tasks whose stacks are freed by the next task to run.
    zombies: VecDeque<TaskId>,
}

static SCHED: spinning_top::Spinlock<Option<Scheduler>> = spinning_top::Spinlock::new(None);
static SWITCHES: AtomicU64 = AtomicU64::new(0);

fn with<R>(_: &IrqsOff, f: impl FnOnce(&mut Scheduler) -> R) -> R {
    let mut guard = SCHED.lock();
    f(guard.as_mut().expect("scheduler used before sched::init"))
}

/// Context switches so far.
pub fn switches() -> u64 {
    SWITCHES.load(Relaxed)
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
        ready: RunQueue::new(),
        sleepers: BTreeMap::new(),
        current: [MAIN; MAX_CPUS],
        idle: [IDLE; MAX_CPUS],
        next_id: 2,
        sleep_seq: 0,
        zombies: VecDeque::new(),
    });
    drop(guard);
}

/// Registers the running context of an application processor as its idle task.
///
/// Context: the AP, irqs off, per-CPU base set, once, before it goes online.
pub(crate) fn init_secondary(irqs_off: &IrqsOff) {
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

/// The CPU that ran task `id` last (`None` if it is gone).
pub fn last_cpu(id: TaskId) -> Option<CpuId> {
    let g = IrqGuard::new();
    with(&g.token(), |s| s.tasks.get(&id).map(|t| t.last_cpu))
}

/// Makes `id` ready; kicks a CPU if it should run it now (see [`Scheduler::kick_for`]).
fn make_ready(s: &mut Scheduler, id: TaskId) {
    let Some(t) = s.tasks.get_mut(&id) else {
        return;
    };
    if t.state != State::Blocked {
        return;
    }
    t.state = State::Ready;
    let prio = t.prio;
    s.ready.push(id, prio);
    s.kick_for(prio);
}

/// Picks the next task and switches to it. Returns when this task runs again (on
/// whichever CPU).
///
/// Context: irqs off, preemptible (preemption count 0, not on the irq stack); any
/// model (the callers decide whether a reschedule is allowed).
pub fn schedule(irqs_off: &IrqsOff) {
    irqflags::assert_irqs_disabled();
    let cpu = PerCpu::get(irqs_off);
    assert_eq!(
        cpu.preempt_count.load(Relaxed),
        0,
        "BUG: scheduling while atomic"
    );
    let me = cpu.id() as usize;
    let switch = with(irqs_off, |s| {
        cpu.need_resched.store(false, Relaxed);
        let prev = s.current[me];
        let prev_task = s.tasks.get_mut(&prev).expect("current task exists");
        // (A task woken between blocking and this call is Ready and queued already.)
        if prev_task.state == State::Running && !prev_task.is_idle {
            prev_task.state = State::Ready;
            let prio = prev_task.prio;
            s.ready.push(prev, prio);
        }
        // Only a task no CPU stands on may be entered: its saved stack pointer and flag
        // are final then. `prev` is the exception: the CPU on it is this one. (A woken
        // task still leaving another CPU stays queued; that CPU kicks someone for it
        // once it is off its stack, in `finish_switch`.)
        let Scheduler { ready, tasks, .. } = &mut *s;
        let next = ready
            .pop_where(|t| *t == prev || !tasks[t].on_cpu)
            .unwrap_or(s.idle[me]);
        if next == prev {
            s.tasks.get_mut(&prev).expect("exists").state = State::Running;
            return None;
        }
        // The in-preemptible flag is the task's, not the CPU's (seed 001): park it with
        // the task, load the next task's, on whichever CPU each of them ran before.
        // (`hcall_resched=cpuflag` skips both to reproduce the bug for tests.)
        let follows_task = !crate::preempt::section_flag_stays_on_cpu();
        let prev_task = s.tasks.get_mut(&prev).expect("exists");
        if follows_task {
            prev_task.in_preemptible = cpu.in_preemptible.load(Relaxed);
        }
        let save: *mut u64 = &raw mut prev_task.sp;
        let next_task = s.tasks.get_mut(&next).expect("queued task exists");
        next_task.state = State::Running;
        next_task.last_cpu = me as CpuId;
        next_task.on_cpu = true;
        if follows_task {
            cpu.in_preemptible.store(next_task.in_preemptible, Relaxed);
        }
        let next_sp = next_task.sp;
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
/// `on_cpu`; if it is ready, another CPU may take it now, so kick one), then frees the
/// stacks of dead tasks no CPU stands on.
fn finish_switch(irqs_off: &IrqsOff) {
    let me = PerCpu::get(irqs_off).id() as usize;
    let prev = SWITCHED_FROM[me].swap(0, Relaxed);
    let dead: Vec<Box<Task>> = with(irqs_off, |s| {
        if let Some(t) = prev
            .checked_sub(1)
            .and_then(|id| s.tasks.get_mut(&TaskId(id)))
        {
            // Under the lock: the stack switch away from it is complete, and whoever
            // takes the lock next sees its final saved state.
            t.on_cpu = false;
            if t.state == State::Ready {
                let prio = t.prio;
                s.kick_for(prio);
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
}

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
fn exit_current() -> ! {
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    with(&irqs_off, |s| {
        let id = s.cur();
        let t = s.tasks.get_mut(&id).expect("current exists");
        t.state = State::Dead;
        let joiners = core::mem::take(&mut t.joiners);
        s.zombies.push_back(id);
        for j in joiners {
            make_ready(s, j);
        }
    });
    schedule(&irqs_off);
    unreachable!("a dead task was scheduled again");
}

/// The idle task (every CPU's): halts until an interrupt whenever nothing is ready.
pub(crate) fn idle_loop() -> ! {
    // SAFETY: idle starts from `schedule` with irqs off and keeps them off except
    // inside `idle_wait`, which returns with them off again.
    let irqs_off = unsafe { IrqsOff::assume() };
    let platform = crate::console::platform().expect("platform registered");
    loop {
        let nothing_ready = with(&irqs_off, |s| s.ready.is_empty());
        if nothing_ready && !percpu::need_resched() && !crate::softirq::pending() {
            crate::time::program_next_event(&irqs_off);
            this_cpu().in_idle.store(true, Relaxed);
            irqflags::trace_hardirqs_on();
            platform.idle_wait();
            irqflags::trace_hardirqs_off();
            this_cpu().in_idle.store(false, Relaxed);
        }
        if crate::softirq::pending() {
            let mut scratch = crate::regs::Regs::default();
            crate::entry::run_on_irqstack_cond(softirq_on_irq_stack, &mut scratch);
        }
        schedule(&irqs_off);
    }
}

extern "C" fn softirq_on_irq_stack(_: &mut crate::regs::Regs) {
    crate::entry::do_softirq_on_irq_stack();
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
                }
            });
        }
    }
}

/// Starts `f` as a new task with priority `prio`.
pub fn spawn(name: &'static str, prio: Priority, f: impl FnOnce() + Send + 'static) -> JoinHandle {
    crate::time::ensure_init();
    let stack = Stack::new(TASK_STACK_SIZE);
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    let id = with(&irqs_off, |s| {
        let id = TaskId(s.next_id);
        s.next_id += 1;
        let sp = stack::initial_frame(&stack, id.0);
        let mut task = Task::new(name, prio, State::Blocked, sp, Some(stack));
        task.entry = Some(Box::new(f));
        s.tasks.insert(id, Box::new(task));
        make_ready(s, id);
        id
    });
    crate::time::program_next_event(&irqs_off);
    drop(guard);
    // A higher-priority task may preempt right away under full.
    drop(crate::preempt::preempt_disable());
    JoinHandle { id, joined: false }
}

/// Gives up the CPU to other ready tasks (of any priority ≥ Low).
pub fn yield_now() {
    let guard = IrqGuard::new();
    schedule(&guard.token());
}

/// Blocks the running task until `deadline_ns` (monotonic).
pub fn sleep_until(deadline_ns: u64) {
    crate::time::ensure_init();
    let guard = IrqGuard::new();
    let irqs_off = guard.token();
    if crate::time::now_ns() >= deadline_ns {
        return;
    }
    with(&irqs_off, |s| {
        let me = s.cur();
        s.sleep_seq += 1;
        let key = (deadline_ns, s.sleep_seq);
        s.sleepers.insert(key, me);
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
    });
    crate::time::program_next_event(&irqs_off);
    schedule(&irqs_off);
}

/// Blocks the running task for `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    sleep_until(crate::time::now_ns().saturating_add(ns));
}

/// Wakes sleepers whose deadline passed; asks for a reschedule when a ready task should
/// share the CPU with the running one (time slice). Returns (earliest remaining
/// deadline, whether the running task has competition).
pub(crate) fn on_timer(irqs_off: &IrqsOff, now: u64) -> (Option<u64>, bool) {
    with(irqs_off, |s| {
        while let Some((&key, &id)) = s.sleepers.first_key_value() {
            if key.0 > now {
                break;
            }
            s.sleepers.remove(&key);
            make_ready(s, id);
        }
        s.next_event()
    })
}

/// (earliest sleeper deadline, whether the running task has a ready task of equal or
/// higher priority beside it).
pub(crate) fn has_competition(irqs_off: &IrqsOff) -> (Option<u64>, bool) {
    with(irqs_off, |s| s.next_event())
}

impl Scheduler {
    /// This CPU's running task (called with irqs off, under the lock).
    fn cur(&self) -> TaskId {
        self.current[this_cpu().id() as usize]
    }

    /// A task of priority `prio` became ready: asks a CPU to pick it. First choice an
    /// idle CPU not already kicked (this one first), then the CPU running the
    /// lowest-priority task below `prio` (this one first); otherwise it waits for a
    /// time slice or a blocking task. Other CPUs get a reschedule IPI.
    fn kick_for(&self, prio: Priority) {
        let me = this_cpu().id();
        let online = (0..MAX_CPUS as CpuId)
            .filter_map(|c| percpu::cpu(c).filter(|p| p.is_online()).map(|p| (c, p)));
        let mut idle = None;
        let mut lowest: Option<(CpuId, Priority)> = None;
        for (c, area) in online {
            let task = &self.tasks[&self.current[c as usize]];
            let fresh = c == me || !area.need_resched.load(Relaxed);
            if task.is_idle {
                if fresh && (idle.is_none() || c == me) {
                    idle = Some(c);
                }
            } else if task.prio < prio
                && lowest.is_none_or(|(_, p)| task.prio < p || (task.prio == p && c == me))
            {
                lowest = Some((c, task.prio));
            }
        }
        if let Some(c) = idle.or(lowest.map(|l| l.0)) {
            crate::smp::kick(c);
        } else if percpu::online_cpus() == 0 {
            // Before the boot CPU is marked online (scheduler being set up).
            percpu::set_need_resched();
        }
    }

    /// (earliest sleeper deadline, whether this CPU's running task has competition).
    fn next_event(&self) -> (Option<u64>, bool) {
        let cur = &self.tasks[&self.cur()];
        let competition = self
            .ready
            .highest()
            .is_some_and(|p| cur.is_idle || p >= cur.prio);
        (
            self.sleepers.first_key_value().map(|(k, _)| k.0),
            competition,
        )
    }
}

/// Blocks the running task on `queue` (the caller re-checks its condition afterwards).
/// On SMP a waker on another CPU can fire between the caller's check and the
/// registration here; callers whose condition another CPU can change use
/// [`block_on_unless`].
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock.
pub fn block_on(irqs_off: &IrqsOff, queue: &WaitQueue) {
    block_on_unless(irqs_off, queue, || false);
}

/// Blocks the running task on `queue` unless `ready()`, checked *after* the task is
/// registered as a waiter, says the condition already holds (closing the window in
/// which a waker on another CPU found the queue empty: no lost wake-up). The caller
/// re-checks its condition afterwards either way.
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock;
/// `ready` may take short irq-safe locks.
pub fn block_on_unless(irqs_off: &IrqsOff, queue: &WaitQueue, ready: impl FnOnce() -> bool) {
    let me = with(irqs_off, |s| {
        let me = s.cur();
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
        me
    });
    queue.waiters.lock().push_back(me);
    if ready() {
        // Cancel. A waker may have taken us off the wait queue and queued us to run
        // meanwhile; no CPU can have picked us (we are on this one: `on_cpu`).
        queue.waiters.lock().retain(|&w| w != me);
        with(irqs_off, |s| {
            if s.tasks[&me].state == State::Ready {
                s.ready.remove(&me);
            }
            s.tasks.get_mut(&me).expect("current exists").state = State::Running;
        });
        return;
    }
    schedule(irqs_off);
}

/// Blocks the running task on `queue` until it is woken or `deadline_ns` (monotonic;
/// `time::NEVER` for no deadline) passes, whichever comes first, unless `ready()` holds
/// once the task is queued as a waiter (a waker on another CPU that found no waiter
/// before that has already made it true: no lost wake-up). The caller re-checks its
/// condition afterwards.
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock.
pub fn block_on_until_unless(
    irqs_off: &IrqsOff,
    queue: &WaitQueue,
    deadline_ns: u64,
    ready: impl FnOnce() -> bool,
) {
    let timed = deadline_ns != crate::time::NEVER;
    if timed {
        crate::time::ensure_init();
    }
    let (me, key) = with(irqs_off, |s| {
        let me = s.cur();
        s.sleep_seq += 1;
        let key = (deadline_ns, s.sleep_seq);
        if timed {
            s.sleepers.insert(key, me);
        }
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
        (me, key)
    });
    queue.waiters.lock().push_back(me);
    if ready() {
        // Cancel, as in `block_on_unless`.
        queue.waiters.lock().retain(|&w| w != me);
        with(irqs_off, |s| {
            s.sleepers.remove(&key);
            if s.tasks[&me].state == State::Ready {
                s.ready.remove(&me);
            }
            s.tasks.get_mut(&me).expect("current exists").state = State::Running;
        });
        return;
    }
    if timed {
        crate::time::program_next_event(irqs_off);
    }
    schedule(irqs_off);
    // Woken by one of the two: withdraw from the other (irqs still off, so it cannot
    // fire in between), or it would later wake this task out of an unrelated wait.
    with(irqs_off, |s| s.sleepers.remove(&key));
    queue.waiters.lock().retain(|&t| t != me);
}

/// Tasks waiting for something; see [`crate::sync`] for the primitives built on it.
#[derive(Debug, Default)]
pub struct WaitQueue {
    waiters: spinning_top::Spinlock<VecDeque<TaskId>>,
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        WaitQueue {
            waiters: spinning_top::Spinlock::new(VecDeque::new()),
        }
    }

    /// Wakes the longest waiter; returns whether there was one.
    pub fn wake_one(&self) -> bool {
        let guard = IrqGuard::new();
        let next = self.waiters.lock().pop_front();
        if let Some(id) = next {
            with(&guard.token(), |s| make_ready(s, id));
        }
        next.is_some()
    }

    /// Wakes every waiter.
    pub fn wake_all(&self) {
        let guard = IrqGuard::new();
        let all: Vec<TaskId> = self.waiters.lock().drain(..).collect();
        with(&guard.token(), |s| {
            all.into_iter().for_each(|id| make_ready(s, id))
        });
    }
}
