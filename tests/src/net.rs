//! Network integration tests, as data: an app serving on ports forwarded from the
//! host's 127.0.0.1 (QEMU user networking, a virtio-net card), and the real host
//! clients (`curl`, `ab`, a TCP/UDP echo client) that must get the right answers.
//! `cargo xtask test` boots each case, waits until the app answers, runs the checks,
//! stops the guest and judges its console.

use crate::Machine;

/// A forwarded port's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// How the harness knows the app serves (it retries until a deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// `GET /status` on the first TCP port answers `200`.
    Http,
    /// A few bytes sent to the first TCP port come back.
    Echo,
}

/// What a host client checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetCheck {
    /// `curl` fetches `path`; the body must equal the repository file `file`.
    HttpFile {
        /// URL path.
        path: &'static str,
        /// Expected bytes, relative to the repository root.
        file: &'static str,
    },
    /// `curl` fetches httpd's generated 10 MiB file ([`crate::pattern::PATH`]); its
    /// SHA-256 must equal that of the bytes [`crate::pattern::fill`] generates.
    HttpGenerated,
    /// `/status` answers with `uptime_ms=` and a `requests=` count that grew.
    HttpStatus,
    /// `echo`'s counters (its UDP status datagram): `key` lies in `min..=max`.
    EchoCounter {
        /// The counter's name.
        key: &'static str,
        /// Least value.
        min: u64,
        /// Greatest value.
        max: u64,
    },
    /// `/status`'s counter `key` (e.g. `netfront.tx_gso_frames`) lies in
    /// `min..=max`: an offload in use after the checks before it, or off.
    StatusCounter {
        /// The counter's name.
        key: &'static str,
        /// Least value.
        min: u64,
        /// Greatest value.
        max: u64,
    },
    /// The load generator (`ab`) runs `requests` requests at `concurrency`: all
    /// complete, none fails, all `200`.
    HttpLoad {
        /// Total requests.
        requests: u32,
        /// Concurrent connections.
        concurrency: u32,
        /// HTTP keep-alive (`ab -k`); without it every request is a new connection,
        /// which exercises connection set-up and the reaping of closed sockets.
        keep_alive: bool,
    },
    /// The interface sleeps when idle: between two `/status` fetches `seconds` apart,
    /// its net task woke at most `max_wakeups` times (the fetches themselves included;
    /// a polling stack wakes thousands of times).
    HttpIdle {
        /// Idle time between the fetches.
        seconds: u64,
        /// Most wake-ups allowed.
        max_wakeups: u64,
    },
    /// `bytes` of random data sent over one TCP connection come back with the same
    /// SHA-256.
    TcpEcho {
        /// Payload size.
        bytes: usize,
    },
    /// `count` datagrams of varying sizes come back unchanged.
    UdpEcho {
        /// Datagrams.
        count: usize,
    },
    /// Half-open flood (TAP bed): `syns` SYNs from spoofed addresses that never
    /// complete their handshake, more than the backlog holds; then `curl` must get an
    /// answer (the half-open timeout frees the slots), and `/status` must count the
    /// dropped half-open connections.
    HalfOpenFlood {
        /// SYNs sent.
        syns: u32,
    },
    /// `idle` connections that send nothing plus `slow` ones sending a head a byte a
    /// second stay for a while, with `ab -n requests -c concurrency` and `curl /`
    /// alongside (0 failures). Once they left, the server's open connections return to
    /// none and its heap in use to within 5 % of before.
    IdleAndSlow {
        /// Idle clients.
        idle: u32,
        /// Slow clients.
        slow: u32,
        /// `ab` requests.
        requests: u32,
        /// `ab` concurrency.
        concurrency: u32,
    },
    /// A client asks for `/big.txt` and never reads: the server's write times out and
    /// its task ends (open connections back to none while the client still holds the
    /// connection; a time-out counted).
    StalledReader,
    /// `hold` idle connections fill the server's connection cap and `extra` more
    /// queue behind it: the server stays up, refuses (resets) the queued ones after its
    /// queue timeout, and serves again once the holders leave.
    CapHeld {
        /// Connections held.
        hold: u32,
        /// Connections beyond the cap.
        extra: u32,
    },
    /// `clients` idle connections against a server with no connection cap, more than
    /// its heap holds: the server refuses what does not fit (counted), never exits,
    /// and serves again once they leave.
    HeapExhausted {
        /// Connections opened.
        clients: u32,
    },
    /// A UDP flood at the echo port for `seconds` while `tcp_bytes` go through TCP
    /// echo intact (on a connection made and served before the flood). The sleeper task (`echo sleeper=MS`, a console line every 100
    /// wake-ups) must complete a round that began and ended during the flood (it is not
    /// starved); its lateness is reported.
    UdpFlood {
        /// Flood length.
        seconds: u32,
        /// TCP echo payload during the flood.
        tcp_bytes: usize,
    },
    /// The app connected out to the harness's listener (its address is the argument
    /// word [`HOST_LISTENER`] stands in) and sent this line.
    Outbound {
        /// The line the listener must have received.
        line: &'static str,
    },
}

