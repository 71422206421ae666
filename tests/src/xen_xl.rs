//! Xen in QEMU, the app as a domU that a Linux dom0 starts with `xl create` (the
//! users' path): boot, the toolstack's shutdown, reboot and `mem-set`, large domains,
//! the destroy-on-timeout, crashes, the preemptible-hypercall latency proof with
//! wall-clock bounds, every preemption model on 2 and 4 vCPUs.

use crate::expect::{BUG, WITHIN};
use crate::model::{LATENCY_MODELS, NONE};
use crate::xen_dom0::{HELLO_XEN, SELFTEST_XEN};
use crate::{Bed, Bound, Case, PANIC, XL_MEMORY_MB, XlAction, XlBed, case};

/// The latency load as an xl domU of [`XL_LATENCY_MEMORY_MB`]: the balloon's default
/// (5/8 of the heap, ~470 MiB) makes each hypercall span ~16 ticks at hz=100 (~160 ms
/// under TCG). Multi-threaded TCG cannot count instructions, so these bounds are
/// wall-clock ones: a 10 ms tick leaves a vCPU thread 20 ms of host scheduling delay
/// before a sample counts as late.
const XL_BALLOON: &[&str] = &["hz=100", "load=balloon", "samples=60"];
/// [`XL_BALLOON`] with fewer samples, the sampler woken by an event channel.
const XL_BALLOON_EVENT_WOKEN: &[&str] = &["hz=100", "load=balloon", "samples=30", "wake=event"];
/// The same with the bug: each sample waits out a whole hypercall.
const XL_BALLOON_BUG: &[&str] = &[
    "hz=100",
    "load=balloon",
    "samples=10",
    "hcall_resched=model",
];

/// Memory of the xl latency domains (room for a balloon long enough to matter).
const XL_LATENCY_MEMORY_MB: u32 = 768;

/// An xl domU of `memory_mb` on which dom0 runs `actions`, destroyed after
/// `timeout_secs` (`None`: the runner's default).
fn xl_bed(memory_mb: u32, actions: &'static [XlAction], timeout_secs: Option<u32>) -> Bed {
    Bed::XenXlWith(XlBed {
        memory_mb,
        actions,
        timeout_secs,
    })
}

/// A case as an xl domU on `bed`.
fn xl(name: &str, app: &'static str, args: &[&str], bed: Bed) -> Case {
    case(name, app, args).on(bed)
}

