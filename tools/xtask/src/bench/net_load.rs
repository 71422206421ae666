//! The load side of `cargo xtask bench net`: the workloads (`wrk` with keep-alive, `ab`
//! with one request per connection; small page, 256 KiB, 10 MiB), running one against a
//! forwarded port, parsing what the tool reports, and QEMU's CPU time from `/proc`.

use crate::test::net as nettest;
use upcall_tests::net::parse_ab;

/// The load generator of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    /// `wrk -t1 -c N -d S`: keep-alive connections for a fixed time.
    Wrk { seconds: u32 },
    /// `ab -n N -c C`: a new connection per request.
    Ab { requests: u32 },
}

/// One row of the benchmark.
#[derive(Debug)]
pub(crate) struct Workload {
    pub name: &'static str,
    pub path: &'static str,
    pub tool: Tool,
    pub concurrency: u32,
    /// The goal on requests/s (small page, keep-alive) or MiB/s (files), as a ratio
    /// against Linux + nginx that must be reached; `None`: only the CPU goal.
    pub goal: Option<Goal>,
}

/// A throughput goal: Upcall / nginx of `what` at least `ratio`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Goal {
    pub what: Figure,
    pub ratio: f64,
}

/// Which throughput figure a goal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Figure {
    RequestsPerSecond,
    MibPerSecond,
}

const SMALL: &str = "/index.html";
const BIG: &str = "/big.txt";
const HUGE: &str = upcall_tests::pattern::PATH;

/// The workloads, in order; busybox (no keep-alive) runs only the `ab` ones.
pub(crate) const WORKLOADS: &[Workload] = &[
    Workload {
        name: "wrk keep-alive, small page (420 B)",
        path: SMALL,
        tool: Tool::Wrk { seconds: 5 },
        concurrency: 16,
        goal: Some(Goal {
            what: Figure::RequestsPerSecond,
            ratio: 1.5,
        }),
    },
    Workload {
        name: "wrk keep-alive, 256 KiB",
        path: BIG,
        tool: Tool::Wrk { seconds: 5 },
        concurrency: 4,
        goal: Some(Goal {
            what: Figure::MibPerSecond,
            ratio: 1.0,
        }),
    },
    Workload {
        name: "wrk keep-alive, 10 MiB",
        path: HUGE,
        tool: Tool::Wrk { seconds: 8 },
        concurrency: 2,
        goal: Some(Goal {
            what: Figure::MibPerSecond,
            ratio: 1.0,
        }),
    },
    Workload {
        name: "ab, small page (420 B)",
        path: SMALL,
        tool: Tool::Ab { requests: 1000 },
        concurrency: 16,
        goal: None,
    },
    Workload {
        name: "ab, 256 KiB",
        path: BIG,
        tool: Tool::Ab { requests: 100 },
        concurrency: 4,
        goal: Some(Goal {
            what: Figure::MibPerSecond,
            ratio: 1.0,
        }),
    },
    Workload {
        name: "ab, 10 MiB",
        path: HUGE,
        tool: Tool::Ab { requests: 10 },
        concurrency: 2,
        goal: Some(Goal {
            what: Figure::MibPerSecond,
            ratio: 1.0,
        }),
    },
];

/// What one workload measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Measured {
    /// Requests completed.
    pub requests: u64,
    /// Failed requests, socket errors and non-2xx answers together.
    pub errors: u64,
    pub requests_per_second: f64,
    pub mib_per_second: f64,
    /// QEMU's CPU time (user + system, all threads) per completed request, µs.
    pub cpu_us_per_request: f64,
    /// Ethernet frames (rx + tx) per request, where the guest counts them (Upcall).
    pub frames_per_request: Option<f64>,
}

/// The median of each figure over `runs` (figures taken independently; requests and
/// errors summed).
pub(crate) fn median(runs: &[Measured]) -> Measured {
    let mid = crate::bench::stats::median_of_numbers;
    let of = |f: fn(&Measured) -> f64| mid(runs.iter().map(f).collect());
    let frames: Vec<f64> = runs.iter().filter_map(|m| m.frames_per_request).collect();
    Measured {
        requests: runs.iter().map(|m| m.requests).sum(),
        errors: runs.iter().map(|m| m.errors).sum(),
        requests_per_second: of(|m| m.requests_per_second),
        mib_per_second: of(|m| m.mib_per_second),
        cpu_us_per_request: of(|m| m.cpu_us_per_request),
        frames_per_request: (!frames.is_empty()).then(|| mid(frames)),
    }
}