/// Where a network case boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetBed {
    /// The KVM platform on this QEMU machine (microvm: virtio-mmio; pc: virtio-pci).
    Qemu(Machine),
    /// An xl domU on Xen in QEMU: netfront, dom0's netback bridged to QEMU's network.
    XenXl,
    /// The KVM platform on this QEMU machine with a TAP device: a /24 of its own
    /// (the host `.1`, the guest `.2`, static: [`TAP_GUEST`] in the arguments), a real
    /// L2 path where raw-socket clients reach the guest (QEMU's user networking would
    /// complete handshakes itself). Needs root; the device is removed afterwards.
    Tap(Machine),
    /// An xl domU (netfront) with a TAP link as [`NetBed::Tap`] has: dom0's bridge also
    /// holds a second QEMU card on a host TAP device, so host raw-socket clients reach
    /// the domU through netback on a real L2 path. Needs root, like [`NetBed::Tap`].
    XenXlTap,
}

/// In a case's arguments, replaced by the guest's address on a [`NetBed::Tap`] link.
pub const TAP_GUEST: &str = "@TAP_GUEST@";
/// QEMU's default MAC for the first card.
pub const GUEST_MAC: &str = "52:54:00:12:34:56";
/// The MAC of the xl test bed's vif (every domain's).
pub const XEN_GUEST_MAC: &str = "00:16:3e:75:70:01";

/// In a case's arguments, replaced by `10.0.2.2:PORT`, where the harness listens on
/// the host's 127.0.0.1:PORT (QEMU user networking maps 10.0.2.2 to the host).
pub const HOST_LISTENER: &str = "@HOST_LISTENER@";

/// One network test.
#[derive(Debug, Clone)]
pub struct NetCase {
    /// Unique, printed name.
    pub name: &'static str,
    /// App under `apps/`.
    pub app: &'static str,
    /// Built with `--release` (load tests need the optimized stack under TCG).
    pub release: bool,
    /// Where it boots.
    pub bed: NetBed,
    /// The app's command line.
    pub args: &'static [&'static str],
    /// Guest ports to forward (each gets a free host port).
    pub ports: &'static [(Proto, u16)],
    /// Readiness probe.
    pub ready: Ready,
    /// The checks, in order.
    pub checks: &'static [NetCheck],
    /// Console text that must appear (in any order: the app may start serving before
    /// or after DHCP finishes).
    pub console: &'static [&'static str],
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// `Some(N)` (KVM TAP bed only): the guest runs under `-icount shift=N,align=on`
    /// (TCG), its speed held to one instruction per 2^N ns, so a host flood outruns it
    /// as line-rate traffic outruns a real CPU. At full TCG speed this bed's guest drains
    /// the card faster than QEMU fills it, and a budget is never needed.
    pub icount_align: Option<u32>,
    /// Extra properties of QEMU's virtio-net device (KVM beds), e.g. offloads turned
    /// off: `csum=off,guest_csum=off`; empty for QEMU's defaults.
    pub device: &'static str,
}

