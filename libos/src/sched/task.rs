//! Tasks: what the scheduler keeps of each, which lock guards which field, and when a
//! task's memory is freed.
//!
//! A task lives in a heap box that the table ([`TASKS`]) owns; run queues, a CPU's
//! current task and the switch in progress refer to it by [`TaskRef`]. Its fields, by
//! what guards them:
//! - fixed at creation: id, name, priority, idle-ness, stack bottom and guard page;
//! - its *scheduling state* (`state`, `on_rq`, `queued`, `last_cpu`, `migrate_to`):
//!   written only under the run-queue lock of the CPU in its `cpu` field
//!   ([`super::runq`]); lock-free reads are snapshots, re-checked under the lock;
//! - `cpu`: changed only while both the old CPU's and the new CPU's run-queue locks are
//!   held, so "lock `RQ[t.cpu]`, then check `t.cpu` did not change" pins the task;
//! - `on_cpu`: set by the CPU switching to the task (under its lock), cleared without a
//!   lock by that CPU once it has switched away (Release: whoever sees it clear,
//!   Acquire, sees `sp` and `in_preemptible` final). While it is set no other CPU
//!   enters the task's stack, takes it from a queue, or frees it;
//! - `sp`, `in_preemptible`: written by the CPU switching away from the task while
//!   `on_cpu` is set, read by the CPU switching to it after seeing `on_cpu` clear (or
//!   by the same CPU);
//! - joiners and detached (in the table's [`Entry`]), `stack`, `entry`: under the table
//!   lock (`entry` is taken once by the task itself, under its own little lock);
//! - `sleep`: its place in a CPU's sleeper queue ([`super::sleep`]), under that queue's
//!   lock while it is in one; only the task itself enters it in one.
//!
//! Freed only when dead, off every CPU (`on_cpu` clear) and detached, under the table
//! lock; the table lock also covers every lookup by id, and a dead task is in no run
//! queue, no sleeper queue (a task leaves its sleeper queue before it returns from the
//! wait that entered it) and no CPU's current task, so no [`TaskRef`] outlives its
//! task.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed,
};

pub(super) use super::protocol::State;
use super::queue::Priority;
use super::stack::{self, Stack};
use crate::irqflags::IrqsOff;
use crate::percpu::CpuId;

/// A task's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

/// The boot CPU's idle task (runs when nothing else is ready; never queued). Other CPUs'
/// idle tasks are their boot contexts, registered by `init_secondary`.
pub(super) const IDLE: TaskId = TaskId(0);
/// The boot context, which runs the application's `main`.
pub(super) const MAIN: TaskId = TaskId(1);

pub(super) struct Task {
    pub id: TaskId,
    pub name: &'static str,
    pub prio: Priority,
    /// Whether this is a CPU's idle task (never queued).
    pub is_idle: bool,
    /// The lowest usable address of its stack (0: the boot stack, which we do not know)
    /// and its guard page's address if that is really inaccessible.
    pub stack_bottom: u64,
    pub guard_page: Option<u64>,
    /// The stack memory (`None` for a boot context). Taken when the task is freed (or
    /// early, for a dead task whose handle still lives); under the table lock.
    pub stack: spinning_top::Spinlock<Option<Stack>>,
    /// The function a new task runs; taken by the task itself when it starts.
    pub entry: spinning_top::Spinlock<Option<Box<dyn FnOnce() + Send>>>,
    /// A [`State`]; under the lock of `RQ[cpu]`.
    state: AtomicU8,
    /// The CPU whose run-queue lock guards this task's scheduling state, and whose
    /// queue holds it while queued (a running task's is the CPU it runs on).
    pub cpu: AtomicU32,
    /// In `RQ[cpu]`'s queue. Under that lock.
    pub queued: AtomicBool,
    /// Counted on `RQ[cpu]` (Linux's `p->on_rq`): queued there, or running there and
    /// not yet taken off by `schedule` (see [`super::protocol`]). Under that lock.
    pub on_rq: AtomicBool,
    /// The CPU that ran it last (placement prefers it, and statistics). Under the lock.
    pub last_cpu: AtomicU32,
    /// Saved stack pointer while not running (written by the switch, see the module
    /// doc for its ordering).
    pub sp: AtomicU64,
    /// The per-CPU in-preemptible flag while this task is switched out: saved by the
    /// CPU switching away from it, loaded by the CPU switching to it (Per Bilse, "Re:
    /// [PATCH] Updates to Xen hypercall preemption", LKML / xen-devel, 2023-06-21).
    pub in_preemptible: AtomicBool,
    /// A CPU still runs on this task's stack (see the module doc). The task is not
    /// taken by another CPU, and its memory not freed, while set.
    pub on_cpu: AtomicBool,
    /// 1 + the CPU `migrate_to` sends it to once it is off this one (0: none).
    pub migrate_to: AtomicU32,
    /// Its node in a sleeper queue.
    pub sleep: SleepNode,
}

