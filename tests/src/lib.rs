//! Upcall's integration tests, as data.
//!
//! Each [`Case`] names an app, its arguments, the test bed to boot it on and what the
//! run must show. `cargo xtask test` builds the images, boots each case on the real
//! VMM and judges the result with [`check`]. Keeping the cases here (not in xtask)
//! keeps "what is tested" apart from "how it is run", and lets [`check`] be unit-tested.
#![forbid(unsafe_code)]

pub mod libvirt;
pub mod net;
/// httpd's generated file (the same source file as the app's), for comparisons.
#[path = "../../apps/httpd/src/pattern.rs"]
pub mod pattern;

/// How a KVM-platform image is booted under QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `-M microvm`: no firmware, fastest.
    Microvm,
    /// `-M pc` with the qboot firmware.
    PcQboot,
    /// `-M pc` with the default SeaBIOS.
    PcSeabios,
}

/// Where a case boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bed {
    /// QEMU with this machine type (TCG or KVM as the host allows).
    Qemu(Machine),
    /// uhyve (needs /dev/kvm).
    Uhyve,
    /// Xen in QEMU, the app as dom0 (the fast path).
    XenDom0,
    /// Xen in QEMU, the app as a domU started with `xl create` from a Linux dom0, with
    /// [`XL_MEMORY_MB`].
    XenXl,
    /// As [`Bed::XenXl`], with this memory and these toolstack actions.
    XenXlWith(XlBed),
}

/// An xl domU's memory (MiB) unless a case says otherwise.
pub const XL_MEMORY_MB: u32 = 128;

/// How an xl domU is set up and driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XlBed {
    /// The domain's memory in MiB.
    pub memory_mb: u32,
    /// Toolstack commands dom0 runs on the domain, in order.
    pub actions: &'static [XlAction],
    /// Seconds after which dom0 destroys the domain (its status is then 125); `None`:
    /// the runner's default.
    pub timeout_secs: Option<u32>,
}

/// A toolstack command dom0 runs as `xl <command> <domain> <args>` once the app's
/// console shows `when` (and the previous action ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XlAction {
    /// `shutdown`, `reboot` or `mem-set`.
    pub command: &'static str,
    /// Arguments after the domain name.
    pub args: &'static str,
    /// Console text to wait for.
    pub when: &'static str,
}

impl Bed {
    /// Whether the case boots as an `xl create`d domU.
    pub fn is_xl(self) -> bool {
        matches!(self, Bed::XenXl | Bed::XenXlWith(_))
    }
}

/// One integration test.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique, printed name.
    pub name: String,
    /// App under `apps/`.
    pub app: &'static str,
    /// Built with `--release`.
    pub release: bool,
    /// The app's command line (words after `--`).
    pub args: &'static [&'static str],
    /// Where it boots.
    pub bed: Bed,
    /// The app's exit status.
    pub status: i32,
    /// Substrings that must appear in the (symbolized) console output, in this order.
    pub expect: &'static [&'static str],
    /// Numbers printed as `key=N` that must lie within bounds.
    pub bounds: &'static [(&'static str, Bound)],
    /// Run QEMU with `-icount` (virtual time follows executed instructions, not the
    /// host's clock): timing bounds then judge the guest alone, whatever else the
    /// host is busy with. QEMU beds only (KVM-platform QEMU and Xen dom0).
    pub icount: bool,
    /// Virtual CPUs (QEMU `-smp`); 1 for every single-CPU case.
    pub smp: u32,
    /// Substrings that may appear at most once (a report printed once, not per CPU).
    pub at_most_once: &'static [&'static str],
}

/// A bound on a number the guest prints as `key=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// N ≤ this.
    AtMost(u64),
    /// N ≥ this.
    AtLeast(u64),
}

/// Exit status of a panic (`libos::panic::PANIC_EXIT_CODE`).
pub const PANIC: i32 = 101;
/// Exit status of a fatal CPU exception (`libos::trap::EXCEPTION_EXIT_CODE`).
pub const EXCEPTION: i32 = 102;

fn case(name: &str, app: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        name: name.to_string(),
        app,
        release: false,
        args,
        bed: Bed::Qemu(Machine::Microvm),
        status: 0,
        expect: &[],
        bounds: &[],
        icount: false,
        smp: 1,
        at_most_once: &[],
    }
}

impl Case {
    fn on(mut self, machine: Machine) -> Self {
        self.bed = Bed::Qemu(machine);
        self
    }
    fn uhyve(mut self) -> Self {
        self.bed = Bed::Uhyve;
        self
    }
    fn release(mut self) -> Self {
        self.release = true;
        self
    }
    fn status(mut self, status: i32) -> Self {
        self.status = status;
        self
    }
    fn bounds(mut self, bounds: &'static [(&'static str, Bound)]) -> Self {
        self.bounds = bounds;
        self
    }
    fn expect(mut self, expect: &'static [&'static str]) -> Self {
        self.expect = expect;
        self
    }
    fn icount(mut self) -> Self {
        self.icount = true;
        self
    }
    fn smp(mut self, cpus: u32) -> Self {
        self.smp = cpus;
        self
    }
    fn at_most_once(mut self, once: &'static [&'static str]) -> Self {
        self.at_most_once = once;
        self
    }
}

