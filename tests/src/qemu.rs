//! The KVM platform on QEMU: boot and arguments on every machine, crashes and their
//! reports, every preemption model, the preemptible-section latency proof, and SMP.

use crate::expect::{
    BUG, HELLO, SCHED_IN_IRQ, SELFTEST, SELFTEST_MODEL, SELFTEST_SMP, SMP_PANIC, SMP_PANIC_ONCE,
    UNTRACED, WITHIN,
};
use crate::model::{
    BUG_MODELS, HZ_250, LATENCY_MODELS, Model, NONE, PREEMPT_MODELS, SMP_2_4, WAKES,
};
use crate::{
    Bed, Bound, Case, ENTRY_TO_MAIN_INSTRUCTIONS_MAX, EXCEPTION, ICOUNT_SHIFT, Machine, PANIC,
    case, cpu_flag_bug_detected, smp_selftests, smpstress,
};

/// The cases for the KVM platform on QEMU.
pub fn kvm_qemu_cases() -> Vec<Case> {
    [
        case("hello/microvm", "hello", &[]).expect(HELLO),
        case("hello/args", "hello", &["a", "b c"]).expect(&["arg[0] = a", "arg[1] = b c"]),
        case("hello/pc-qboot", "hello", &[]).on(Machine::PcQboot).expect(HELLO),
        case("hello/pc-seabios", "hello", &[]).on(Machine::PcSeabios).expect(HELLO),
        case("hello/release", "hello", &["x"]).release().expect(&["Hello from Upcall on kvm", "arg[0] = x"]),
        // Boot cost pinned in instructions: under `-icount` the TSC counts 2^shift per
        // instruction, so the count is the same on every run (release image, 128 MiB,
        // this command line: the count grows with RAM).
        case("boot/entry-to-main-icount", "hello", &["loglevel=debug"]).release().icount().bounds(&[(
            "entry_to_main_tsc_cycles",
            Bound::AtMost(ENTRY_TO_MAIN_INSTRUCTIONS_MAX << ICOUNT_SHIFT),
        )]),
        case("selftest/microvm", "selftest", &["expect-args", "a"]).expect(SELFTEST),
        case("selftest/release", "selftest", &[]).release().expect(SELFTEST),
        case("selftest/pc-qboot", "selftest", &[]).on(Machine::PcQboot).expect(SELFTEST),
        case("cmdline/bad-option", "hello", &["loglevel=loud"])
            .status(2)
            .expect(&["bad command line: loglevel: expected quiet|info|debug, got `loud`"]),
        case("crash/task", "crash", &["task"]).status(PANIC).expect(&[
            "panicked at apps/crash/src/lib.rs",
            "deliberate panic 3 calls deep",
            "backtrace:",
            "crash::crash_inner",
            "crash::crash_middle",
            "crash::crash_outer",
            "crash::main",
            "end of backtrace",
        ]),
        case("crash/task-release", "crash", &["task"]).release().status(PANIC).expect(&[
            "deliberate panic 3 calls deep",
            "crash::crash_inner",
            "crash::crash_middle",
            "crash::crash_outer",
        ]),
        // An unhandled heap exhaustion: the report names the failed allocation's size.
        case("crash/oom", "crash", &["oom"]).status(PANIC).expect(&[
            "crash: exhausting a heap of",
            "memory allocation of 1048576 bytes failed",
            "crash::exhaust_heap",
            "crash::main",
        ]),
        case("crash/pagefault", "crash", &["pagefault"]).status(EXCEPTION).expect(&[
            "CPU exception 14 (#PF page fault)",
            "cr2=0x00007fffdead0000 (not present, read, kernel mode)",
            "rax=",
            "rip 0x",
            "crash::read_unmapped",
            "crash::main",
        ]),
        case("crash/nullptr", "crash", &["nullptr"])
            .status(EXCEPTION)
            .expect(&["#PF page fault", "cr2=0x0000000000000000", "crash::read_unmapped"]),
        case("crash/ud", "crash", &["ud"]).status(EXCEPTION).expect(&[
            "CPU exception 6 (#UD invalid opcode)",
            "libos::arch::invalid_opcode",
            "crash::invalid_opcode",
            "crash::main",
        ]),
        case("crash/overflow-double-fault", "crash", &["overflow"]).status(EXCEPTION).expect(&[
            "CPU exception 8 (#DF double fault), error code 0x0, handled on the IST1 (double-fault) stack",
            "crash::overflow_stack",
            "previous frame repeated",
        ]),
        case("crash/ud-release", "crash", &["ud"]).release().status(EXCEPTION).expect(&["#UD", "crash::invalid_opcode"]),
        case("crash/task-overflow", "crash", &["task-overflow"]).status(EXCEPTION).expect(&[
            "CPU exception 8 (#DF double fault)",
            "IST1",
            "crash::overflow_task_stack",
            "libos_task_start",
        ]),
        case("crash/irq-cross-stack-backtrace", "crash", &["irq"]).status(PANIC).expect(&[
            "deliberate panic in the timer interrupt handler",
            "libos::time::timer_interrupt",
            "libos::entry::on_irqstack",
            "--- irq stack ends; interrupted stack pointer",
            "kvm_trap",
            "crash::spin_for_interrupts",
            "crash::panic_in_timer_interrupt",
            "crash::main",
        ]),
        // The scheduler refuses to run from an interrupt handler, naming the context.
        case("crash/sched-in-irq-refused", "crash", &["sched-in-irq"]).status(PANIC).expect(SCHED_IN_IRQ),
        case("crash/untraced-irq-enable-caught", "crash", &["untraced-irq"]).status(PANIC).expect(&[
            "irq-state tracing: interrupts were enabled without trace_hardirqs_on",
            // The backtrace: the entry, then the interrupted loop below it (the
            // message's `rip` may name a function it calls, wherever the tick lands).
            "libos::entry::irqentry_enter",
            "crash::spin_for_interrupts",
        ]),
    ]
        .into_iter()
    .chain(preemption_cases())
    .chain(latency_cases())
    .chain(smp_cases())
    .collect()
}

