//! The preemption models cases run under: each a name (the piece it adds to a case
//! name) and the app arguments that select it.

/// A preemption setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// Its piece of a case name.
    pub name: &'static str,
    /// The app arguments that select it.
    pub args: &'static [&'static str],
}

const fn model(name: &'static str, args: &'static [&'static str]) -> Model {
    Model { name, args }
}

/// Every preemption model at the default tick (selftest checks that its model behaves
/// as specified, and under dynamic that run-time switches change the behaviour).
pub const PREEMPT_MODELS: &[Model] = &[
    model("preempt=none", &["preempt=none"]),
    model("preempt=voluntary", &["preempt=voluntary"]),
    model("preempt=full", &["preempt=full"]),
    model("preempt=dynamic", &["preempt=dynamic"]),
    model("preempt=dynamic:none", &["preempt=dynamic:none"]),
    model("preempt=dynamic:voluntary", &["preempt=dynamic:voluntary"]),
    model("preempt=dynamic:full", &["preempt=dynamic:full"]),
];

/// A faster tick (4 ms) under full preemption.
pub const HZ_250: Model = model("hz=250", &["hz=250", "preempt=full"]);

/// The latency proof's settings: every model, and a run-time switch under dynamic.
pub const LATENCY_MODELS: &[Model] = &[
    NONE,
    model("voluntary", &["preempt=voluntary"]),
    model("full", &["preempt=full"]),
    model("dynamic:none", &["preempt=dynamic:none"]),
    model("dynamic:voluntary", &["preempt=dynamic:voluntary"]),
    model("dynamic:full", &["preempt=dynamic:full"]),
    model(
        "dynamic-switch-to-none",
        &["preempt=dynamic:full", "switch=none"],
    ),
];

/// The models under which the model-following reschedule bug must show (Gleixner,
/// "entry: Pass pt_regs to irqentry_exit_cond_resched()", LKML, 2022-08-09; their
/// interrupt exit does not preempt).
pub const BUG_MODELS: &[Model] = &[NONE, model("dynamic:none", &["preempt=dynamic:none"])];

/// No preemption (the latency proof's name for it).
pub const NONE: Model = model("none", &["preempt=none"]);

/// How a latency sampler is woken besides its timer: by a device interrupt's bottom
/// half (`event`) or by a notify callback (`notify`); the piece of the case name and
/// the argument.
pub const WAKES: &[(&str, &str)] = &[("event", "wake=event"), ("notify", "wake=notify")];

/// CPU counts of the SMP cases: the piece of the case name and the count.
pub const SMP_2_4: &[(&str, u32)] = &[("smp2", 2), ("smp4", 4)];