const HTTP: &[(Proto, u16)] = &[(Proto::Tcp, 80)];
const ECHO: &[(Proto, u16)] = &[(Proto::Tcp, 7), (Proto::Udp, 7)];
const INDEX: NetCheck = NetCheck::HttpFile {
    path: "/",
    file: "apps/httpd/www/index.html",
};
const BIG: NetCheck = NetCheck::HttpFile {
    path: "/big.txt",
    file: "apps/httpd/www/big.txt",
};
const IDLE: NetCheck = NetCheck::HttpIdle {
    seconds: 2,
    max_wakeups: 40,
};
/// The curl checks plus the generated 10 MiB file (SHA-256).
const CURL_BULK: &[NetCheck] = &[
    INDEX,
    BIG,
    NetCheck::HttpGenerated,
    NetCheck::HttpStatus,
    IDLE,
];
/// A 16 MiB TCP echo (large enough for segmentation and many ring wraps), then UDP.
const BULK_ECHO: &[NetCheck] = &[
    NetCheck::TcpEcho { bytes: 16 << 20 },
    NetCheck::UdpEcho { count: 64 },
];
const DHCP_HTTPD: &[&str] = &[
    "net: eth0 52:54:00:12:34:56 10.0.2.15/24 (dhcp) gateway 10.0.2.2",
    "httpd: serving",
];

