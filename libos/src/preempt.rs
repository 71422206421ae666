//! Preemption: the count, its guard, the four models, and the resched points.
//!
//! Models follow Linux: under `none` a task runs until it blocks, yields or reaches a
//! [`cond_resched`] point (the one reschedule point that is live under `none`: long
//! kernel loops rely on it); `voluntary` adds the [`might_resched`] points; `full` also
//! preempts on interrupt exit and when the last [`PreemptGuard`] or outermost
//! [`IrqGuard`](crate::irqflags::IrqGuard) is released with a reschedule pending, so
//! both kinds of point are no-ops there. `dynamic` boots in one of those (default
//! `full`) and can be switched at run time with [`switch_dynamic`].
//!
//! [`irqentry_exit_cond_resched`] follows the current model; the `raw_` variant
//! reschedules whenever needed and allowed, *whatever* the model. Callers that must
//! preempt regardless (a long preemptible hypercall: Thomas Gleixner, "Re: [RFC PATCH
//! 1/5] entry: Pass pt_regs to irqentry_exit_cond_resched()", LKML, 2022-08-09) call
//! the raw one.

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};

use crate::irqflags::{self, IrqsOff};
use crate::percpu::{self, CpuId, PerCpu, need_resched, this_cpu};

/// A preemption model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// No preemption; tasks run until they block, yield or call `cond_resched()`.
    None,
    /// Also reschedule at `might_resched()` points.
    Voluntary,
    /// Preempt on interrupt exit whenever preemption is enabled.
    Full,
}

impl Model {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Model::None => "none",
            Model::Voluntary => "voluntary",
            Model::Full => "full",
        }
    }

    fn from_u8(v: u8) -> Model {
        match v {
            0 => Model::None,
            1 => Model::Voluntary,
            _ => Model::Full,
        }
    }
}

/// What the command line selected: a fixed model, or `dynamic` starting in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The model in force at boot.
    pub model: Model,
    /// Whether it may be switched at run time.
    pub dynamic: bool,
}

impl Default for Setting {
    /// `preempt=dynamic`, booting in `full` (as Linux's default `PREEMPT_DYNAMIC`).
    fn default() -> Self {
        Setting {
            model: Model::Full,
            dynamic: true,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dynamic {
            write!(f, "dynamic:{}", self.model.name())
        } else {
            f.write_str(self.model.name())
        }
    }
}

/// Parses `none|voluntary|full|dynamic|dynamic:none|dynamic:voluntary|dynamic:full`.
pub fn parse_setting(s: &str) -> Option<Setting> {
    let model = |m: &str| match m {
        "none" => Some(Model::None),
        "voluntary" => Some(Model::Voluntary),
        "full" => Some(Model::Full),
        _ => None,
    };
    match s.strip_prefix("dynamic") {
        Some("") => Some(Setting::default()),
        Some(rest) => Some(Setting {
            model: model(rest.strip_prefix(':')?)?,
            dynamic: true,
        }),
        None => Some(Setting {
            model: model(s)?,
            dynamic: false,
        }),
    }
}

static MODEL: AtomicU8 = AtomicU8::new(2);
static DYNAMIC: AtomicBool = AtomicBool::new(true);

/// Installs the boot-time setting (called once by `libos::start`).
pub(crate) fn configure(setting: Setting) {
    MODEL.store(setting.model as u8, Relaxed);
    DYNAMIC.store(setting.dynamic, Relaxed);
}

/// The model in force now.
pub fn current() -> Model {
    Model::from_u8(MODEL.load(Relaxed))
}

/// The setting in force now (`dynamic:<current>` under dynamic).
pub fn setting() -> Setting {
    Setting {
        model: current(),
        dynamic: DYNAMIC.load(Relaxed),
    }
}

/// Booted with a fixed model: it cannot be switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotDynamic(pub Model);

impl fmt::Display for NotDynamic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preemption model is fixed to `{}` (boot with preempt=dynamic to switch)",
            self.0.name()
        )
    }
}

/// Switches the model at run time; only under `preempt=dynamic`.
pub fn switch_dynamic(model: Model) -> Result<(), NotDynamic> {
    if !DYNAMIC.load(Relaxed) {
        return Err(NotDynamic(current()));
    }
    MODEL.store(model as u8, Relaxed);
    Ok(())
}

