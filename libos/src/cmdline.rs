//! Kernel command-line parsing (pure; host-tested).
//!
//! The command line is split into words (double quotes group words; `\"` and `\\`
//! escape inside quotes). A word `name=value` whose `name` is a libos option (see
//! [`KNOWN_OPTIONS`]) configures the library OS; every other word goes to the
//! application. A lone `--` ends option processing: everything after it belongs to
//! the application, even words that look like options.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::net::config::NetConfig;
use crate::preempt::{SectionResched, Setting, parse_setting};

/// Options libos understands, with a one-line description for error messages.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("loglevel", "quiet|info|debug"),
    (
        "preempt",
        "none|voluntary|full|dynamic|dynamic:none|dynamic:voluntary|dynamic:full",
    ),
    ("hz", "a tick rate from 1 to 10000"),
    #[cfg(feature = "bug-injection")]
    (
        "hcall_resched",
        "raw|model|untraced|cpuflag (test-only: model and untraced reproduce Linux's PREEMPT_DYNAMIC hypercall bugs, cpuflag its per-CPU flag bug)",
    ),
    ("ip", crate::net::config::IP_EXPECTED),
    ("mask", crate::net::config::MASK_EXPECTED),
    ("gw", crate::net::config::GW_EXPECTED),
    ("offload", crate::net::config::OFFLOAD_EXPECTED),
];

/// How chatty libos is about itself on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Only errors, panics and the application's own output.
    Quiet,
    /// One boot line (platform, memory) — the default.
    #[default]
    Info,
    /// Boot details (memory map, heap regions).
    Debug,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// Words for the application, in order.
    pub app_args: Vec<String>,
    /// `loglevel=`.
    pub loglevel: LogLevel,
    /// `preempt=` (default `dynamic`, booting in `full`).
    pub preempt: Setting,
    /// `hz=`: the scheduler tick rate.
    pub hz: u32,
    /// `hcall_resched=`: how preemptible sections reschedule on interrupt exit.
    pub hcall_resched: SectionResched,
    /// `ip=`, `mask=`, `gw=`: static network configuration (DHCP without `ip=`).
    pub net: NetConfig,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            app_args: Vec::new(),
            loglevel: LogLevel::default(),
            preempt: Setting::default(),
            hz: crate::time::DEFAULT_HZ,
            hcall_resched: SectionResched::Raw,
            net: NetConfig::default(),
        }
    }
}

/// A command line libos cannot accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// A `"` was opened and never closed.
    UnterminatedQuote,
    /// A known option got a value it does not accept.
    BadValue {
        /// The option's name.
        option: String,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The application's built-in default command line is unusable (a build error).
    BadDefaults(String),
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnterminatedQuote => write!(f, "unterminated double quote"),
            CmdlineError::BadValue {
                option,
                value,
                expected,
            } => {
                write!(f, "{option}: expected {expected}, got `{value}`")
            }
            CmdlineError::BadDefaults(why) => {
                write!(f, "the application's default command line: {why}")
            }
        }
    }
}

/// Copies a boot-supplied command line into `buf`: bytes up to the first NUL (at most
/// `buf.len()`), non-ASCII bytes replaced by `?`; returns the text. Backends use it to
/// keep the command line once boot memory may be reused.
pub fn copy_text<'a>(raw: &[u8], buf: &'a mut [u8]) -> &'a str {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw.len())
        .min(buf.len());
    for (dst, &src) in buf.iter_mut().zip(&raw[..end]) {
        *dst = if src.is_ascii() { src } else { b'?' };
    }
    core::str::from_utf8(&buf[..end]).unwrap_or("")
}