const HELLO: &[&str] = &["Hello from Upcall on kvm"];
const SELFTEST: &[&str] = &["selftest on kvm", " passed, 0 failed"];

/// The cases for the KVM platform on QEMU.
pub fn kvm_qemu_cases() -> Vec<Case> {
    [
        case("hello/microvm", "hello", &[]).expect(HELLO),
        case("hello/args", "hello", &["a", "b c"]).expect(&["arg[0] = a", "arg[1] = b c"]),
        case("hello/pc-qboot", "hello", &[]).on(Machine::PcQboot).expect(HELLO),
        case("hello/pc-seabios", "hello", &[]).on(Machine::PcSeabios).expect(HELLO),
        case("hello/release", "hello", &["x"]).release().expect(&["Hello from Upcall on kvm", "arg[0] = x"]),
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

/// SMP on QEMU (`-smp N`, TCG `thread=multi`): `selftest` with its SMP checks under
/// every preemption model on 2 and 4 CPUs, the migration stress test, and the latency
/// proof on 2 CPUs. (`expect-cpus=N` makes selftest check that all N came online.)
pub fn smp_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (cpus, expect) in [(2, "expect-cpus=2"), (4, "expect-cpus=4")] {
        for &(name, args) in PREEMPT_MODELS.iter().filter(|(n, _)| !n.contains("hz=")) {
            let model = name.trim_start_matches("selftest/");
            let args: &'static [&'static str] = Vec::leak([args, &[expect]].concat());
            cases.push(
                case(&format!("smp{cpus}/selftest/{model}"), "selftest", args)
                    .smp(cpus)
                    .expect(SELFTEST_SMP),
            );
        }
    }
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
    for (cpus, model) in [
        (2, "none"),
        (2, "voluntary"),
        (2, "full"),
        (2, "dynamic"),
        (4, "none"),
        (4, "full"),
    ] {
        let args: &'static [&'static str] =
            Vec::leak(vec![&*String::leak(format!("preempt={model}"))]);
        cases.push(
            case(&format!("smp{cpus}/smpstress/{model}"), "smpstress", args)
                .smp(cpus)
                .bounds(STRESS_CLEAN)
                .expect(&["smpstress: ok"]),
        );
    }
    // The per-CPU flag bug reproduced (Bilse, "Updates to Xen hypercall preemption",
    // xen-devel, 2023-06-21: the flag stays with the CPU): the stress test sees it.
    cases.push(
        case(
            "smp2/smpstress/cpu-flag-bug-detected",
            "smpstress",
            &["preempt=full", "hcall_resched=cpuflag"],
        )
        .smp(2)
        .status(1)
        .bounds(&[("flag_errors", Bound::AtLeast(1))])
        .expect(&["smpstress: FAILED"]),
    );
    // A task moved to another CPU between the local flush of a new stack's guard page
    // and the shootdown (a test hook moves it, as preemption could, unless it is
    // pinned there): the stack's guard page must still fault on that CPU.
    for cpus in [2, 4] {
        cases.push(
            case(
                &format!("smp{cpus}/crash/guard-page-faults-after-migration"),
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
    for cpus in [2, 4] {
        cases.push(
            case(
                &format!("smp{cpus}/crash/panic-on-every-cpu"),
                "crash",
                &["smp-panic"],
            )
            .smp(cpus)
            .status(PANIC)
            .expect(SMP_PANIC)
            .at_most_once(SMP_PANIC_ONCE),
        );
    }
    cases.extend(
        latency_cases()
            .into_iter()
            .filter(|c| {
                c.name.starts_with("latency/section/")
                    || c.name == "latency/model-resched-bug-detected/none"
            })
            .map(|c| {
                // Still under `-icount` (the single-CPU cases' `.icount()`): QEMU then
                // runs both vCPUs round-robin on one host thread and switches at every
                // virtual-timer deadline, so a wake-up's lateness is counted in guest
                // instructions, not in how long a vCPU thread waited for a host core.
                // (Wall-clock runs on multi-threaded TCG showed 3-10+ tick outliers
                // whenever other QEMUs loaded this 2-core host.) Cross-CPU wake-ups
                // still go by reschedule IPI between the two vCPUs.
                Case {
                    name: format!("smp2/{}", c.name),
                    ..c
                }
                .smp(2)
            }),
    );
    cases
}

/// The stress test found nothing wrong, and tasks did migrate inside their sections.
const STRESS_CLEAN: &[(&str, Bound)] = &[
    ("flag_errors", Bound::AtMost(0)),
    ("data_errors", Bound::AtMost(0)),
    ("section_migrations", Bound::AtLeast(1)),
    ("migrations", Bound::AtLeast(1)),
    ("lock_ops", Bound::AtLeast(1)),
    ("lock_errors", Bound::AtMost(0)),
];

const SELFTEST_SMP: &[&str] = &[
    "CPUs online",
    "ok   smp: every CPU came online",
    "ok   smp: every CPU runs one of N tasks that wait for each other",
    "ok   smp: those wake-ups went by reschedule IPI",
    " passed, 0 failed",
];

/// The cases for uhyve: the same image as on QEMU, entered through hermit-entry.
pub fn uhyve_cases() -> Vec<Case> {
    let crash = |mode: &'static [&'static str], status, expect| {
        case(&format!("uhyve/crash/{}", mode[0]), "crash", mode)
            .uhyve()
            .status(status)
            .expect(expect)
    };
    [
        case("uhyve/hello", "hello", &[]).uhyve().expect(HELLO),
        case("uhyve/hello/args", "hello", &["a", "b c"])
            .uhyve()
            .expect(&["arg[0] = a", "arg[1] = b c"]),
        case("uhyve/hello/release", "hello", &[])
            .uhyve()
            .release()
            .expect(HELLO),
        crash(
            &["task"],
            PANIC,
            &[
                "deliberate panic 3 calls deep",
                "crash::crash_inner",
                "crash::main",
                "kvm_uhyve_main",
            ],
        ),
        crash(
            &["pagefault"],
            EXCEPTION,
            &[
                "#PF page fault",
                "cr2=0x00007fffdead0000",
                "crash::read_unmapped",
            ],
        ),
        crash(
            &["ud"],
            EXCEPTION,
            &["#UD invalid opcode", "crash::invalid_opcode"],
        ),
        crash(
            &["irq"],
            PANIC,
            &[
                "deliberate panic in the timer interrupt handler",
                "--- irq stack ends",
                "crash::panic_in_timer_interrupt",
            ],
        ),
    ]
    .into_iter()
    // Every model at the default tick. (Not hz=250: on a software KVM each timer
    // interrupt costs milliseconds, so a 4 ms tick leaves tasks almost no time.)
    .chain(
        PREEMPT_MODELS
            .iter()
            .filter(|(name, _)| !name.contains("hz="))
            .map(|&(name, arg)| {
                case(&format!("uhyve/{name}"), "selftest", arg)
                    .uhyve()
                    .expect(SELFTEST_MODEL)
            }),
    )
    .chain(uhyve_smp_cases())
    .collect()
}

/// SMP on uhyve (`-c N`: uhyve starts every CPU at the entry, the image releases the
/// others): selftest's SMP checks on 2 CPUs and on 4 under every preemption model, a
/// short migration stress run, and a panic on both CPUs. Few and short: on a software
/// KVM each is seconds.
fn uhyve_smp_cases() -> Vec<Case> {
    let selftest = |cpus: u32, model: &str, args: &'static [&'static str]| {
        let args: &'static [&'static str] =
            Vec::leak([args, &[&*String::leak(format!("expect-cpus={cpus}"))]].concat());
        case(
            &format!("uhyve/smp{cpus}/selftest/{model}"),
            "selftest",
            args,
        )
        .uhyve()
        .smp(cpus)
        .expect(SELFTEST_SMP)
    };
    // Each 4-CPU run is ~15 s on a quiet host (tens of seconds on a busy one).
    let mut cases = vec![selftest(2, "none", &["preempt=none"])];
    cases.extend(
        PREEMPT_MODELS
            .iter()
            .filter(|(n, _)| !n.contains("hz="))
            .map(|&(name, args)| selftest(4, name.trim_start_matches("selftest/"), args)),
    );
    cases.extend([
        case(
            "uhyve/smp2/smpstress/full",
            "smpstress",
            // Few and short: on the software KVM every ring-0 instruction (each IPI,
            // each timer write) is emulated.
            &["preempt=full", "tasks=4", "rounds=4", "lock_ops=32"],
        )
        .uhyve()
        .smp(2)
        .bounds(STRESS_CLEAN)
        .expect(&["smpstress: cpus=2", "smpstress: ok"]),
        case(
            "uhyve/smp2/crash/panic-on-every-cpu",
            "crash",
            &["smp-panic"],
        )
        .uhyve()
        .smp(2)
        .status(PANIC)
        .expect(SMP_PANIC)
        .at_most_once(SMP_PANIC_ONCE),
    ]);
    cases
}

