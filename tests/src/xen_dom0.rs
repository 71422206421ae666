//! Xen in QEMU, the app as dom0 (the fast path): boot, crashes, the
//! preemptible-hypercall latency proof under `-icount`, every preemption model, SMP.

use crate::expect::{
    BUG, INVALID_OPCODE, PAGEFAULT, SCHED_IN_IRQ, SMP_PANIC_ONCE, UNTRACED, WITHIN,
};
use crate::model::{BUG_MODELS, LATENCY_MODELS, Model, PREEMPT_MODELS};
use crate::{Bed, Case, EXCEPTION, PANIC, case, cpu_flag_bug_detected, smp_selftests, smpstress};

/// `hello a "b c"` on Xen.
pub(crate) const HELLO_XEN: &[&str] = &["Hello from Upcall on xen", "arg[0] = a", "arg[1] = b c"];
/// `selftest` on Xen under a preemption model, with the backend's own checks (the
/// grant table: a page granted to dom0, read back and revoked).
pub(crate) const SELFTEST_XEN: &[&str] = &[
    "selftest on xen",
    "ok   xen: grant table: 4 frames, 2048 entries",
    "ok   xen: grant a page to dom0",
    "ok   xen: revoke the grant",
    "preemption model: ",
    " passed, 0 failed",
];

/// The Xen dom0 balloon load under `-icount`: 24 MiB, each hypercall ≥ 20 ticks
/// without preemption at hz=100; 80 samples span about three balloon cycles.
const DOM0_BALLOON: &[&str] = &["hz=100", "load=balloon", "balloon_mib=24", "samples=80"];
/// [`DOM0_BALLOON`] with fewer samples, the sampler woken by an event channel.
const DOM0_BALLOON_EVENT_WOKEN: &[&str] = &[
    "hz=100",
    "load=balloon",
    "balloon_mib=24",
    "samples=30",
    "wake=event",
];
/// [`DOM0_BALLOON`] with fewer samples, the sampler woken by a notify callback.
const DOM0_BALLOON_NOTIFY_WOKEN: &[&str] = &[
    "hz=100",
    "load=balloon",
    "balloon_mib=24",
    "samples=30",
    "wake=notify",
];
/// The same with the bug: each sample waits out a whole hypercall.
const DOM0_BALLOON_BUG: &[&str] = &[
    "hz=100",
    "load=balloon",
    "balloon_mib=24",
    "samples=15",
    "hcall_resched=model",
];

/// A case as dom0.
fn dom0(name: &str, app: &'static str, args: &[&str]) -> Case {
    case(name, app, args).on(Bed::XenDom0)
}

/// `latency` under model `m` with the balloon load `args` and `-icount`, named
/// `xen/dom0/latency/{name}/MODEL`.
fn balloon_latency(name: &str, m: Model, args: &[&str]) -> Case {
    dom0(
        &format!("xen/dom0/latency/{name}/{}", m.name),
        "latency",
        m.args,
    )
    .args(args)
    .icount()
}

