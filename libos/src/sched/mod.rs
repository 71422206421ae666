//! The scheduler: tasks with their own stacks, priorities, sleep, yield, join, wait
//! queues, and preemption according to the model in force.
//!
//! One CPU for now. All scheduler state sits behind [`SCHED`], a spin lock taken only
//! with irqs off (the functions demand an [`IrqsOff`] token), so interrupt handlers and
//! tasks never deadlock on it. `schedule()` drops the lock before switching stacks.

mod queue;
mod stack;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use queue::{Priority, RunQueue};
pub use stack::Stack;

use crate::irqflags::{self, IrqGuard, IrqsOff};
use crate::percpu::{self, this_cpu};

/// Bytes of a task's stack.
pub const TASK_STACK_SIZE: usize = 64 * 1024;

/// A task's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

/// The idle task (runs when nothing else is ready; never queued).
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
    /// The per-CPU in-preemptible flag while this task is switched out.
    in_preemptible: bool,
}

struct Scheduler {
    tasks: BTreeMap<TaskId, Box<Task>>,
    ready: RunQueue<TaskId>,
    /// (deadline ns, sequence) → sleeping task.
    sleepers: BTreeMap<(u64, u64), TaskId>,
    current: TaskId,
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
    let task = |name, prio, state, sp, stack| {
        Box::new(Task {
            name,
            prio,
            state,
            sp,
            stack,
            entry: None,
            joiners: Vec::new(),
            detached: false,
            in_preemptible: false,
        })
    };
    tasks.insert(
        IDLE,
        task(
            "idle",
            Priority::Low,
            State::Ready,
            idle_sp,
            Some(idle_stack),
        ),
    );
    tasks.insert(
        MAIN,
        task("main", Priority::Normal, State::Running, 0, None),
    );
    *SCHED.lock() = Some(Scheduler {
        tasks,
        ready: RunQueue::new(),
        sleepers: BTreeMap::new(),
        current: MAIN,
        next_id: 2,
        sleep_seq: 0,
        zombies: VecDeque::new(),
    });
    drop(guard);
}

/// The running task's id.
pub fn current() -> TaskId {
    let g = IrqGuard::new();
    with(&g.token(), |s| s.current)
}

/// The running task's name.
pub fn current_name() -> &'static str {
    let g = IrqGuard::new();
    with(&g.token(), |s| s.tasks[&s.current].name)
}

/// Makes `id` ready; asks for a reschedule if it outranks the running task.
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
    let cur = &s.tasks[&s.current];
    if s.current == IDLE || prio > cur.prio {
        percpu::set_need_resched();
    }
}

/// Picks the next task and switches to it. Returns when this task runs again.
///
/// Context: irqs off, preemptible (preemption count 0, not on the irq stack); any
/// model (the callers decide whether a reschedule is allowed).
pub fn schedule(irqs_off: &IrqsOff) {
    irqflags::assert_irqs_disabled();
    assert_eq!(
        this_cpu().preempt_count.load(Relaxed),
        0,
        "BUG: scheduling while atomic"
    );
    let switch = with(irqs_off, |s| {
        this_cpu().need_resched.store(false, Relaxed);
        let prev = s.current;
        let prev_task = s.tasks.get_mut(&prev).expect("current task exists");
        if prev_task.state == State::Running && prev != IDLE {
            prev_task.state = State::Ready;
            let prio = prev_task.prio;
            s.ready.push(prev, prio);
        }
        let next = s.ready.pop().unwrap_or(IDLE);
        if next == prev {
            s.tasks.get_mut(&prev).expect("exists").state = State::Running;
            return None;
        }
        // The in-preemptible flag is the task's, not the CPU's (seed 001): park it with
        // the task and load the next task's.
        let cpu = this_cpu();
        let prev_task = s.tasks.get_mut(&prev).expect("exists");
        prev_task.in_preemptible = cpu.in_preemptible.load(Relaxed);
        let save: *mut u64 = &raw mut prev_task.sp;
        let next_task = s.tasks.get_mut(&next).expect("queued task exists");
        cpu.in_preemptible.store(next_task.in_preemptible, Relaxed);
        next_task.state = State::Running;
        s.current = next;
        Some((save, next_task.sp))
    });
    if let Some((save, next_sp)) = switch {
        SWITCHES.fetch_add(1, Relaxed);
        // SAFETY: irqs are off; `save` points into a boxed Task that lives until it is
        // reaped, which only happens after it stopped running; `next_sp` was saved by a
        // switch or built by `initial_frame`, and its stack is owned by its task.
        unsafe { stack::switch_stack(save, next_sp) };
        finish_switch(irqs_off);
    }
}

/// Runs in the task that was just switched to: frees the stacks of dead tasks (never
/// the one we stand on).
fn finish_switch(irqs_off: &IrqsOff) {
    let dead: Vec<Box<Task>> = with(irqs_off, |s| {
        let mut freed = Vec::new();
        while let Some(id) = s.zombies.pop_front() {
            let t = s.tasks.get_mut(&id).expect("zombie exists");
            if t.detached {
                freed.push(s.tasks.remove(&id).expect("exists"));
            } else if let Some(stack) = t.stack.take() {
                freed.push(Box::new(Task {
                    name: t.name,
                    prio: t.prio,
                    state: State::Dead,
                    sp: 0,
                    stack: Some(stack),
                    entry: None,
                    joiners: Vec::new(),
                    detached: true,
                    in_preemptible: false,
                }));
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
        let id = s.current;
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

/// The idle task: halts until an interrupt whenever nothing is ready.
fn idle_loop() -> ! {
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
                let me = s.current;
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
        let task = Task {
            name,
            prio,
            state: State::Blocked,
            sp,
            stack: Some(stack),
            entry: Some(Box::new(f)),
            joiners: Vec::new(),
            detached: false,
            in_preemptible: false,
        };
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
        let me = s.current;
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
    /// (earliest sleeper deadline, whether the running task has competition).
    fn next_event(&self) -> (Option<u64>, bool) {
        let cur_prio = self.tasks[&self.current].prio;
        let competition = self
            .ready
            .highest()
            .is_some_and(|p| self.current == IDLE || p >= cur_prio);
        (
            self.sleepers.first_key_value().map(|(k, _)| k.0),
            competition,
        )
    }
}

/// Blocks the running task on `queue` (the caller re-checks its condition afterwards).
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock.
pub fn block_on(irqs_off: &IrqsOff, queue: &WaitQueue) {
    let me = with(irqs_off, |s| {
        let me = s.current;
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
        me
    });
    queue.waiters.lock().push_back(me);
    schedule(irqs_off);
}

/// Blocks the running task on `queue` until it is woken or `deadline_ns` (monotonic;
/// `time::NEVER` for no deadline) passes, whichever comes first. The caller re-checks its
/// condition afterwards.
///
/// Context: irqs off (via the caller's guard), the caller holds no other lock.
pub fn block_on_until(irqs_off: &IrqsOff, queue: &WaitQueue, deadline_ns: u64) {
    let timed = deadline_ns != crate::time::NEVER;
    if timed {
        crate::time::ensure_init();
    }
    let (me, key) = with(irqs_off, |s| {
        let me = s.current;
        s.sleep_seq += 1;
        let key = (deadline_ns, s.sleep_seq);
        if timed {
            s.sleepers.insert(key, me);
        }
        s.tasks.get_mut(&me).expect("current exists").state = State::Blocked;
        (me, key)
    });
    queue.waiters.lock().push_back(me);
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