/// Preemption disabled until dropped. Not `Send`: it must drop on the CPU (and in the
/// task) that created it.
#[derive(Debug)]
#[must_use = "preemption is re-enabled when the guard drops"]
pub struct PreemptGuard {
    /// The CPU the guard was made on (it must drop there: the task cannot migrate
    /// while preemption is off).
    cpu: CpuId,
    _not_send: PhantomData<*const ()>,
}

/// Disables preemption until the guard drops.
pub fn preempt_disable() -> PreemptGuard {
    // One `gs:`-relative add: a migration cannot split it (the count we raise is the
    // one of the CPU we are on when it takes effect, and from then on we stay).
    let _ = percpu::preempt_count_add(1);
    PreemptGuard {
        cpu: percpu::cpu_id(),
        _not_send: PhantomData,
    }
}

impl PreemptGuard {
    /// The CPU the caller is pinned to while the guard lives.
    pub fn cpu(&self) -> CpuId {
        self.cpu
    }
}

impl Drop for PreemptGuard {
    fn drop(&mut self) {
        debug_assert_eq!(
            self.cpu,
            percpu::cpu_id(),
            "BUG: PreemptGuard dropped on another CPU (unexpected task migration)"
        );
        let (underflow, now_zero) = percpu::preempt_count_add(-1);
        assert!(!underflow, "BUG: preempt_count underflow");
        // Under full preemption the end of a non-preemptible section is a preemption
        // point (Linux's preempt_enable -> preempt_schedule). (The irq guard's release
        // is the point: it reschedules before interrupts come back on.)
        if now_zero && current() == Model::Full && need_resched() && irqflags::irqs_enabled() {
            drop(irqflags::IrqGuard::new());
        }
    }
}

/// Whether the scheduler may switch tasks here: preemption count zero and not on the
/// irq stack (in a handler or bottom half).
pub fn preemption_allowed() -> bool {
    let cpu = this_cpu();
    cpu.preempt_count.load(Relaxed) == 0 && cpu.irq_nesting.load(Relaxed) == 0
}

/// Reschedules if needed and allowed, whatever the model.
fn raw_cond_resched(irqs_off: &IrqsOff<'_>) {
    while need_resched() && preemption_allowed() {
        crate::sched::schedule(irqs_off);
    }
}

/// A reschedule point for long-running task code: reschedules if needed under `none`
/// and `voluntary` (Linux's `cond_resched()`, live under PREEMPT_NONE: the loops that
/// call it are what keeps a non-preemptible kernel responsive); a no-op under `full`,
/// where interrupt exit and guard release already preempt.
pub fn cond_resched() {
    if current() != Model::Full {
        resched_point();
    }
}

/// A voluntary preemption point (Linux's `might_resched()`): reschedules if needed only
/// under `voluntary`; a no-op under `none` and `full`.
pub fn might_resched() {
    if current() == Model::Voluntary {
        resched_point();
    }
}

fn resched_point() {
    if need_resched() && irqflags::irqs_enabled() && preemption_allowed() {
        let guard = irqflags::IrqGuard::new();
        raw_cond_resched(&guard.token());
    }
}

/// The preemption point of releasing the outermost irq guard (Linux reaches
/// `preempt_schedule` through `spin_unlock_irqrestore` -> `preempt_enable`): under
/// `full`, a reschedule a wake-up asked for while irqs were off happens now, before
/// they come back on, instead of at the next interrupt (which an idle-tickless CPU may
/// not have for a long time). Not while a panic is being reported.
///
/// Context: irqs off, about to be re-enabled by the caller (`IrqGuard::drop`).
pub(crate) fn resched_on_irq_restore(irqs_off: &IrqsOff<'_>) {
    if current() == Model::Full && need_resched() && !crate::panic::is_panicking() {
        raw_cond_resched(irqs_off);
    }
}

/// Interrupt-exit reschedule that follows the model: only under `full`.
///
/// Context: irqs off, on the interrupted task's stack, interrupted context had irqs on.
pub fn irqentry_exit_cond_resched(irqs_off: &IrqsOff<'_>) {
    if current() == Model::Full {
        raw_irqentry_exit_cond_resched(irqs_off);
    }
}