/// `selftest` under every preemption model (each checks that its model behaves as
/// specified, and under dynamic that run-time switches change the behaviour).
fn preemption_cases() -> Vec<Case> {
    PREEMPT_MODELS
        .iter()
        .chain([&HZ_250])
        .map(|m| case(format!("selftest/{}", m.name), "selftest", m.args).expect(SELFTEST_MODEL))
        .chain([case(
            "selftest/preempt=full-release",
            "selftest",
            &["preempt=full"],
        )
        .release()
        .expect(SELFTEST)])
        .collect()
}

/// SMP on QEMU (`-smp N`, TCG `thread=multi`): `selftest` with its SMP checks under
/// every preemption model on 2 and 4 CPUs, the migration stress test, and the latency
/// proof on 2 CPUs. (`expect-cpus=N` makes selftest check that all N came online.)
pub fn smp_cases() -> Vec<Case> {
    let mut cases = smp_selftests("", Bed::Qemu(Machine::Microvm));
    cases.push(
        case("smp2/selftest/pc-qboot", "selftest", &["expect-cpus=2"])
            .on(Machine::PcQboot)
            .smp(2)
            .expect(SELFTEST_SMP),
    );
    cases.push(
        case("smp1/selftest/one-cpu", "selftest", &["expect-cpus=1"]).expect(&[
            "smp: 1 CPUs online",
            "ok   smp: every CPU came online",
            " passed, 0 failed",
        ]),
    );
    for (smp, model) in [
        (("smp2", 2), "none"),
        (("smp2", 2), "voluntary"),
        (("smp2", 2), "full"),
        (("smp2", 2), "dynamic"),
        (("smp4", 4), "none"),
        (("smp4", 4), "full"),
    ] {
        cases.push(smpstress("", Bed::Qemu(Machine::Microvm), smp, model));
    }
    // The per-CPU flag bug reproduced: the stress test sees it.
    cases.push(cpu_flag_bug_detected(
        "smp2/smpstress/cpu-flag-bug-detected",
        Bed::Qemu(Machine::Microvm),
    ));
    // A task moved to another CPU between the local flush of a new stack's guard page
    // and the shootdown (a test hook moves it, as preemption could, unless it is
    // pinned there): the stack's guard page must still fault on that CPU.
    for &(smp, cpus) in SMP_2_4 {
        cases.push(
            case(
                format!("{smp}/crash/guard-page-faults-after-migration"),
                "crash",
                &["preempt=full", "guard-migrate"],
            )
            .smp(cpus)
            .status(EXCEPTION)
            .expect(&[
                "the hook could not move the task (pinned)",
                "crash: writing to the guard page",
                "#PF page fault",
            ]),
        );
    }
    // A panic on every CPU at once: one report (the first stops the others), with its
    // backtrace, and the exit status reaches the host from whichever CPU.
    for &(smp, cpus) in SMP_2_4 {
        cases.push(
            case(
                format!("{smp}/crash/panic-on-every-cpu"),
                "crash",
                &["smp-panic"],
            )
            .smp(cpus)
            .status(PANIC)
            .expect(SMP_PANIC)
            .at_most_once(SMP_PANIC_ONCE),
        );
    }
    // The latency proof on 2 CPUs, still under `-icount`: QEMU then runs both vCPUs
    // round-robin on one host thread and switches at every virtual-timer deadline, so
    // a wake-up's lateness is counted in guest instructions, not in how long a vCPU
    // thread waited for a host core. (Wall-clock runs on multi-threaded TCG showed
    // 3-10+ tick outliers whenever other QEMUs loaded this 2-core host.) Cross-CPU
    // wake-ups still go by reschedule IPI between the two vCPUs.
    let smp2 = |c: Case| Case {
        name: format!("smp2/{}", c.name),
        ..c.smp(2)
    };
    cases.extend(LATENCY_MODELS.iter().map(|&m| smp2(latency_section(m))));
    cases.push(smp2(latency_bug(NONE)));
    cases
}

