//! uhyve: the same image as on QEMU, entered through hermit-entry (needs /dev/kvm).

use crate::expect::{
    HELLO, INVALID_OPCODE, PAGEFAULT, SELFTEST_MODEL, SELFTEST_SMP, SMP_PANIC, SMP_PANIC_ONCE,
    STRESS_CLEAN,
};
use crate::model::PREEMPT_MODELS;
use crate::{Bed, Case, EXCEPTION, PANIC, case};

/// A case on uhyve.
fn uhyve(name: &str, app: &'static str, args: &[&str]) -> Case {
    case(name, app, args).on(Bed::Uhyve)
}

/// The cases for uhyve: the same image as on QEMU, entered through hermit-entry.
pub fn uhyve_cases() -> Vec<Case> {
    [
        uhyve("uhyve/hello", "hello", &[]).expect(HELLO),
        uhyve("uhyve/hello/args", "hello", &["a", "b c"]).expect(&["arg[0] = a", "arg[1] = b c"]),
        uhyve("uhyve/hello/release", "hello", &[])
            .release()
            .expect(HELLO),
        uhyve("uhyve/crash/task", "crash", &["task"])
            .status(PANIC)
            .expect(&[
                "deliberate panic 3 calls deep",
                "crash::crash_inner",
                "crash::main",
                "kvm_uhyve_main",
            ]),
        uhyve("uhyve/crash/pagefault", "crash", &["pagefault"])
            .status(EXCEPTION)
            .expect(PAGEFAULT),
        uhyve("uhyve/crash/ud", "crash", &["ud"])
            .status(EXCEPTION)
            .expect(INVALID_OPCODE),
        uhyve("uhyve/crash/irq", "crash", &["irq"])
            .status(PANIC)
            .expect(&[
                "deliberate panic in the timer interrupt handler",
                "--- irq stack ends",
                "crash::panic_in_timer_interrupt",
            ]),
    ]
    .into_iter()
    // Every model at the default tick. (Not hz=250: on a software KVM each timer
    // interrupt costs milliseconds, so a 4 ms tick leaves tasks almost no time.)
    .chain(PREEMPT_MODELS.iter().map(|m| {
        uhyve(&format!("uhyve/selftest/{}", m.name), "selftest", m.args).expect(SELFTEST_MODEL)
    }))
    .chain(smp_cases())
    .collect()
}

/// SMP on uhyve (`-c N`: uhyve starts every CPU at the entry, the image releases the
/// others): selftest's SMP checks on 2 CPUs and on 4 under every preemption model, a
/// short migration stress run, and a panic on both CPUs. Few and short: on a software
/// KVM each is seconds.
fn smp_cases() -> Vec<Case> {
    let selftest = |smp: &str, cpus: u32, model: &str, args: &[&str]| {
        uhyve(&format!("uhyve/{smp}/selftest/{model}"), "selftest", args)
            .arg(format!("expect-cpus={cpus}"))
            .smp(cpus)
            .expect(SELFTEST_SMP)
    };
    // Each 4-CPU run is ~15 s on a quiet host (tens of seconds on a busy one).
    let mut cases = vec![selftest("smp2", 2, "none", &["preempt=none"])];
    cases.extend(
        PREEMPT_MODELS
            .iter()
            .map(|m| selftest("smp4", 4, m.name, m.args)),
    );
    cases.extend([
        uhyve(
            "uhyve/smp2/smpstress/full",
            "smpstress",
            // Few and short: on the software KVM every ring-0 instruction (each IPI,
            // each timer write) is emulated.
            &["preempt=full", "tasks=4", "rounds=4", "lock_ops=32"],
        )
        .smp(2)
        .bounds(STRESS_CLEAN)
        .expect(&["smpstress: cpus=2", "smpstress: ok"]),
        uhyve(
            "uhyve/smp2/crash/panic-on-every-cpu",
            "crash",
            &["smp-panic"],
        )
        .smp(2)
        .status(PANIC)
        .expect(SMP_PANIC)
        .at_most_once(SMP_PANIC_ONCE),
    ]);
    cases
}