/// The cases as xl domUs.
pub fn cases() -> Vec<Case> {
    let latency_bed = xl_bed(XL_LATENCY_MEMORY_MB, &[], None);
    let mut cases = vec![
        xl("xen/xl/hello", "hello", &["a", "b c"], Bed::XenXl).expect(HELLO_XEN),
        xl(
            "xen/xl/selftest",
            "selftest",
            &["preempt=dynamic:none"],
            Bed::XenXl,
        )
        .expect(SELFTEST_XEN),
        xl(
            "xen/xl/xl-shutdown",
            "sleeper",
            &[],
            xl_bed(
                XL_MEMORY_MB,
                &[XlAction {
                    command: "shutdown",
                    args: "",
                    when: "sleeper: ready",
                }],
                None,
            ),
        )
        .expect(&[
            "sleeper: ready",
            "the toolstack asked for `poweroff`",
            "upcall: exit status 0",
        ]),
        xl(
            "xen/xl/xl-reboot",
            "sleeper",
            &[],
            xl_bed(
                XL_MEMORY_MB,
                &[XlAction {
                    command: "reboot",
                    args: "",
                    when: "sleeper: ready",
                }],
                None,
            ),
        )
        .expect(&[
            "sleeper: ready",
            "the toolstack asked for `reboot`",
            "upcall: exit status 0",
        ]),
        xl(
            &format!("xen/xl/latency/model-resched-bug-detected/{}", NONE.name),
            "latency",
            NONE.args,
            latency_bed,
        )
        .args(XL_BALLOON_BUG)
        .bounds(BUG),
        // `xl mem-set` down, then back up once the balloon reports the target reached;
        // then the app allocates more than fits in the smaller domain.
        xl(
            "xen/xl/xl-mem-set-down-and-up",
            "sleeper",
            &["8", "80"],
            xl_bed(
                XL_MEMORY_MB,
                &[
                    XlAction {
                        command: "mem-set",
                        args: "64",
                        when: "sleeper: ready",
                    },
                    XlAction {
                        command: "mem-set",
                        args: "128",
                        when: "balloon: target 65536 KiB, now 65536 KiB",
                    },
                ],
                None,
            ),
        )
        .expect(&[
            "sleeper: ready",
            "balloon: target 65536 KiB, now 65536 KiB (16384 pages ballooned out)",
            "balloon: target 131072 KiB, now 131072 KiB (0 pages ballooned out)",
            "sleeper: allocated, wrote and read back 80 MiB",
            "sleeper: done",
        ]),
        // Without the way back up, the same allocation fails: the test above can fail.
        xl(
            "xen/xl/xl-mem-set-down-only",
            "sleeper",
            &["8", "80"],
            xl_bed(
                XL_MEMORY_MB,
                &[XlAction {
                    command: "mem-set",
                    args: "64",
                    when: "sleeper: ready",
                }],
                None,
            ),
        )
        .status(1)
        .expect(&[
            "balloon: target 65536 KiB, now 65536 KiB (16384 pages ballooned out)",
            "sleeper: cannot allocate 80 MiB",
        ]),
        // All of a domain larger than 1 GiB (more L2 tables) is mapped and usable.
        xl(
            "xen/xl/selftest-2304MiB",
            "selftest",
            &["touch-heap"],
            xl_bed(2304, &[], None),
        )
        .expect(&["RAM 2304 MiB", "selftest on xen", " passed, 0 failed"])
        .bounds(&[("heap_touched_top_mib", Bound::AtLeast(2048))]),
        // A domain that does not end is destroyed at its timeout and reported as 125;
        // the domains after it in the same dom0 boot still run. Before it is destroyed,
        // the hang dump shows its tasks (`sched::dump` on VIRQ_DEBUG): `main` asleep.
        xl(
            "xen/xl/timeout-destroys-and-reports-125",
            "sleeper",
            &[],
            xl_bed(XL_MEMORY_MB, &[], Some(8)),
        )
        .status(125)
        .expect(&[
            "sleeper: ready",
            "did not end within 8 s; destroying it",
            "sched dump at",
            "task 1 main: Blocked",
            "1 sleepers, the first task 1 due in",
        ]),
        xl("xen/xl/crash/task", "crash", &["task"], Bed::XenXl)
            .status(PANIC)
            .expect(&["deliberate panic 3 calls deep", "crash::crash_inner"]),
        xl(
            "xen/xl/crash/task-overflow",
            "crash",
            &["task-overflow"],
            Bed::XenXl,
        )
        .status(PANIC)
        .expect(&["stack overflow in task", "crash::overflow_task_stack"]),
    ];
    // As an xl domU the bound is a wall-clock one (multi-threaded TCG cannot count
    // instructions): see [`XL_BALLOON`].
    for (load, args) in [
        ("balloon-event", XL_BALLOON_EVENT_WOKEN),
        ("balloon", XL_BALLOON),
    ] {
        for m in LATENCY_MODELS {
            cases.push(
                xl(
                    &format!("xen/xl/latency/{load}/{}", m.name),
                    "latency",
                    m.args,
                    latency_bed,
                )
                .args(args)
                .bounds(WITHIN)
                .wall_clock()
                .expect(&["data intact", "max_wake_latency_ticks="]),
            );
        }
    }
    cases.extend(smp_cases());
    cases
}

/// Secondary vCPUs in an xl domU (pinned to QEMU CPUs 1..=N, dom0 on CPU 0):
/// selftest's SMP checks under every preemption model on 2 and 4 vCPUs and the
/// migration stress test on 2. Named `xen/xl/smp2/…` (`smp4`) so both `--filter xen`
/// and `--filter smp` pick them.
fn smp_cases() -> Vec<Case> {
    crate::xen_dom0::xen_smp("xen/xl/", Bed::XenXl)
}
