//! The task switch: pick the next task from this CPU's run queue, switch stacks, and
//! let go of the previous task; a new task's first steps, a task's end, and the idle
//! loop.
//!
//! `schedule` takes only this CPU's run-queue lock on the common path (a task of its own
//! to run, no balancing asked for) and drops it before switching stacks, so a task it
//! queued could be wanted by another CPU before this one has left the task's stack: the
//! task's `on_cpu` says a CPU still stands on it; stealers skip such a task, and a
//! waker waits for it to clear. The CPU clears it right after its switch
//! ([`super::runq::release`]), when the saved stack pointer and in-preemptible flag are
//! final, and hands a ready one to an idle CPU if there is one. Kicks are reschedule
//! IPIs.

use core::sync::atomic::Ordering::Relaxed;

use super::balance::{self, Pick};
use super::protocol::{PrevStep, prev_step};
use super::runq::{self as rq, RQ};
use super::sleep;
use super::stack::{self, Stack};
use super::stack_check;
use super::task::{self, State, TaskRef};
use crate::irqflags::{self, IrqGuard, IrqsOff};
use crate::percpu::CpuId;
use crate::percpu::{self, PerCpu, this_cpu};

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
    let mut rq = RQ[me].lock();
    cpu.need_resched.store(false, Relaxed);
    let prev = rq.current.expect("CPU registered");
    let p = prev.get();
    // Settle `prev` before this lock is dropped for anything (the steal below drops it):
    // still running (a yield or a preemption), back in this queue; blocked, dead, or
    // on its way to another CPU (`migrate_to`), off the run queue, so a waker from now
    // on waits until this CPU is off its stack and then queues it (`protocol`).
    match prev_step(p.state(), p.is_idle) {
        PrevStep::Requeue => {
            p.set_state(State::Ready);
            // (Published by the pick below.)
            rq.enqueue_unpublished(prev);
        }
        PrevStep::Deactivate => p.on_rq.store(false, Relaxed),
        PrevStep::Idle => {}
    }
    let balance = rq::BALANCE[me].load(Relaxed);
    if balance {
        rq::BALANCE[me].store(false, Relaxed);
    }
    let picked = match balance::pick(me, rq.view(), balance, rq::NCPUS.load(Relaxed), rq::summary) {
        Pick::Own => rq.pop(),
        Pick::Steal(from) => {
            rq.publish();
            drop(rq);
            let (mine, stolen) = rq::steal(me, from);
            rq = mine;
            // (Nothing to take there after all, every task on it still being on its
            // CPU: our own queue, which may have been given a task meanwhile.)
            let next = stolen.or_else(|| rq.pop());
            rq.publish();
            next
        }
        // (Our queue is empty, so `prev` was not queued: the summary is right.)
        Pick::Idle => None,
    };
    let next = picked.unwrap_or_else(|| rq.idle.expect("CPU registered"));
    if next == prev {
        p.set_state(State::Running);
        return;
    }
    // The in-preemptible flag is the task's, not the CPU's (see
    // `Task::in_preemptible`): park it with the task, load the next task's, on
    // whichever CPU each of them ran before.
    // (`hcall_resched=cpuflag` skips both to reproduce the bug for tests.)
    let follows_task = !crate::preempt::section_flag_stays_on_cpu();
    if follows_task {
        p.in_preemptible
            .store(cpu.in_preemptible.load(Relaxed), Relaxed);
    }
    let n = next.get();
    n.set_state(State::Running);
    if n.last_cpu.load(Relaxed) as usize != me && !n.is_idle {
        rq::bump(&rq::MIGRATIONS[me]);
    }
    n.last_cpu.store(me as u32, Relaxed);
    n.on_cpu.store(true, Relaxed);
    if follows_task {
        cpu.in_preemptible
            .store(n.in_preemptible.load(Relaxed), Relaxed);
    }
    stack_check::set_current(me, n.id.0, (n.stack_bottom != 0).then_some(n.stack_bottom));
    rq.current = Some(next);
    rq.switched(p.is_idle, n);
    rq::SWITCHED_FROM[me].store(core::ptr::from_ref(p).cast_mut(), Relaxed);
    let next_sp = n.sp.load(Relaxed);
    drop(rq);
    rq::bump(&cpu.task_switches);
    // SAFETY: irqs are off; `save` points into prev's Task, which is not freed while its
    // `on_cpu` is set (cleared by `finish_switch` after this switch); `next_sp` was
    // saved by the switch away from `next`, which completed before that CPU cleared
    // `on_cpu` (Release; we saw it clear, Acquire, before taking `next`, or we are that
    // CPU), or built by `initial_frame`, and no other CPU enters `next` while we are on
    // it (its `on_cpu` is set).
    unsafe { stack::switch_stack(p.sp.as_ptr(), next_sp) };
    finish_switch(irqs_off);
}