/// The cases for the Xen platform: as dom0 (every preemption model) and as an `xl`
/// domU (the users' path).
pub fn xen_cases() -> Vec<Case> {
    let on = |name: &str, app: &'static str, args: &'static [&'static str], bed: Bed| {
        let mut c = case(name, app, args);
        c.bed = bed;
        c
    };
    let hello: &'static [&'static str] =
        &["Hello from Upcall on xen", "arg[0] = a", "arg[1] = b c"];
    // With the backend's own checks (the grant table: a page granted to dom0, read
    // back and revoked).
    let selftest: &'static [&'static str] = &[
        "selftest on xen",
        "ok   xen: grant table: 4 frames, 2048 entries",
        "ok   xen: grant a page to dom0",
        "ok   xen: revoke the grant",
        "preemption model: ",
        " passed, 0 failed",
    ];
    let mut cases = vec![
        on("xen/dom0/hello", "hello", &["a", "b c"], Bed::XenDom0).expect(hello),
        // Xen PV has no IST: libos's stack check reports the overflow before the guard
        // page (which would end the domain without a word).
        on(
            "xen/dom0/crash/task-overflow",
            "crash",
            &["task-overflow"],
            Bed::XenDom0,
        )
        .status(PANIC)
        .expect(&["stack overflow in task", "crash::overflow_task_stack"]),
        on("xen/dom0/crash/task", "crash", &["task"], Bed::XenDom0)
            .status(PANIC)
            .expect(&[
                "deliberate panic 3 calls deep",
                "crash::crash_inner",
                "crash::main",
                "xen_pv_main",
            ]),
        on("xen/dom0/crash/oom", "crash", &["oom"], Bed::XenDom0)
            .status(PANIC)
            .expect(&[
                "memory allocation of 1048576 bytes failed",
                "crash::exhaust_heap",
                "crash::main",
            ]),
        on(
            "xen/dom0/crash/pagefault",
            "crash",
            &["pagefault"],
            Bed::XenDom0,
        )
        .status(EXCEPTION)
        .expect(&[
            "#PF page fault",
            "cr2=0x00007fffdead0000",
            "crash::read_unmapped",
        ]),
        on("xen/dom0/crash/ud", "crash", &["ud"], Bed::XenDom0)
            .status(EXCEPTION)
            .expect(&["#UD invalid opcode", "crash::invalid_opcode"]),
        on(
            "xen/dom0/crash/sched-in-irq-refused",
            "crash",
            &["sched-in-irq"],
            Bed::XenDom0,
        )
        .status(PANIC)
        .expect(SCHED_IN_IRQ),
        on("xen/dom0/crash/irq", "crash", &["irq"], Bed::XenDom0)
            .status(PANIC)
            .expect(&[
                "deliberate panic in the timer interrupt handler",
                "upcall_xen::events::upcall",
                "--- irq stack ends",
                "crash::panic_in_timer_interrupt",
            ]),
        on(
            "xen/dom0/crash/untraced-irq",
            "crash",
            &["untraced-irq"],
            Bed::XenDom0,
        )
        .status(PANIC)
        .expect(&[
            "interrupts were enabled without trace_hardirqs_on",
            "crash::spin_for_interrupts",
        ]),
        on("xen/xl/hello", "hello", &["a", "b c"], Bed::XenXl).expect(hello),
        on(
            "xen/xl/selftest",
            "selftest",
            &["preempt=dynamic:none"],
            Bed::XenXl,
        )
        .expect(selftest),
        on(
            "xen/xl/xl-shutdown",
            "sleeper",
            &[],
            xl_then(&[XlAction {
                command: "shutdown",
                args: "",
                when: "sleeper: ready",
            }]),
        )
        .expect(&[
            "sleeper: ready",
            "the toolstack asked for `poweroff`",
            "upcall: exit status 0",
        ]),
        on(
            "xen/xl/xl-reboot",
            "sleeper",
            &[],
            xl_then(&[XlAction {
                command: "reboot",
                args: "",
                when: "sleeper: ready",
            }]),
        )
        .expect(&[
            "sleeper: ready",
            "the toolstack asked for `reboot`",
            "upcall: exit status 0",
        ]),
        on(
            "xen/xl/latency/model-resched-bug-detected/none",
            "latency",
            args(&["preempt=none"], XL_BALLOON_BUG),
            xl_latency_bed(),
        )
        .bounds(BUG),
        // `xl mem-set` down, then back up once the balloon reports the target reached;
        // then the app allocates more than fits in the smaller domain.
        on(
            "xen/xl/xl-mem-set-down-and-up",
            "sleeper",
            &["8", "80"],
            xl_then(&[
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
            ]),
        )
        .expect(&[
            "sleeper: ready",
            "balloon: target 65536 KiB, now 65536 KiB (16384 pages ballooned out)",
            "balloon: target 131072 KiB, now 131072 KiB (0 pages ballooned out)",
            "sleeper: allocated, wrote and read back 80 MiB",
            "sleeper: done",
        ]),
        // Without the way back up, the same allocation fails: the test above can fail.
        on(
            "xen/xl/xl-mem-set-down-only",
            "sleeper",
            &["8", "80"],
            xl_then(&[XlAction {
                command: "mem-set",
                args: "64",
                when: "sleeper: ready",
            }]),
        )
        .status(1)
        .expect(&[
            "balloon: target 65536 KiB, now 65536 KiB (16384 pages ballooned out)",
            "sleeper: cannot allocate 80 MiB",
        ]),
        // All of a domain larger than 1 GiB (more L2 tables) is mapped and usable.
        on(
            "xen/xl/selftest-2304MiB",
            "selftest",
            &["touch-heap"],
            Bed::XenXlWith(XlBed {
                memory_mb: 2304,
                actions: &[],
                timeout_secs: None,
            }),
        )
        .expect(&["RAM 2304 MiB", "selftest on xen", " passed, 0 failed"])
        .bounds(&[("heap_touched_top_mib", Bound::AtLeast(2048))]),
        // A domain that does not end is destroyed at its timeout and reported as 125;
        // the domains after it in the same dom0 boot still run.
        on(
            "xen/xl/timeout-destroys-and-reports-125",
            "sleeper",
            &[],
            Bed::XenXlWith(XlBed {
                memory_mb: XL_MEMORY_MB,
                actions: &[],
                timeout_secs: Some(8),
            }),
        )
        .status(125)
        .expect(&["sleeper: ready", "did not end within 8 s; destroying it"]),
        on("xen/xl/crash/task", "crash", &["task"], Bed::XenXl)
            .status(PANIC)
            .expect(&["deliberate panic 3 calls deep", "crash::crash_inner"]),
        on(
            "xen/xl/crash/task-overflow",
            "crash",
            &["task-overflow"],
            Bed::XenXl,
        )
        .status(PANIC)
        .expect(&["stack overflow in task", "crash::overflow_task_stack"]),
    ];
    // Preemptible hypercalls: balloon 24 MiB out and in, each a single long hypercall
    // (about 27 ticks at hz=100 under `-icount`), while a high-priority task measures
    // its wake-up latency, under every model and across a run-time switch.
    for &(m, model) in LATENCY_MODELS {
        cases.push(
            on(
                &format!("xen/dom0/latency/balloon/{m}"),
                "latency",
                args(model, DOM0_BALLOON),
                Bed::XenDom0,
            )
            .icount()
            .bounds(WITHIN)
            .expect(&["data intact", "max_wake_latency_ticks="]),
        );
    }
    // The same with the sampler woken by a non-timer event channel's bottom half, or by
    // a notify callback: its wake-up lands while the balloon hypercall runs.
    for wake in ["event", "notify"] {
        for &(m, model) in LATENCY_MODELS {
            cases.push(
                on(
                    &format!("xen/dom0/latency/balloon-{wake}/{m}"),
                    "latency",
                    args(model, wake_args(wake, DOM0_BALLOON_EVENT)),
                    Bed::XenDom0,
                )
                .icount()
                .bounds(WITHIN)
                .expect(&["data intact", "max_wake_latency_ticks="]),
            );
        }
    }
    for &(m, model) in LATENCY_MODELS {
        cases.push(
            on(
                &format!("xen/xl/latency/balloon-event/{m}"),
                "latency",
                args(model, wake_args("event", XL_BALLOON_EVENT)),
                xl_latency_bed(),
            )
            .bounds(WITHIN)
            .expect(&["data intact", "max_wake_latency_ticks="]),
        );
    }
    // As an xl domU the bound is a wall-clock one (multi-threaded TCG cannot count
    // instructions): see [`XL_BALLOON`].
    for &(m, model) in LATENCY_MODELS {
        cases.push(
            on(
                &format!("xen/xl/latency/balloon/{m}"),
                "latency",
                args(model, XL_BALLOON),
                xl_latency_bed(),
            )
            .bounds(WITHIN)
            .expect(&["data intact", "max_wake_latency_ticks="]),
        );
    }
    for &(m, model) in BUG_MODELS {
        cases.push(
            on(
                &format!("xen/dom0/latency/model-resched-bug-detected/{m}"),
                "latency",
                args(model, DOM0_BALLOON_BUG),
                Bed::XenDom0,
            )
            .icount()
            .bounds(BUG),
        );
    }
    cases.push(
        on(
            "xen/dom0/latency/untraced-irqs-on-detected",
            "latency",
            &[
                "preempt=none",
                "hz=500",
                "load=balloon",
                "balloon_mib=40",
                "hcall_resched=untraced",
            ],
            Bed::XenDom0,
        )
        .status(PANIC)
        .expect(UNTRACED),
    );
    cases.extend(
        PREEMPT_MODELS
            .iter()
            .filter(|(n, _)| !n.contains("hz="))
            .map(|&(name, arg)| {
                on(&format!("xen/dom0/{name}"), "selftest", arg, Bed::XenDom0).expect(selftest)
            }),
    );
    cases.extend(xen_smp_cases());
    cases
}