/// Runs `w` against `127.0.0.1:port`; returns (requests, errors, requests/s, MiB/s).
pub(crate) fn run(w: &Workload, port: u16) -> Result<(u64, u64, f64, f64), String> {
    let url = format!("http://127.0.0.1:{port}{}", w.path);
    match w.tool {
        Tool::Wrk { seconds } => {
            let out = nettest::client(
                "wrk",
                &[
                    "-t1".into(),
                    format!("-c{}", w.concurrency),
                    format!("-d{seconds}s"),
                    "--timeout".into(),
                    "30s".into(),
                    url,
                ],
            )?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "wrk failed ({}): {text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let r = parse_wrk(&text)?;
            Ok((
                r.requests,
                r.errors,
                r.requests as f64 / r.seconds,
                r.bytes / r.seconds / MIB,
            ))
        }
        Tool::Ab { requests } => {
            let out = nettest::client(
                "ab",
                &[
                    "-q".into(),
                    "-s".into(),
                    "60".into(),
                    "-n".into(),
                    requests.to_string(),
                    "-c".into(),
                    w.concurrency.to_string(),
                    url,
                ],
            )?;
            let r = parse_ab(&String::from_utf8_lossy(&out.stdout))?;
            Ok((
                r.complete,
                r.failed + r.non_2xx,
                r.requests_per_second,
                r.transfer_kib_per_second / 1024.0,
            ))
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// What `wrk` reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    /// Bytes read (headers and bodies).
    pub bytes: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
}

/// Parses `wrk`'s report: `N requests in 10.00s, 5.67MB read`, the optional
/// `Non-2xx or 3xx responses: N` and `Socket errors: connect A, read B, write C,
/// timeout D` lines. Sizes use wrk's binary units (1KB = 1024 B).
pub(crate) fn parse_wrk(out: &str) -> Result<WrkResult, String> {
    let summary = out
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(" requests in ")?;
            let (secs, rest) = rest.split_once(", ")?;
            let size = rest.strip_suffix(" read")?;
            Some((n.parse::<u64>().ok()?, duration(secs)?, size_bytes(size)?))
        })
        .ok_or_else(|| format!("wrk output lacks `N requests in T, S read`: {out}"))?;
    let mut errors = 0;
    for l in out.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().map_err(|e| format!("`{l}`: {e}"))?;
        } else if let Some(list) = l.strip_prefix("Socket errors:") {
            for part in list.split(',') {
                let n = part.split_whitespace().nth(1).unwrap_or("");
                errors += n.parse::<u64>().map_err(|e| format!("`{l}`: {e}"))?;
            }
        }
    }
    let (requests, seconds, bytes) = summary;
    if seconds <= 0.0 {
        return Err(format!("wrk ran for {seconds} s"));
    }
    Ok(WrkResult {
        requests,
        seconds,
        bytes,
        errors,
    })
}

/// `10.00s`, `1.00m`, `500.00ms` in seconds.
fn duration(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// `5.67MB`, `123.00B`, `1.20GB` in bytes (binary units).
fn size_bytes(s: &str) -> Option<f64> {
    let units = [
        ("TB", 1024f64.powi(4)),
        ("GB", 1024f64.powi(3)),
        ("MB", MIB),
        ("KB", 1024.0),
        ("B", 1.0),
    ];
    let (num, scale) = units
        .iter()
        .find_map(|(u, f)| s.strip_suffix(u).map(|n| (n, *f)))?;
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// QEMU's CPU time so far (user + system of all its threads), in seconds, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let ticks = stat_cpu_ticks(&stat).ok_or_else(|| format!("/proc/{pid}/stat: `{stat}`"))?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    Ok(ticks as f64 / hz as f64)
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself: fields are counted after
/// the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is f[0], so field N is f[N - 3].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/index.html
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.02ms    2.10ms  40.33ms   85.12%
    Req/Sec     1.78k   120.45     2.01k    70.00%
  17745 requests in 10.00s, 9.73MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1774.37
Transfer/sec:      0.97MB
";

    #[test]
    fn wrk_report() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 17745);
        assert!((r.seconds - 10.0).abs() < 1e-9);
        assert!((r.bytes - 9.73 * MIB).abs() < 1.0);
        assert_eq!(r.errors, 7);
        let clean = WRK
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse_wrk(&clean).unwrap().errors, 0);
        assert!(parse_wrk("garbage").is_err());
        assert!(parse_wrk("  5 requests in 0.00s, 1B read").is_err());
        assert!(parse_wrk(&WRK.replace("read 2", "read x")).is_err());
    }

    #[test]
    fn medians_per_figure() {
        let m = |rps: f64, cpu: f64, frames: Option<f64>| Measured {
            requests: 10,
            errors: 1,
            requests_per_second: rps,
            mib_per_second: rps / 2.0,
            cpu_us_per_request: cpu,
            frames_per_request: frames,
        };
        let r = median(&[
            m(3.0, 9.0, Some(5.0)),
            m(1.0, 7.0, None),
            m(2.0, f64::NAN, Some(7.0)),
        ]);
        assert_eq!((r.requests, r.errors), (30, 3));
        assert_eq!(r.requests_per_second, 2.0);
        assert_eq!(r.mib_per_second, 1.0);
        assert_eq!(r.cpu_us_per_request, 8.0);
        assert_eq!(r.frames_per_request, Some(6.0));
        assert!(median(&[]).requests_per_second.is_nan());
    }

    #[test]
    fn wrk_units() {
        assert_eq!(duration("1.50m"), Some(90.0));
        assert_eq!(duration("250.00ms"), Some(0.25));
        assert_eq!(duration("10"), None);
        assert_eq!(size_bytes("2.00KB"), Some(2048.0));
        assert_eq!(size_bytes("1.00GB"), Some(1024.0 * MIB));
        assert_eq!(size_bytes("12B"), Some(12.0));
        assert_eq!(size_bytes("12XB"), None);
    }

    #[test]
    fn proc_stat_cpu_time() {
        let stat =
            "4242 (qemu (x) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("4242 (qemu) S 1"), None);
        let me = cpu_seconds(std::process::id()).unwrap();
        assert!(me >= 0.0);
    }
}