/// The cases as dom0.
pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        dom0("xen/dom0/hello", "hello", &["a", "b c"]).expect(HELLO_XEN),
        // Xen PV has no IST: libos's stack check reports the overflow before the guard
        // page (which would end the domain without a word).
        dom0("xen/dom0/crash/task-overflow", "crash", &["task-overflow"])
            .status(PANIC)
            .expect(&["stack overflow in task", "crash::overflow_task_stack"]),
        dom0("xen/dom0/crash/task", "crash", &["task"])
            .status(PANIC)
            .expect(&[
                "deliberate panic 3 calls deep",
                "crash::crash_inner",
                "crash::main",
                "xen_pv_main",
            ]),
        dom0("xen/dom0/crash/oom", "crash", &["oom"])
            .status(PANIC)
            .expect(&[
                "memory allocation of 1048576 bytes failed",
                "crash::exhaust_heap",
                "crash::main",
            ]),
        dom0("xen/dom0/crash/pagefault", "crash", &["pagefault"])
            .status(EXCEPTION)
            .expect(PAGEFAULT),
        dom0("xen/dom0/crash/ud", "crash", &["ud"])
            .status(EXCEPTION)
            .expect(INVALID_OPCODE),
        dom0(
            "xen/dom0/crash/sched-in-irq-refused",
            "crash",
            &["sched-in-irq"],
        )
        .status(PANIC)
        .expect(SCHED_IN_IRQ),
        dom0("xen/dom0/crash/irq", "crash", &["irq"])
            .status(PANIC)
            .expect(&[
                "deliberate panic in the timer interrupt handler",
                "upcall_xen::events::upcall",
                "--- irq stack ends",
                "crash::panic_in_timer_interrupt",
            ]),
        dom0("xen/dom0/crash/untraced-irq", "crash", &["untraced-irq"])
            .status(PANIC)
            .expect(&[
                "interrupts were enabled without trace_hardirqs_on",
                "crash::spin_for_interrupts",
            ]),
    ];
    // Preemptible hypercalls: balloon 24 MiB out and in, each a single long hypercall
    // (about 27 ticks at hz=100 under `-icount`), while a high-priority task measures
    // its wake-up latency, under every model and across a run-time switch; then the
    // same with the sampler woken by a non-timer event channel's bottom half, or by a
    // notify callback: its wake-up lands while the balloon hypercall runs.
    for (load, args) in [
        ("balloon", DOM0_BALLOON),
        ("balloon-event", DOM0_BALLOON_EVENT_WOKEN),
        ("balloon-notify", DOM0_BALLOON_NOTIFY_WOKEN),
    ] {
        cases.extend(LATENCY_MODELS.iter().map(|&m| {
            balloon_latency(load, m, args)
                .bounds(WITHIN)
                .expect(&["data intact", "max_wake_latency_ticks="])
        }));
    }
    // With the model-following reschedule, each sample waits out a whole hypercall.
    cases.extend(
        BUG_MODELS.iter().map(|&m| {
            balloon_latency("model-resched-bug-detected", m, DOM0_BALLOON_BUG).bounds(BUG)
        }),
    );
    cases.push(
        dom0(
            "xen/dom0/latency/untraced-irqs-on-detected",
            "latency",
            &[
                "preempt=none",
                "hz=500",
                "load=balloon",
                "balloon_mib=40",
                "hcall_resched=untraced",
            ],
        )
        .status(PANIC)
        .expect(UNTRACED),
    );
    cases.extend(PREEMPT_MODELS.iter().map(|m| {
        dom0(&format!("xen/dom0/selftest/{}", m.name), "selftest", m.args).expect(SELFTEST_XEN)
    }));
    cases.extend(smp_cases());
    cases
}

/// selftest's SMP checks under every preemption model on 2 and 4 vCPUs and the
/// migration stress test on 2 under `none` and `full`, on a Xen `bed`, named
/// `{prefix}smp2/…` (`smp4`).
pub(crate) fn xen_smp(prefix: &str, bed: Bed) -> Vec<Case> {
    let mut cases = smp_selftests(prefix, bed);
    for model in ["none", "full"] {
        cases.push(smpstress(prefix, bed, ("smp2", 2), model));
    }
    cases
}

/// Secondary vCPUs as dom0: selftest's SMP checks under every preemption model on 2
/// and 4 vCPUs, the migration stress test on 2, the per-CPU flag bug caught and a
/// panic on every vCPU at once (halt-all by `VCPUOP_down`). Named `xen/dom0/smp2/…`
/// (`smp4`) so both `--filter xen` and `--filter smp` pick them.
fn smp_cases() -> Vec<Case> {
    let mut cases = xen_smp("xen/dom0/", Bed::XenDom0);
    // The per-CPU flag bug reproduced on Xen (the flag stays with the vCPU): caught.
    cases.push(cpu_flag_bug_detected(
        "xen/dom0/smp2/smpstress/cpu-flag-bug-detected",
        Bed::XenDom0,
    ));
    cases.push(
        dom0(
            "xen/dom0/smp2/crash/panic-on-every-cpu",
            "crash",
            &["smp-panic"],
        )
        .smp(2)
        .status(PANIC)
        .expect(&["2 CPUs online", "deliberate panic on CPU", "backtrace:"])
        .at_most_once(SMP_PANIC_ONCE),
    );
    cases
}