/// Secondary vCPUs on Xen PV: selftest's SMP checks under every preemption
/// model on 2 and 4 vCPUs and the migration stress test on 2, each as dom0 and as an
/// xl domU; as dom0 also the per-CPU flag bug caught and a panic on every vCPU at once
/// (halt-all by `VCPUOP_down`). Named `xen/…/smp2/…` (`smp4`) so both `--filter xen`
/// and `--filter smp` pick them.
fn xen_smp_cases() -> Vec<Case> {
    let on = |name: String, app: &'static str, args: &'static [&'static str], bed: Bed| {
        let mut c = case(&name, app, args).smp(2);
        c.bed = bed;
        c
    };
    // selftest under every model with 2 and 4 vCPUs, as dom0 and as an xl domU
    // (vCPUs pinned to QEMU CPUs 1..=N, dom0 on CPU 0).
    let mut cases = Vec::new();
    for (bed_name, bed) in [("dom0", Bed::XenDom0), ("xl", Bed::XenXl)] {
        for cpus in [2, 4] {
            let expect: &'static str = String::leak(format!("expect-cpus={cpus}"));
            cases.extend(
                PREEMPT_MODELS
                    .iter()
                    .filter(|(n, _)| !n.contains("hz="))
                    .map(|&(name, args)| {
                        let model = name.trim_start_matches("selftest/");
                        on(
                            format!("xen/{bed_name}/smp{cpus}/selftest/{model}"),
                            "selftest",
                            Vec::leak([args, &[expect]].concat()),
                            bed,
                        )
                        .smp(cpus)
                        .expect(SELFTEST_SMP)
                    }),
            );
        }
    }
    for model in ["none", "full"] {
        let args: &'static [&'static str] =
            Vec::leak(vec![&*String::leak(format!("preempt={model}"))]);
        cases.push(
            on(
                format!("xen/dom0/smp2/smpstress/{model}"),
                "smpstress",
                args,
                Bed::XenDom0,
            )
            .bounds(STRESS_CLEAN)
            .expect(&["smpstress: ok"]),
        );
        cases.push(
            on(
                format!("xen/xl/smp2/smpstress/{model}"),
                "smpstress",
                args,
                Bed::XenXl,
            )
            .bounds(STRESS_CLEAN)
            .expect(&["smpstress: ok"]),
        );
    }
    // The per-CPU flag bug (Bilse, xen-devel, 2023-06-21) reproduced on Xen (the flag
    // stays with the vCPU): caught.
    cases.push(
        on(
            "xen/dom0/smp2/smpstress/cpu-flag-bug-detected".into(),
            "smpstress",
            &["preempt=full", "hcall_resched=cpuflag"],
            Bed::XenDom0,
        )
        .status(1)
        .bounds(&[("flag_errors", Bound::AtLeast(1))])
        .expect(&["smpstress: FAILED"]),
    );
    cases.push(
        on(
            "xen/dom0/smp2/crash/panic-on-every-cpu".into(),
            "crash",
            &["smp-panic"],
            Bed::XenDom0,
        )
        .status(PANIC)
        .expect(&["2 CPUs online", "deliberate panic on CPU", "backtrace:"])
        .at_most_once(&["panicked at", "backtrace:", "panic while panicking"]),
    );
    cases
}

