//! The scheduler's run-queue operations under its lock: enqueue and dequeue, where a
//! ready task is placed, which task a CPU picks next, and what its timer must do.

use super::*;

impl Scheduler {
    /// This CPU's running task (called with irqs off, under the lock).
    pub(super) fn cur(&self) -> TaskId {
        self.current[this_cpu().id() as usize]
    }

    /// Puts ready task `id` at the back of CPU `cpu`'s run queue.
    pub(super) fn enqueue(&mut self, id: TaskId, cpu: CpuId) {
        let t = self.tasks.get_mut(&id).expect("queued task exists");
        debug_assert!(t.queued_on.is_none() && t.state == State::Ready);
        t.queued_on = Some(cpu);
        self.ready[cpu as usize].push(id, t.prio);
    }

    /// Takes `id` off whichever run queue holds it, if any.
    pub(super) fn dequeue(&mut self, id: TaskId) {
        if let Some(t) = self.tasks.get_mut(&id)
            && let Some(cpu) = t.queued_on.take()
        {
            self.ready[cpu as usize].remove(&id);
        }
    }

    /// Whether a CPU switching away from `prev` may enter queued task `t` now: only a
    /// task no CPU stands on (its saved stack pointer and flag are final then), or
    /// `prev` itself from this CPU's own queue (the CPU on it is this one). A woken task
    /// still leaving another CPU is skipped; that CPU places it again once it is off
    /// its stack, in `finish_switch`.
    pub(super) fn runnable(&self, prev: TaskId, t: TaskId) -> bool {
        let task = &self.tasks[&t];
        !task.on_cpu || (t == prev && task.queued_on == Some(this_cpu().id()))
    }

    /// What this CPU, switching away from `prev`, sees of every run queue.
    /// (Only the first [`Self::cpus`] entries are filled.)
    pub(super) fn views(&self, prev: TaskId) -> [Option<QueueView>; MAX_CPUS] {
        let mut views = [None; MAX_CPUS];
        for (view, queue) in views.iter_mut().zip(&self.ready[..self.cpus]) {
            *view = queue
                .best_where(|&t| self.runnable(prev, t))
                .map(|(prio, len)| QueueView { prio, len });
        }
        views
    }

    /// Takes the first runnable task of the best level of CPU `from`'s queue (the one
    /// its view showed).
    pub(super) fn pop_runnable(&mut self, from: usize, prev: TaskId) -> TaskId {
        let next = *self.ready[from]
            .first_where(|&t| self.runnable(prev, t))
            .expect("the view showed a runnable task");
        self.dequeue(next);
        next
    }

    /// Queues ready task `id` where [`balance::place`] says, and kicks that CPU (a
    /// reschedule IPI, or this CPU's flag) if it should run the task now. Returns true
    /// if the task waits unkicked in this CPU's queue.
    pub(super) fn place(&mut self, id: TaskId) -> bool {
        let (cpu, kick) = self.placement(id);
        self.enqueue(id, cpu);
        if kick {
            crate::smp::kick(cpu);
        } else if percpu::online_cpus() == 0 {
            // Before the boot CPU is marked online (scheduler being set up).
            percpu::set_need_resched();
        }
        !kick && cpu == this_cpu().id()
    }

    /// Ready task `id`, queued while this CPU still stood on its stack, may be entered
    /// now. Queued elsewhere (woken meanwhile, or moved by [`migrate_to`]): that CPU
    /// may have skipped it, so kick it. Queued here (this CPU just picked another task
    /// over it): move it to a CPU that can run it at once, if there is one.
    pub(super) fn offer(&mut self, id: TaskId) {
        let me = this_cpu().id();
        match self.tasks[&id].queued_on {
            Some(q) if q != me => crate::smp::kick(q),
            Some(_) => {
                if let (cpu, true) = self.placement(id)
                    && cpu != me
                {
                    self.dequeue(id);
                    self.enqueue(id, cpu);
                    crate::smp::kick(cpu);
                }
            }
            None => {}
        }
    }

    /// Where [`balance::place`] puts ready task `id` now, and whether to kick there.
    pub(super) fn placement(&self, id: TaskId) -> (CpuId, bool) {
        let me = this_cpu().id();
        let (last, prio) = {
            let t = &self.tasks[&id];
            (t.last_cpu, t.prio)
        };
        let mut cpus = [CpuView {
            online: false,
            idle: false,
            kicked: false,
            running: Priority::Low,
        }; MAX_CPUS];
        for (c, view) in cpus[..self.cpus].iter_mut().enumerate() {
            let area = percpu::cpu(c as CpuId);
            let running = &self.tasks[&self.current[c]];
            *view = CpuView {
                online: area.is_some_and(PerCpu::is_online),
                idle: running.is_idle,
                kicked: area.is_some_and(|a| a.need_resched.load(Relaxed)),
                running: running.prio,
            };
        }
        let (cpu, kick) = balance::place(me as usize, last as usize, prio, &cpus[..self.cpus]);
        (cpu as CpuId, kick)
    }

    /// What this CPU's timer must do next (see [`NextEvent`]).
    pub(super) fn next_event(&self) -> NextEvent {
        let cur_id = self.cur();
        let cur = &self.tasks[&cur_id];
        let running = (!cur.is_idle).then_some(cur.prio);
        let competition = balance::has_competition(
            this_cpu().id() as usize,
            running,
            &self.views(cur_id)[..self.cpus],
        );
        NextEvent {
            sleeper: self.sleepers.first_key_value().map(|(k, _)| k.0),
            competition,
            tick: competition || (running.is_some() && percpu::online_cpus() > 1),
        }
    }
}