/// `latency/section/MODEL`: the woken high-priority task runs within 2 ticks while a
/// low-priority one runs long preemptible sections.
fn latency_section(m: Model) -> Case {
    case(format!("latency/section/{}", m.name), "latency", m.args)
        .arg("load=section")
        .icount()
        .bounds(WITHIN)
        .expect(&["max_wake_latency_ticks="])
}

/// `latency/model-resched-bug-detected/MODEL`: with the model-following reschedule in
/// sections, the latency grows to the section length.
fn latency_bug(m: Model) -> Case {
    case(
        format!("latency/model-resched-bug-detected/{}", m.name),
        "latency",
        m.args,
    )
    .args(&["load=section", "hcall_resched=model", "samples=20"])
    .icount()
    .bounds(BUG)
    .expect(&["max_wake_latency_ticks="])
}

/// The preemptible-section proof on the KVM platform: the latency of a high-priority task
/// while a low-priority one runs long preemptible sections stays within 2 ticks under
/// every model (and across a run-time switch), and with `hcall_resched=model` — Linux's
/// PREEMPT_DYNAMIC bug (Gleixner, LKML, 2022-08-09) — it grows to the section length
/// under `none` and `dynamic:none`.
pub fn latency_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = LATENCY_MODELS.iter().map(|&m| latency_section(m)).collect();
    // A task woken by a device interrupt's bottom half, or by a notify callback, gets
    // the CPU as fast as a timer-woken one (the event is a self-IPI on a device vector).
    for &(wake, wake_arg) in WAKES {
        for m in LATENCY_MODELS {
            cases.push(
                case(
                    format!("latency/section-{wake}/{}", m.name),
                    "latency",
                    m.args,
                )
                .args(&["load=section", "samples=30", wake_arg])
                .icount()
                .bounds(WITHIN)
                .expect(&["max_wake_latency_ticks="]),
            );
        }
    }
    // With the model-following reschedule in sections, the event-woken task waits out
    // the section too: the cases above can fail.
    cases.push(
        case(
            "latency/section-notify/model-resched-bug-detected/none",
            "latency",
            &[
                "preempt=none",
                "load=section",
                "wake=notify",
                "samples=10",
                "hcall_resched=model",
            ],
        )
        .icount()
        .bounds(BUG)
        .expect(&["max_wake_latency_ticks="]),
    );
    cases.extend(BUG_MODELS.iter().map(|&m| latency_bug(m)));
    // The other half of that thread's bug: an exit that reschedules in a section but
    // forgets to report hardirqs on is caught by the next entry (the cases above, debug
    // builds, show the correct path passes the same check).
    cases.push(
        case(
            "latency/untraced-irqs-on-detected",
            "latency",
            &["preempt=none", "load=section", "hcall_resched=untraced"],
        )
        .status(PANIC)
        .expect(UNTRACED),
    );
    cases
}