/// An xl domU of [`XL_MEMORY_MB`] on which dom0 runs `actions`.
fn xl_then(actions: &'static [XlAction]) -> Bed {
    Bed::XenXlWith(XlBed {
        memory_mb: XL_MEMORY_MB,
        actions,
        timeout_secs: None,
    })
}

/// The latency proof's settings: every model, and a run-time switch under dynamic.
pub const LATENCY_MODELS: &[(&str, &[&str])] = &[
    ("none", &["preempt=none"]),
    ("voluntary", &["preempt=voluntary"]),
    ("full", &["preempt=full"]),
    ("dynamic:none", &["preempt=dynamic:none"]),
    ("dynamic:voluntary", &["preempt=dynamic:voluntary"]),
    ("dynamic:full", &["preempt=dynamic:full"]),
    (
        "dynamic-switch-to-none",
        &["preempt=dynamic:full", "switch=none"],
    ),
];

/// The models under which the model-following reschedule bug must show (Gleixner,
/// "entry: Pass pt_regs to irqentry_exit_cond_resched()", LKML, 2022-08-09; their
/// interrupt exit does not
/// preempt).
const BUG_MODELS: &[(&str, &[&str])] = &[
    ("none", &["preempt=none"]),
    ("dynamic:none", &["preempt=dynamic:none"]),
];