/// Splits `line` into words (see the module docs for quoting).
pub fn split_words(line: &str) -> Result<Vec<String>, CmdlineError> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == '\0').is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut in_quotes = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => in_quotes = !in_quotes,
                '\\' if in_quotes && matches!(chars.peek(), Some('"' | '\\')) => {
                    word.extend(chars.next());
                }
                c if !in_quotes && (c.is_whitespace() || c == '\0') => break,
                c => word.push(c),
            }
        }
        if in_quotes {
            return Err(CmdlineError::UnterminatedQuote);
        }
        words.push(word);
    }
}

/// Parses a whole kernel command line.
pub fn parse(line: &str) -> Result<Cmdline, CmdlineError> {
    parse_onto(Cmdline::default(), line)
}

/// Parses `line` over the application's defaults `defaults` (libos options only, from
/// its `[package.metadata.upcall] cmdline`): an option on `line` overrides its default.
pub fn parse_with_defaults(defaults: &str, line: &str) -> Result<Cmdline, CmdlineError> {
    let base = parse(defaults).map_err(|e| CmdlineError::BadDefaults(alloc::format!("{e}")))?;
    if let Some(word) = base.app_args.first() {
        return Err(CmdlineError::BadDefaults(alloc::format!(
            "`{word}` is not a libos option"
        )));
    }
    parse_onto(base, line)
}

fn parse_onto(mut out: Cmdline, line: &str) -> Result<Cmdline, CmdlineError> {
    let mut words = split_words(line)?.into_iter();
    while let Some(word) = words.next() {
        if word == "--" {
            out.app_args.extend(words.by_ref());
            break;
        }
        match word.split_once('=') {
            Some(("loglevel", value)) => out.loglevel = parse_loglevel(value)?,
            Some(("preempt", value)) => {
                out.preempt = parse_setting(value).ok_or_else(|| bad_value("preempt", value))?;
            }
            // Test builds only (the `bug-injection` feature).
            Some(("hcall_resched", value)) if cfg!(feature = "bug-injection") => {
                out.hcall_resched = SectionResched::parse(value)
                    .ok_or_else(|| bad_value("hcall_resched", value))?;
            }
            Some(("hz", value)) => {
                out.hz = value
                    .parse()
                    .ok()
                    .filter(|hz| (1..=10_000).contains(hz))
                    .ok_or_else(|| bad_value("hz", value))?;
            }
            Some((option @ ("ip" | "mask" | "gw" | "offload"), value)) => {
                out.net
                    .set(option, value)
                    .map_err(|_| bad_value(option, value))?;
            }
            _ => out.app_args.push(word),
        }
    }
    Ok(out)
}

fn parse_loglevel(value: &str) -> Result<LogLevel, CmdlineError> {
    match value {
        "quiet" => Ok(LogLevel::Quiet),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        _ => Err(bad_value("loglevel", value)),
    }
}