/// Every network case.
pub fn net_cases() -> Vec<NetCase> {
    let httpd = |name, bed, release| NetCase {
        name,
        app: "httpd",
        release,
        bed,
        args: &[],
        ports: HTTP,
        ready: Ready::Http,
        checks: &[INDEX, BIG, NetCheck::HttpStatus, IDLE],
        console: DHCP_HTTPD,
        memory_mb: 128,
        icount_align: None,
        device: "",
    };
    let echo = |name, bed| NetCase {
        name,
        app: "echo",
        release: true,
        bed,
        args: &[],
        ports: ECHO,
        ready: Ready::Echo,
        checks: &[
            NetCheck::TcpEcho { bytes: 1 << 20 },
            NetCheck::UdpEcho { count: 64 },
        ],
        console: &["echo: serving tcp and udp port 7"],
        memory_mb: 128,
        icount_align: None,
        device: "",
    };
    vec![
        httpd(
            "net/httpd-curl-microvm-virtio-mmio",
            NetBed::Qemu(Machine::Microvm),
            false,
        ),
        // The 10 MiB file rides on boots that run anyway (segmentation, offloads).
        NetCase {
            checks: CURL_BULK,
            ..httpd(
                "net/httpd-curl-pc-qboot-virtio-pci",
                NetBed::Qemu(Machine::PcQboot),
                true,
            )
        },
        httpd(
            "net/httpd-curl-pc-seabios-virtio-pci",
            NetBed::Qemu(Machine::PcSeabios),
            true,
        ),
        NetCase {
            name: "net/httpd-static-ip",
            args: &["ip=10.0.2.15/24", "gw=10.0.2.2"],
            checks: &[INDEX],
            console: &["net: eth0 52:54:00:12:34:56 10.0.2.15/24 (static) gateway 10.0.2.2"],
            ..httpd("", NetBed::Qemu(Machine::Microvm), true)
        },
        echo(
            "net/echo-microvm-virtio-mmio",
            NetBed::Qemu(Machine::Microvm),
        ),
        NetCase {
            checks: BULK_ECHO,
            ..echo(
                "net/echo-pc-qboot-virtio-pci",
                NetBed::Qemu(Machine::PcQboot),
            )
        },
        NetCase {
            name: "xen/xl/net/httpd-curl-netfront",
            checks: &[
                INDEX,
                BIG,
                NetCheck::HttpGenerated,
                NetCheck::HttpStatus,
                // The 10 MiB went out as 64 KiB GSO frames in multi-page chains.
                NetCheck::StatusCounter {
                    key: "netfront.tx_gso_frames",
                    min: 100,
                    max: u64::MAX,
                },
                NetCheck::StatusCounter {
                    key: "netfront.multi_buffer_frames",
                    min: 100,
                    max: u64::MAX,
                },
                IDLE,
            ],
            console: XEN_DHCP_HTTPD,
            ..httpd("", NetBed::XenXl, true)
        },
        // The same with the offloads off (`offload=off`): one frame per page, full
        // checksums, nothing merged.
        NetCase {
            name: "xen/xl/net/httpd-curl-netfront-offload-off",
            args: &["offload=off"],
            checks: &[
                BIG,
                NetCheck::HttpGenerated,
                NetCheck::StatusCounter {
                    key: "netfront.tx_gso_frames",
                    min: 0,
                    max: 0,
                },
                NetCheck::StatusCounter {
                    key: "netfront.multi_buffer_frames",
                    min: 0,
                    max: 0,
                },
            ],
            console: XEN_DHCP_HTTPD,
            ..httpd("", NetBed::XenXl, true)
        },
        NetCase {
            name: "xen/xl/net/httpd-load-ab-10k-c16",
            checks: &[
                NetCheck::HttpLoad {
                    requests: 10_000,
                    concurrency: 16,
                    keep_alive: true,
                },
                NetCheck::HttpStatus,
            ],
            console: XEN_DHCP_HTTPD,
            ..httpd("", NetBed::XenXl, true)
        },
        NetCase {
            checks: &[
                NetCheck::TcpEcho { bytes: 16 << 20 },
                NetCheck::UdpEcho { count: 64 },
                // The 16 MiB went both ways in multi-slot frames: 64 KiB GSO chains
                // out, and large segments dom0 did not cut up (GRO on its NIC) in.
                NetCheck::EchoCounter {
                    key: "netfront.tx_gso_frames",
                    min: 1,
                    max: u64::MAX,
                },
                NetCheck::EchoCounter {
                    key: "netfront.rx_gso_frames",
                    min: 1,
                    max: u64::MAX,
                },
                NetCheck::EchoCounter {
                    key: "netfront.device_errors",
                    min: 0,
                    max: 0,
                },
            ],
            console: &[XEN_DHCP, "echo: serving tcp and udp port 7"],
            ..echo("xen/xl/net/echo-netfront", NetBed::XenXl)
        },
        // A hostile client that needs only TCP, through dom0's bridge (netfront). (The
        // held-at-cap case refused nothing here: QEMU's user networking between host and
        // dom0 changes what the guest sees; not understood yet, so it runs on the TAP
        // beds, xl included: xen/xl/net/tap/httpd-half-open-flood-and-cap.)
        NetCase {
            name: "xen/xl/net/httpd-stalled-reader",
            args: &["write-ms=2000"],
            checks: &[NetCheck::StalledReader, INDEX],
            console: XEN_DHCP_HTTPD,
            ..httpd("", NetBed::XenXl, true)
        },
        NetCase {
            name: "net/echo-outbound-connect",
            args: &["connect=@HOST_LISTENER@"],
            checks: &[NetCheck::Outbound {
                line: "hello from upcall",
            }],
            console: &["got \"pong hello from upcall\""],
            ..echo("", NetBed::Qemu(Machine::Microvm))
        },
        // On TAP, not QEMU's user networking: its host-side listener has a backlog of 1,
        // so 16 clients connecting at once lose SYNs and retry after 1, 3, 7 s. ab 2.4
        // opens a connection before it knows it needs one and sends nothing on it once
        // every request has been started; when a straggler keeps the run going past
        // httpd's idle timeout, httpd closes that unused connection and ab counts it
        // as a failed request ("Length"). Seen with tcpdump on the hostfwd port.
        NetCase {
            name: "net/tap/httpd-load-ab-2x10k-c16",
            args: &["ip=@TAP_GUEST@/24"],
            checks: &[
                NetCheck::HttpLoad {
                    requests: 10_000,
                    concurrency: 16,
                    keep_alive: true,
                },
                NetCheck::HttpLoad {
                    requests: 10_000,
                    concurrency: 16,
                    keep_alive: false,
                },
                NetCheck::HttpStatus,
            ],
            console: TAP_HTTPD,
            ..httpd("", NetBed::Tap(Machine::Microvm), true)
        },
        // Hostile clients over a TAP device (small time constants from the arguments).
        NetCase {
            name: "net/tap/httpd-half-open-flood",
            args: &["ip=@TAP_GUEST@/24", "half-open-ms=3000"],
            checks: &[NetCheck::HalfOpenFlood { syns: 64 }, INDEX],
            console: TAP_HTTPD,
            ..httpd("", NetBed::Tap(Machine::Microvm), true)
        },
        NetCase {
            name: "net/tap/httpd-idle-and-slow-clients",
            args: &[
                "ip=@TAP_GUEST@/24",
                "idle-ms=2000",
                "head-ms=3000",
                "queue-ms=3000",
                "half-open-ms=3000",
            ],
            checks: &[NetCheck::IdleAndSlow {
                idle: 2000,
                slow: 200,
                requests: 5000,
                concurrency: 16,
            }],
            console: TAP_HTTPD,
            ..httpd("", NetBed::Tap(Machine::Microvm), true)
        },
        NetCase {
            name: "net/tap/httpd-stalled-reader",
            args: &["ip=@TAP_GUEST@/24", "write-ms=2000"],
            checks: &[NetCheck::StalledReader, INDEX, NetCheck::HttpGenerated],
            console: TAP_HTTPD,
            ..httpd("", NetBed::Tap(Machine::Microvm), true)
        },
        NetCase {
            name: "net/tap/httpd-held-at-cap",
            args: &[
                "ip=@TAP_GUEST@/24",
                "max-conn=8",
                "queue-ms=1000",
                "idle-ms=60000",
            ],
            checks: &[NetCheck::CapHeld { hold: 8, extra: 16 }, INDEX],
            console: TAP_HTTPD,
            ..httpd("", NetBed::Tap(Machine::Microvm), true)
        },
        NetCase {
            name: "net/tap/httpd-heap-exhausted",
            args: &[
                "ip=@TAP_GUEST@/24",
                "max-conn=100000",
                "idle-ms=60000",
                "backlog=64",
            ],
            checks: &[NetCheck::HeapExhausted { clients: 700 }, INDEX],
            console: TAP_HTTPD,
            memory_mb: 64,
            ..httpd("", NetBed::Tap(Machine::Microvm), true)
        },
        // Checksum offloads both ways over a TAP (QEMU offers them only with a backend
        // that takes the virtio-net header), then the same with QEMU's side turned off.
        NetCase {
            name: "net/tap/echo-offloads",
            args: &["ip=@TAP_GUEST@/24"],
            checks: BULK_ECHO,
            console: &[
                "virtio-net: eth0 TCP checksum offload: tx rx",
                "echo: serving tcp and udp port 7",
            ],
            ..echo("", NetBed::Tap(Machine::Microvm))
        },
        NetCase {
            name: "net/tap/echo-offloads-off",
            args: &["ip=@TAP_GUEST@/24"],
            checks: BULK_ECHO,
            device: "csum=off,guest_csum=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,mrg_rxbuf=off",
            ..echo("", NetBed::Tap(Machine::Microvm))
        },
        // A guest slowed to ~31 M instructions/s, which the flood outruns: the net poll
        // budget is what leaves the other tasks time (without it the sleeper starves
        // for the whole flood).
        NetCase {
            name: "net/tap/echo-udp-flood",
            args: &["ip=@TAP_GUEST@/24", "sleeper=10"],
            ports: ECHO,
            checks: &[NetCheck::UdpFlood {
                seconds: 6,
                tcp_bytes: 64 * 1024,
            }],
            icount_align: Some(5),
            console: &["echo: serving tcp and udp port 7", "echo: sleeper round 1:"],
            ..echo("", NetBed::Tap(Machine::Microvm))
        },
        // The half-open flood and the held-at-cap server through netfront, netback and
        // dom0's bridge, in one xl boot.
        NetCase {
            name: "xen/xl/net/tap/httpd-half-open-flood-and-cap",
            args: &[
                "ip=@TAP_GUEST@/24",
                "half-open-ms=3000",
                "max-conn=8",
                "queue-ms=1000",
                "idle-ms=60000",
            ],
            checks: &[
                NetCheck::HalfOpenFlood { syns: 64 },
                INDEX,
                NetCheck::CapHeld { hold: 8, extra: 16 },
                INDEX,
            ],
            console: &[
                "net: netfront 00:16:3e:75:70:01 10.",
                "(static)",
                "httpd: serving",
            ],
            ..httpd("", NetBed::XenXlTap, true)
        },
    ]
}