/// A task's node in a CPU's sleeper queue ([`super::sleep`]): its key and its links
/// (intrusive, so sleeping never allocates). Under the lock of the queue of CPU
/// `cpu - 1` while `cpu` is not 0; the task itself sets the key before it enters.
#[derive(Default)]
pub(super) struct SleepNode {
    /// 1 + the CPU whose queue holds it (0: none). Set by the task as it enters,
    /// cleared by whoever takes it out, both under that queue's lock.
    pub cpu: AtomicU32,
    pub deadline: AtomicU64,
    /// Order among equal deadlines (the queue's count of entries).
    pub seq: AtomicU64,
    pub child: SleepLink,
    pub next: SleepLink,
    pub prev: SleepLink,
}

/// A link of the sleeper queue: null, or a task in the same queue.
#[derive(Default)]
pub(super) struct SleepLink(AtomicPtr<Task>);

impl SleepLink {
    /// Context: the lock of the queue holding the task whose link this is.
    pub fn get(&self) -> Option<TaskRef> {
        NonNull::new(self.0.load(Relaxed)).map(TaskRef)
    }

    /// Context: as for [`Self::get`].
    pub fn set(&self, to: Option<TaskRef>) {
        self.0
            .store(to.map_or(core::ptr::null_mut(), |t| t.0.as_ptr()), Relaxed);
    }
}

impl Task {
    pub fn new(id: TaskId, name: &'static str, prio: Priority, state: State, cpu: CpuId) -> Task {
        Task {
            id,
            name,
            prio,
            is_idle: false,
            stack_bottom: 0,
            guard_page: None,
            stack: spinning_top::Spinlock::new(None),
            entry: spinning_top::Spinlock::new(None),
            state: AtomicU8::new(state as u8),
            cpu: AtomicU32::new(cpu),
            queued: AtomicBool::new(false),
            on_rq: AtomicBool::new(state == State::Running),
            last_cpu: AtomicU32::new(cpu),
            sp: AtomicU64::new(0),
            in_preemptible: AtomicBool::new(false),
            on_cpu: AtomicBool::new(state == State::Running),
            migrate_to: AtomicU32::new(0),
            sleep: SleepNode::default(),
        }
    }

    /// Gives the task its stack and the first frame on it (it starts in
    /// `libos_task_start`).
    pub fn with_stack(mut self, stack: Stack) -> Task {
        self.sp
            .store(stack::initial_frame(&stack, self.id.0), Relaxed);
        self.stack_bottom = stack.bottom();
        self.guard_page = stack.guarded().then(|| stack.bottom() - stack::PAGE as u64);
        *self.stack.get_mut() = Some(stack);
        self
    }

    /// Its state (the caller holds the lock of `RQ[cpu]`, or reads a snapshot).
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Relaxed))
    }

    /// Sets its state (the caller holds the lock of `RQ[cpu]`).
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Relaxed);
    }
}

/// A reference to a live task (see the module doc for why it stays live).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct TaskRef(NonNull<Task>);