/// Interrupt-exit reschedule whatever the model (for preemptible hypercalls and
/// sections, which must let other tasks run under `none` and `dynamic:none` too).
///
/// Context: as [`irqentry_exit_cond_resched`].
pub fn raw_irqentry_exit_cond_resched(irqs_off: &IrqsOff<'_>) {
    raw_cond_resched(irqs_off);
}

/// Which reschedule an interrupt exit's work loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitResched {
    /// The model's ([`irqentry_exit_cond_resched`]): only under `full`.
    Model,
    /// The raw one ([`raw_irqentry_exit_cond_resched`]): whatever the model, for an
    /// exit into a preemptible section.
    Raw,
}

/// Whether interrupt exit has a reschedule of kind `how` to do.
pub(crate) fn exit_resched_pending(how: ExitResched) -> bool {
    (how == ExitResched::Raw || current() == Model::Full) && need_resched() && preemption_allowed()
}

/// The interrupt exit's reschedule of kind `how`.
///
/// Context: as [`irqentry_exit_cond_resched`].
pub(crate) fn exit_cond_resched(irqs_off: &IrqsOff<'_>, how: ExitResched) {
    match how {
        ExitResched::Model => irqentry_exit_cond_resched(irqs_off),
        ExitResched::Raw => raw_irqentry_exit_cond_resched(irqs_off),
    }
}

/// How the interrupt exit reschedules inside a preemptible section (`hcall_resched=`).
/// Only [`SectionResched::Raw`] is correct; the others reproduce the two halves of the
/// Linux bug in Thomas Gleixner, "Re: [RFC PATCH 1/5] entry: Pass pt_regs to
/// irqentry_exit_cond_resched()", LKML, 2022-08-09 (and, for `cpuflag`, the migration
/// bug of Per Bilse, "Re: [PATCH] Updates to Xen hypercall preemption", LKML /
/// xen-devel, 2023-06-21), so tests can prove they would catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SectionResched {
    /// The raw reschedule, whatever the model (the default, and the fix).
    #[default]
    Raw = 0,
    /// `model`: the model-following reschedule, a no-op under `none`/`dynamic:none`.
    FollowsModel = 1,
    /// `untraced`: the raw reschedule, but the exit forgets to report hardirqs on
    /// when it returns into the section (the missing `trace_hardirqs_on`).
    Untraced = 2,
    /// `cpuflag`: the raw reschedule, but the in-preemptible flag stays with the CPU
    /// instead of following the task (the migration bug): the scheduler neither
    /// parks nor loads it. Harmless on one CPU... only until a task migrates.
    StaysOnCpu = 3,
}

impl SectionResched {
    /// Parses the `hcall_resched=` value.
    pub fn parse(s: &str) -> Option<SectionResched> {
        match s {
            "raw" => Some(SectionResched::Raw),
            "model" => Some(SectionResched::FollowsModel),
            "untraced" => Some(SectionResched::Untraced),
            "cpuflag" => Some(SectionResched::StaysOnCpu),
            _ => None,
        }
    }
}

#[cfg(feature = "bug-injection")]
static SECTION_RESCHED: AtomicU8 = AtomicU8::new(SectionResched::Raw as u8);

/// Installs `hcall_resched=` (called once by `libos::start`; without the
/// `bug-injection` feature there is nothing to install).
pub(crate) fn configure_section_resched(how: SectionResched) {
    #[cfg(feature = "bug-injection")]
    SECTION_RESCHED.store(how as u8, Relaxed);
    #[cfg(not(feature = "bug-injection"))]
    let _ = how;
}

/// The `hcall_resched=` in force. Without the `bug-injection` feature it is the
/// constant `Raw`, so the bug paths it selects compile to nothing in every image but
/// the test variants.
#[inline(always)]
fn section_resched() -> u8 {
    #[cfg(feature = "bug-injection")]
    {
        SECTION_RESCHED.load(Relaxed)
    }
    #[cfg(not(feature = "bug-injection"))]
    {
        SectionResched::Raw as u8
    }
}

/// Whether the exit must skip the hardirqs-on report after a section reschedule
/// (`hcall_resched=untraced`, test-only). Always inlined: the entry core's
/// non-instrumentable exit reads it.
#[inline(always)]
pub(crate) fn section_exit_forgets_trace() -> bool {
    section_resched() == SectionResched::Untraced as u8
}