/// Runs in the task that was just switched to: lets go of the previous task, and frees
/// it if it ended.
pub(super) fn finish_switch(irqs_off: &IrqsOff<'_>) {
    let me = PerCpu::get(irqs_off).id() as usize;
    let prev = rq::SWITCHED_FROM[me].load(Relaxed);
    if prev.is_null() {
        return;
    }
    rq::SWITCHED_FROM[me].store(core::ptr::null_mut(), Relaxed);
    // SAFETY: `schedule` stored a live task there, which stays live until `release`
    // clears its `on_cpu` below (the last use of this reference).
    let prev = unsafe { TaskRef::from_ptr(prev) };
    let (id, left_idle) = (prev.get().id, prev.get().is_idle);
    if rq::release(me, prev) == State::Dead {
        // Dropped outside the lock (frees heap memory and re-maps guard pages).
        drop(task::with_table(irqs_off, |t| t.reap(id)));
    }
    if left_idle && sleep::leaving_idle_wants_tick(me, rq::running(me)) {
        // The timer was armed for an idle CPU (its next sleeper at most): start the
        // tick, which the task now running wants (`NextEvent::tick`).
        crate::time::start_tick(irqs_off);
    }
}

/// The idle task (every CPU's): halts until an interrupt whenever nothing is ready.
///
/// It calls the scheduler only when there is something to schedule (a kick, or a task
/// queued somewhere, which it may steal), as Linux's idle loop does: an interrupt that
/// only needed this CPU for its handler (a call-function IPI, a device) goes back to
/// halting at once. For the same reason it reprograms the timer only after a task ran:
/// an interrupt leaves the timer right (the timer's own re-arms it, only tasks on this
/// CPU add to its sleepers, and a test event's arming programs its own CPU).
pub(crate) fn idle_loop() -> ! {
    // SAFETY: idle starts from `schedule` with irqs off and keeps them off except
    // inside `idle_wait`, which returns with them off again.
    let irqs_off = unsafe { IrqsOff::assume() };
    let platform = crate::console::platform().expect("platform registered");
    let mut rearm = true;
    loop {
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
        if percpu::need_resched() || rq::anything_queued() {
            schedule(&irqs_off);
            rearm = true;
            continue;
        }
        if crate::softirq::pending() || crate::notify::pending() {
            // Raised while the work above ran with irqs on.
            continue;
        }
        // Nothing to do, seen with irqs off: halt until an interrupt.
        if rearm {
            crate::time::program_next_event(&irqs_off);
            rearm = false;
        }
        this_cpu().in_idle.store(true, Relaxed);
        irqflags::trace_hardirqs_on();
        platform.idle_wait();
        irqflags::trace_hardirqs_off();
        this_cpu().in_idle.store(false, Relaxed);
    }
}

/// Builds the stack for the boot CPU's idle task.
pub(super) fn idle_stack() -> Stack {
    Stack::new(16 * 1024)
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
    {
        let rq = RQ[me as usize].lock();
        let cur = rq.current.expect("CPU registered");
        let t = cur.get();
        t.migrate_to.store(cpu + 1, Relaxed);
        t.set_state(State::Ready);
    }
    // `schedule` leaves this task out of every queue and switches away; once off its
    // stack, this CPU queues it on `cpu` and kicks that CPU (`runq::release`).
    schedule(&irqs_off);
    true
}