/// `a` then `b`, as case arguments (case lists are built once per test run).
fn args(a: &[&'static str], b: &[&'static str]) -> &'static [&'static str] {
    Vec::leak([a, b].concat())
}

/// The latency load as an xl domU of [`XL_LATENCY_MEMORY_MB`]: the balloon's default
/// (5/8 of the heap, ~470 MiB) makes each hypercall span ~16 ticks at hz=100 (~160 ms
/// under TCG). Multi-threaded TCG cannot count instructions, so these bounds are
/// wall-clock ones: a 10 ms tick leaves a vCPU thread 20 ms of host scheduling delay
/// before a sample counts as late.
const XL_BALLOON: &[&str] = &["hz=100", "load=balloon", "samples=60"];
/// The same with the bug: each sample waits out a whole hypercall.
const XL_BALLOON_BUG: &[&str] = &[
    "hz=100",
    "load=balloon",
    "samples=10",
    "hcall_resched=model",
];

/// Memory of the xl latency domains (room for a balloon long enough to matter).
const XL_LATENCY_MEMORY_MB: u32 = 768;

/// An xl domU of [`XL_LATENCY_MEMORY_MB`].
fn xl_latency_bed() -> Bed {
    Bed::XenXlWith(XlBed {
        memory_mb: XL_LATENCY_MEMORY_MB,
        actions: &[],
        timeout_secs: None,
    })
}