/// Whether the scheduler must leave the in-preemptible flag on the CPU
/// (`hcall_resched=cpuflag`, test-only: the migration bug).
pub(crate) fn section_flag_stays_on_cpu() -> bool {
    section_resched() == SectionResched::StaysOnCpu as u8
}

/// Runs `f`, a long operation that may be preempted whatever the preemption model:
/// a hypercall that Xen continues (a balloon's many extents), or long in-kernel work
/// done with interrupts enabled. While it runs, an interrupt that lands in it
/// reschedules through [`raw_irqentry_exit_cond_resched`] if another task needs the CPU
/// (under `none` and `dynamic:none` too), then resumes it.
///
/// # Panics
/// If called with interrupts disabled (nothing could preempt it).
pub fn preemptible<R>(f: impl FnOnce() -> R) -> R {
    assert!(
        irqflags::irqs_enabled(),
        "preemptible section entered with interrupts disabled"
    );
    let outer = {
        let irqs = irqflags::IrqGuard::new();
        PerCpu::get(&irqs).in_preemptible.swap(true, Relaxed)
    };
    let r = f();
    // The task may have been preempted and resumed on another CPU inside `f`: the flag
    // to clear is the one of the CPU we run on *now* (Per Bilse, "Re: [PATCH] Updates
    // to Xen hypercall preemption", LKML / xen-devel, 2023-06-21), so look it up again
    // under the guard, never reuse a reference from before `f`.
    let irqs = irqflags::IrqGuard::new();
    PerCpu::get(&irqs).in_preemptible.store(outer, Relaxed);
    r
}

/// Whether the running task is inside a [`preemptible`] section.
pub fn in_preemptible() -> bool {
    // Pinned: unpinned, a task preempted and migrated between finding this CPU's area
    // (`gs:[0]`) and loading the flag would read the old CPU's flag, which by then
    // belongs to whatever task runs there. (`smpstress` on uhyve caught it: there every
    // ring-0 instruction is emulated, so the window between the two is wide.)
    let irqs = irqflags::IrqGuard::new();
    PerCpu::get(&irqs).in_preemptible.load(Relaxed)
}

/// The interrupt exit for an entry that interrupted a preemptible section: clear the
/// task's flag, run the exit work `work` with the *raw* reschedule (whatever the model:
/// the bug in Thomas Gleixner, "Re: [RFC PATCH 1/5] entry: Pass pt_regs to
/// irqentry_exit_cond_resched()", LKML, 2022-08-09 was that under PREEMPT_DYNAMIC the
/// model-following one became a no-op), and restore the flag in this task, on whichever
/// CPU it resumed, so the flag follows the task and never leaks to another (Per Bilse,
/// "Re: [PATCH] Updates to Xen hypercall preemption", LKML / xen-devel, 2023-06-21). The
/// irq-state tracing is told "on" by the caller, `irqentry_exit`, as it returns to the
/// section (that thread's missing `trace_hardirqs_on`).
///
/// Context: irqs off, on the interrupted task's stack, interrupted context had irqs on,
/// not interrupted idle.
pub(crate) fn section_exit_resched(irqs_off: &IrqsOff<'_>, work: &mut dyn FnMut(ExitResched)) {
    let _ = irqs_off;
    this_cpu().in_preemptible.store(false, Relaxed);
    if section_resched() == SectionResched::FollowsModel as u8 {
        work(ExitResched::Model);
    } else {
        work(ExitResched::Raw);
    }
    irqflags::assert_irqs_disabled();
    this_cpu().in_preemptible.store(true, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(
            parse_setting("none"),
            Some(Setting {
                model: Model::None,
                dynamic: false
            })
        );
        assert_eq!(
            parse_setting("dynamic"),
            Some(Setting {
                model: Model::Full,
                dynamic: true
            })
        );
        assert_eq!(
            parse_setting("dynamic:voluntary"),
            Some(Setting {
                model: Model::Voluntary,
                dynamic: true
            })
        );
        assert_eq!(parse_setting("dynamic:"), None);
        assert_eq!(parse_setting("dynamicfull"), None);
        assert_eq!(parse_setting("fast"), None);
        for s in [
            "none",
            "voluntary",
            "full",
            "dynamic:none",
            "dynamic:voluntary",
            "dynamic:full",
        ] {
            assert_eq!(parse_setting(s).unwrap().to_string(), s);
        }
    }
}