// SAFETY: a `Task` is `Sync` (atomics and locks), and a `TaskRef` is only a pointer to
// one that the lifetime rules of the module doc keep alive; any CPU may hold it.
unsafe impl Send for TaskRef {}

impl TaskRef {
    /// The reference to the task at `p`.
    ///
    /// # Safety
    /// `p` came from a live [`TaskRef`] and the task stays live while this one is used.
    pub unsafe fn from_ptr(p: *mut Task) -> TaskRef {
        TaskRef(NonNull::new(p).expect("a task pointer"))
    }

    pub fn get(&self) -> &Task {
        // SAFETY: a TaskRef exists only in the table, in a run queue, in a sleeper
        // queue's links, as a CPU's current or idle task, or as the task a CPU is
        // switching away from (or a timer waking it, holding the table lock); a task is
        // freed only when it is in none of these but the table, and the table drops
        // its own reference as it frees (module doc).
        unsafe { self.0.as_ref() }
    }
}

impl core::fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "task {}", self.get().id.0)
    }
}

/// One task's entry in the table.
pub(super) struct Entry {
    pub task: TaskRef,
    /// Tasks blocked in `join` on this one.
    pub joiners: Vec<TaskId>,
    /// Its `JoinHandle` is gone: free everything once dead.
    pub detached: bool,
}

/// Every task by id.
pub(super) struct Table {
    pub map: BTreeMap<TaskId, Entry>,
    pub next_id: u64,
}

impl Table {
    /// Boxes `task` and enters it; returns the reference the scheduler uses.
    pub fn insert(&mut self, task: Task) -> TaskRef {
        let id = task.id;
        let r = TaskRef(NonNull::from(Box::leak(Box::new(task))));
        self.map.insert(
            id,
            Entry {
                task: r,
                joiners: Vec::new(),
                detached: false,
            },
        );
        r
    }

    /// A fresh id.
    pub fn next_id(&mut self) -> TaskId {
        let id = TaskId(self.next_id);
        self.next_id += 1;
        id
    }

    pub fn get(&self, id: TaskId) -> Option<TaskRef> {
        self.map.get(&id).map(|e| e.task)
    }

    /// Frees what dead task `id` no longer needs, now that no CPU runs on its stack:
    /// everything if it is detached, else its stack (a husk stays for `join`). Returns
    /// what to drop outside the lock (heap frees and guard-page changes).
    pub fn reap(&mut self, id: TaskId) -> Reaped {
        let Some(e) = self.map.get(&id) else {
            return Reaped::default();
        };
        let t = e.task.get();
        if t.state() != State::Dead || t.on_cpu.load(core::sync::atomic::Ordering::Acquire) {
            return Reaped::default();
        }
        if e.detached {
            let e = self.map.remove(&id).expect("looked up");
            // SAFETY: the task is dead, off every CPU, in no run queue (dead tasks are
            // never queued), and its table entry, the last reference, is gone: the box
            // made in `insert` is freed once, here.
            let task = unsafe { Box::from_raw(e.task.0.as_ptr()) };
            Reaped {
                _task: Some(task),
                _stack: None,
            }
        } else {
            Reaped {
                _task: None,
                _stack: t.stack.lock().take(),
            }
        }
    }
}

/// What [`Table::reap`] took out, freed when this drops (once the lock is released).
#[derive(Default)]
pub(super) struct Reaped {
    _task: Option<Box<Task>>,
    _stack: Option<Stack>,
}

/// The task table. Taken with irqs off; before any run-queue lock.
pub(super) static TASKS: spinning_top::Spinlock<Table> = spinning_top::Spinlock::new(Table {
    map: BTreeMap::new(),
    next_id: 0,
});

/// Runs `f` on the table (irqs off: the token).
pub(super) fn with_table<R>(_: &IrqsOff<'_>, f: impl FnOnce(&mut Table) -> R) -> R {
    f(&mut TASKS.lock())
}