fn bad_value(option: &str, value: &str) -> CmdlineError {
    let expected = KNOWN_OPTIONS
        .iter()
        .find(|(name, _)| *name == option)
        .map_or("a valid value", |(_, e)| *e);
    CmdlineError::BadValue {
        option: option.into(),
        value: value.into(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_and_quotes() {
        assert_eq!(split_words("  a b\t c ").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split_words(r#"x "a b" "q\"x""#).unwrap(),
            ["x", "a b", "q\"x"]
        );
        assert_eq!(
            split_words(r#"pre"mid dle"post"#).unwrap(),
            ["premid dlepost"]
        );
        assert_eq!(split_words(r#"a "b"#), Err(CmdlineError::UnterminatedQuote));
        assert!(split_words("").unwrap().is_empty());
    }

    #[test]
    fn options_are_taken_and_the_rest_is_for_the_app() {
        let c = parse("loglevel=debug a k=v -- loglevel=quiet b").unwrap();
        assert_eq!(c.loglevel, LogLevel::Debug);
        assert_eq!(c.app_args, ["a", "k=v", "loglevel=quiet", "b"]);
    }

    #[test]
    fn preempt_and_hz() {
        let c = parse("preempt=dynamic:none hz=250").unwrap();
        assert_eq!(
            c.preempt,
            Setting {
                model: crate::preempt::Model::None,
                dynamic: true
            }
        );
        assert_eq!(c.hz, 250);
        assert!(parse("hz=0").is_err());
        assert!(parse("hz=abc").is_err());
        assert!(
            parse("preempt=sometimes")
                .unwrap_err()
                .to_string()
                .starts_with("preempt: expected none|")
        );
    }

    #[test]
    fn hcall_resched_is_parsed_only_with_bug_injection() {
        assert_eq!(parse("").unwrap().hcall_resched, SectionResched::Raw);
        if !cfg!(feature = "bug-injection") {
            // Not a libos option: the word goes to the app and changes nothing.
            let c = parse("hcall_resched=model").unwrap();
            assert_eq!(c.hcall_resched, SectionResched::Raw);
            assert_eq!(c.app_args, ["hcall_resched=model"]);
            return;
        }
        for (word, want) in [
            ("raw", SectionResched::Raw),
            ("model", SectionResched::FollowsModel),
            ("untraced", SectionResched::Untraced),
            ("cpuflag", SectionResched::StaysOnCpu),
        ] {
            let c = parse(&alloc::format!("hcall_resched={word}")).unwrap();
            assert_eq!(c.hcall_resched, want);
        }
        assert!(parse("hcall_resched=sometimes").is_err());
    }

    #[test]
    fn network_options() {
        let c = parse("ip=10.0.2.15 mask=255.255.255.0 gw=10.0.2.2 port=80").unwrap();
        assert_eq!(c.net.ip.unwrap().to_string(), "10.0.2.15/24");
        assert_eq!(c.net.gateway, Some([10, 0, 2, 2]));
        assert_eq!(c.app_args, ["port=80"]);
        assert_eq!(
            parse("ip=10.0.2").unwrap_err().to_string(),
            "ip: expected an IPv4 address A.B.C.D or A.B.C.D/PREFIX, got `10.0.2`"
        );
    }

    #[test]
    fn defaults_are_overridden_by_the_line() {
        let c = parse_with_defaults("hz=500 preempt=none", "hz=250 a").unwrap();
        assert_eq!((c.hz, c.app_args.as_slice()), (250, &["a".to_string()][..]));
        assert_eq!(c.preempt.model, crate::preempt::Model::None);
        assert_eq!(parse_with_defaults("hz=500", "").unwrap().hz, 500);
        assert_eq!(
            parse_with_defaults("hz=500 x", "").unwrap_err().to_string(),
            "the application's default command line: `x` is not a libos option"
        );
        assert!(parse_with_defaults("hz=0", "").is_err());
    }

    #[test]
    fn bad_option_value_is_a_clear_error() {
        let e = parse("loglevel=loud").unwrap_err();
        assert_eq!(
            e.to_string(),
            "loglevel: expected quiet|info|debug, got `loud`"
        );
    }

    #[test]
    fn copy_text_stops_at_nul_and_masks_non_ascii() {
        let mut buf = [0u8; 16];
        assert_eq!(copy_text(b"a b\xffc\0junk", &mut buf), "a b?c");
        let mut small = [0u8; 3];
        assert_eq!(copy_text(b"abcdef", &mut small), "abc");
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&s);
            let mut buf = [0u8; 32];
            let _ = copy_text(&raw, &mut buf);
        }

        #[test]
        fn plain_words_round_trip(words in proptest::collection::vec("[a-zA-Z0-9_.,:/-]{1,12}", 0..8)) {
            let line = words.join(" ");
            let c = parse(&format!("-- {line}")).unwrap();
            prop_assert_eq!(c.app_args, words);
        }

        #[test]
        fn quoted_words_round_trip(words in proptest::collection::vec("[^\"\\\\]{0,12}", 0..6)) {
            let line: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            let c = split_words(&line.join(" ")).unwrap();
            prop_assert_eq!(c, words);
        }
    }
}