const TAP_HTTPD: &[&str] = &[
    "net: eth0 52:54:00:12:34:56 10.",
    "(static)",
    "httpd: serving",
];

/// netfront's DHCP lease: the xl test bed gives every vif the same MAC, and QEMU's
/// DHCP its first address.
const XEN_DHCP: &str = "net: netfront 00:16:3e:75:70:01 10.0.2.15/24 (dhcp) gateway 10.0.2.2";
const XEN_DHCP_HTTPD: &[&str] = &[XEN_DHCP, "httpd: serving"];

/// What `ab` reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadResult {
    /// `Complete requests:`.
    pub complete: u64,
    /// `Failed requests:`.
    pub failed: u64,
    /// `Non-2xx responses:` (absent = 0).
    pub non_2xx: u64,
    /// `Requests per second:`.
    pub requests_per_second: f64,
    /// `Transfer rate:` in KiB/s.
    pub transfer_kib_per_second: f64,
}

fn field<T: std::str::FromStr>(output: &str, label: &str) -> Option<T> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Parses `ab`'s report.
pub fn parse_ab(output: &str) -> Result<LoadResult, String> {
    let need = |label: &str| format!("ab output lacks `{label}`");
    Ok(LoadResult {
        complete: field(output, "Complete requests:").ok_or_else(|| need("Complete requests:"))?,
        failed: field(output, "Failed requests:").ok_or_else(|| need("Failed requests:"))?,
        non_2xx: field(output, "Non-2xx responses:").unwrap_or(0),
        requests_per_second: field(output, "Requests per second:")
            .ok_or_else(|| need("Requests per second:"))?,
        transfer_kib_per_second: field(output, "Transfer rate:")
            .ok_or_else(|| need("Transfer rate:"))?,
    })
}