/// The latency proof's bound: a woken high-priority task runs within 2 ticks.
const WITHIN: &[(&str, Bound)] = &[("max_wake_latency_ticks", Bound::AtMost(2))];
/// With the model-following reschedule bug reproduced, the latency grows with the load.
const BUG: &[(&str, Bound)] = &[("max_wake_latency_ticks", Bound::AtLeast(10))];

/// `base` with `wake=WAKE` added (`event` or `notify`).
fn wake_args(wake: &str, base: &[&'static str]) -> &'static [&'static str] {
    let w: &'static str = match wake {
        "event" => "wake=event",
        _ => "wake=notify",
    };
    args(base, &[w])
}

/// [`DOM0_BALLOON`] with fewer samples, for the event-woken variants.
const DOM0_BALLOON_EVENT: &[&str] = &["hz=100", "load=balloon", "balloon_mib=24", "samples=30"];
/// [`XL_BALLOON`] with fewer samples, for the event-woken variant.
const XL_BALLOON_EVENT: &[&str] = &["hz=100", "load=balloon", "samples=30"];

/// The Xen dom0 balloon load under `-icount`: 24 MiB, each hypercall ≥ 20 ticks
/// without preemption at hz=100; 80 samples span about three balloon cycles.
const DOM0_BALLOON: &[&str] = &["hz=100", "load=balloon", "balloon_mib=24", "samples=80"];
/// The same with the bug: each sample waits out a whole hypercall.
const DOM0_BALLOON_BUG: &[&str] = &[
    "hz=100",
    "load=balloon",
    "balloon_mib=24",
    "samples=15",
    "hcall_resched=model",
];

/// The preemptible-section proof on the KVM platform: the latency of a high-priority task
/// while a low-priority one runs long preemptible sections stays within 2 ticks under
/// every model (and across a run-time switch), and with `hcall_resched=model` — Linux's
/// PREEMPT_DYNAMIC bug (Gleixner, LKML, 2022-08-09) — it grows to the section length
/// under `none` and `dynamic:none`.
pub fn latency_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = LATENCY_MODELS
        .iter()
        .map(|&(m, model)| {
            case(
                &format!("latency/section/{m}"),
                "latency",
                args(model, &["load=section"]),
            )
            .icount()
            .bounds(WITHIN)
            .expect(&["max_wake_latency_ticks="])
        })
        .collect();
    // A task woken by a device interrupt's bottom half, or by a notify callback, gets
    // the CPU as fast as a timer-woken one (the event is a self-IPI on a device vector).
    for wake in ["event", "notify"] {
        for &(m, model) in LATENCY_MODELS {
            cases.push(
                case(
                    &format!("latency/section-{wake}/{m}"),
                    "latency",
                    args(model, wake_args(wake, &["load=section", "samples=30"])),
                )
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
    for &(m, model) in BUG_MODELS {
        cases.push(
            case(
                &format!("latency/model-resched-bug-detected/{m}"),
                "latency",
                args(
                    model,
                    &["load=section", "hcall_resched=model", "samples=20"],
                ),
            )
            .icount()
            .bounds(BUG)
            .expect(&["max_wake_latency_ticks="]),
        );
    }
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

/// What the irq-state tracing reports when an exit forgot `trace_hardirqs_on`.
/// What the scheduler's refusal from an interrupt handler prints.
const SCHED_IN_IRQ: &[&str] = &[
    "BUG: scheduling from interrupt context",
    "libos::time::timer_interrupt",
];

const UNTRACED: &[&str] = &[
    "irq-state tracing: interrupts were enabled without trace_hardirqs_on",
    "irqentry_enter",
];

/// `selftest` under every preemption model (each checks that its model behaves as
/// specified, and under dynamic that run-time switches change the behaviour).
fn preemption_cases() -> Vec<Case> {
    PREEMPT_MODELS
        .iter()
        .map(|&(name, arg)| case(name, "selftest", arg).expect(SELFTEST_MODEL))
        .chain([case(
            "selftest/preempt=full-release",
            "selftest",
            &["preempt=full"],
        )
        .release()
        .expect(SELFTEST)])
        .collect()
}

const SELFTEST_MODEL: &[&str] = &["preemption model: ", " passed, 0 failed"];

const PREEMPT_MODELS: &[(&str, &[&str])] = &[
    ("selftest/preempt=none", &["preempt=none"]),
    ("selftest/preempt=voluntary", &["preempt=voluntary"]),
    ("selftest/preempt=full", &["preempt=full"]),
    ("selftest/preempt=dynamic", &["preempt=dynamic"]),
    ("selftest/preempt=dynamic:none", &["preempt=dynamic:none"]),
    (
        "selftest/preempt=dynamic:voluntary",
        &["preempt=dynamic:voluntary"],
    ),
    ("selftest/preempt=dynamic:full", &["preempt=dynamic:full"]),
    ("selftest/hz=250", &["hz=250", "preempt=full"]),
];

/// Cases (by name prefix) that `cargo xtask test` leaves out unless asked
/// (`--known-issues`), each with the open problem that makes it unreliable. A case
/// here is a bug report, not a passing test: fix the problem, then remove the entry.
/// (Empty today: the 2-vCPU latency cases that were here now run under `-icount`.)
pub const KNOWN_ISSUES: &[(&str, &str)] = &[];

/// The open problem behind `name`, if it is a known issue.
pub fn known_issue(name: &str) -> Option<&'static str> {
    KNOWN_ISSUES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|&(_, why)| why)
}

/// A panic on every CPU at once (`crash -- smp-panic`): one report, whole.
const SMP_PANIC: &[&str] = &[
    "deliberate panic on CPU",
    "backtrace:",
    "crash::smp_panic",
    "end of backtrace",
];
/// ... printed once, not once per CPU.
const SMP_PANIC_ONCE: &[&str] = &["panicked at", "backtrace:", "panic while panicking"];

/// Judges one run: `status` is the app's decoded exit status (`None` if the guest ended
/// without reporting one), `output` its symbolized console output.
pub fn check(case: &Case, status: Option<i32>, output: &str) -> Result<(), String> {
    if status != Some(case.status) {
        let got = status.map_or_else(|| "no status (guest died)".to_string(), |s| s.to_string());
        return Err(format!("exit status {got}, want {}", case.status));
    }
    let mut rest = output;
    for want in case.expect {
        match rest.find(want) {
            Some(i) => rest = &rest[i + want.len()..],
            None if output.contains(want) => {
                return Err(format!("`{want}` appears, but out of order"));
            }
            None => return Err(format!("output lacks `{want}`")),
        }
    }
    for want in case.at_most_once {
        let n = output.matches(want).count();
        if n > 1 {
            return Err(format!("`{want}` appears {n} times, want at most once"));
        }
    }
    for &(key, bound) in case.bounds {
        let prefix = format!("{key}=");
        let value = output
            .lines()
            .rev()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(prefix.as_str())?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| format!("output lacks `{key}=N`"))?;
        let ok = match bound {
            Bound::AtMost(max) => value <= max,
            Bound::AtLeast(min) => value >= min,
        };
        if !ok {
            return Err(format!("{key}={value}, want {bound:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let cases = kvm_qemu_cases();
        let cases: Vec<Case> = cases
            .into_iter()
            .chain(uhyve_cases())
            .chain(xen_cases())
            .collect();
        let mut names: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
    }

    #[test]
    fn check_judges_status_order_and_presence() {
        let c = case("t", "x", &[]).expect(&["a", "b"]);
        assert!(check(&c, Some(0), "..a..b..").is_ok());
        assert_eq!(
            check(&c, Some(1), "a b"),
            Err("exit status 1, want 0".into())
        );
        assert_eq!(
            check(&c, None, "a b"),
            Err("exit status no status (guest died), want 0".into())
        );
        assert_eq!(
            check(&c, Some(0), "b a"),
            Err("`b` appears, but out of order".into())
        );
        assert_eq!(check(&c, Some(0), "a"), Err("output lacks `b`".into()));
        let b = case("t", "x", &[]).bounds(&[("lat", Bound::AtMost(2))]);
        assert!(check(&b, Some(0), "lat=1\n").is_ok());
        assert_eq!(
            check(&b, Some(0), "lat=1\nlat=3\n"),
            Err("lat=3, want AtMost(2)".into())
        );
        assert_eq!(
            check(&b, Some(0), "nothing"),
            Err("output lacks `lat=N`".into())
        );
        let once = case("t", "x", &[]).at_most_once(&["panicked"]);
        assert!(check(&once, Some(0), "panicked once").is_ok());
        assert_eq!(
            check(&once, Some(0), "panicked, panicked"),
            Err("`panicked` appears 2 times, want at most once".into())
        );
    }
}