/// Judges a load run: every request completed, none failed, all `200`.
pub fn judge_load(r: &LoadResult, requests: u32) -> Result<(), String> {
    if r.complete != u64::from(requests) || r.failed != 0 || r.non_2xx != 0 {
        return Err(format!(
            "ab: {} of {requests} complete, {} failed, {} non-2xx",
            r.complete, r.failed, r.non_2xx
        ));
    }
    Ok(())
}

/// Console lines that mean the guest failed even if the clients were happy.
pub const CONSOLE_FAILURES: &[&str] = &["panicked at", "CPU exception", "net: device error"];

/// Judges the console of a stopped guest: every `want` appears, none of
/// [`CONSOLE_FAILURES`] does.
pub fn judge_console(want: &[&str], output: &str) -> Result<(), String> {
    if let Some(bad) = CONSOLE_FAILURES.iter().find(|b| output.contains(*b)) {
        return Err(format!("console shows `{bad}`"));
    }
    match want.iter().find(|w| !output.contains(*w)) {
        Some(w) => Err(format!("console lacks `{w}`")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AB: &str = "Concurrency Level:      16\nTime taken for tests:   12.3 seconds\n\
        Complete requests:      10000\nFailed requests:        0\nKeep-Alive requests:    10000\n\
        Requests per second:    812.93 [#/sec] (mean)\nTransfer rate:          520.11 [Kbytes/sec] received\n";

    #[test]
    fn ab_report_is_parsed_and_judged() {
        let r = parse_ab(AB).unwrap();
        assert_eq!((r.complete, r.failed, r.non_2xx), (10000, 0, 0));
        assert!((r.requests_per_second - 812.93).abs() < 1e-9);
        assert!(judge_load(&r, 10_000).is_ok());
        assert!(judge_load(&r, 20_000).is_err());
        let bad = AB.replace("Failed requests:        0", "Failed requests:        3")
            + "Non-2xx responses:      7\n";
        let r = parse_ab(&bad).unwrap();
        assert_eq!(
            judge_load(&r, 10_000),
            Err("ab: 10000 of 10000 complete, 3 failed, 7 non-2xx".into())
        );
        assert!(parse_ab("garbage").is_err());
    }

    #[test]
    fn console_judgement() {
        assert!(judge_console(&["a", "b"], "a\nb\n").is_ok());
        assert!(judge_console(&["b", "a"], "a\nb\n").is_ok());
        assert_eq!(
            judge_console(&["c"], "a\nb\n"),
            Err("console lacks `c`".into())
        );
        assert!(judge_console(&[], "x panicked at y").is_err());
    }

    #[test]
    fn names_are_unique() {
        let cases = net_cases();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
    }
}
