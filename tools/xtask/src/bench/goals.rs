//! The goals of issue 17 ("Fast paths"), one per row of its table, and the image-size
//! accounting `bench boot` adds (the largest functions and the crate each comes from).
//!
//! Every `bench boot|entry|smp` run prints the rows it measured with their goal and
//! whether it is met, so progress is measurable in one command. Goals are checked here,
//! in benchmarks, never asserted as timings in tests.

use object::{Object, ObjectSymbol, SymbolKind};

use crate::bench::report::{Table, cell};

/// One measured row: lower is better, met when `value <= goal`.
pub struct Row {
    pub measure: &'static str,
    pub value: f64,
    pub goal: f64,
    /// How the value is written (`{:.0}` for counts, `{:.3}` for ratios).
    pub decimals: usize,
    /// What the goal means where it is not a plain bound.
    pub note: &'static str,
}

impl Row {
    pub fn count(measure: &'static str, value: u64, goal: u64, note: &'static str) -> Row {
        Row {
            measure,
            value: value as f64,
            goal: goal as f64,
            decimals: 0,
            note,
        }
    }

    pub fn ratio(measure: &'static str, value: f64, goal: f64, note: &'static str) -> Row {
        Row {
            measure,
            value,
            goal,
            decimals: 3,
            note,
        }
    }

    pub fn met(&self) -> bool {
        self.value.is_finite() && self.value <= self.goal
    }
}

/// Goals (issue 17's table).
pub const TASK_SWITCH_INSTRUCTIONS: u64 = 400;
pub const EXCEPTION_ROUND_TRIP_INSTRUCTIONS: u64 = 206;
/// The 100 µs sleep itself: under `-icount shift=0` one instruction is one nanosecond.
pub const SLEEP_NS: u64 = 100_000;
/// Half of the 3,170 instructions of overhead measured when the issue was filed.
pub const SLEEP_OVERHEAD_INSTRUCTIONS: u64 = 1_585;
pub const IPI_ROUND_TRIP_INSTRUCTIONS: u64 = 600;
pub const BOOT_RATIO_QEMU: f64 = 1.05;
pub const BOOT_RATIO_UHYVE: f64 = 1.15;
pub const ENTRY_TO_MAIN_INSTRUCTIONS: u64 = upcall_tests::ENTRY_TO_MAIN_INSTRUCTIONS_MAX;
pub const STRIPPED_BYTES: u64 = 100 * 1024;
pub const AS_BUILT_BYTES: u64 = 128 * 1024;

/// The table of `rows`: measure, value, goal (with its note), met.
pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        ("measure (issue 17)", "measure"),
        ("value", "value"),
        ("goal", "goal_at_most"),
        ("met", "met"),
        ("", "note"),
    ]);
    for r in rows {
        let d = r.decimals;
        let note = if r.note.is_empty() {
            String::new()
        } else {
            format!(" — {}", r.note)
        };
        t.row([
            r.measure.into(),
            cell(format!("{:.d$}", r.value), r.value),
            cell(format!("≤ {:.d$}{note}", r.goal), r.goal),
            cell(if r.met() { "yes" } else { "**no**" }, r.met()),
            r.note.into(),
        ]);
    }
    t
}

/// The crate a demangled Rust symbol comes from: the first path segment, looking
/// through `<T as Trait>` and `<&T>` wrappers to the implementing type's path. Symbols
/// that are not Rust paths (assembly labels, C) are `(none)`.
pub fn crate_of(demangled: &str) -> &str {
    match path_crate(demangled) {
        Some(k) => k,
        // `<&T as core::fmt::Display>::fmt`: the trait's crate.
        None if demangled.starts_with('<') => match demangled.split_once(" as ") {
            Some((_, t)) => path_crate(t).unwrap_or("(none)"),
            // `<char>::escape_debug_ext`, `<[T]>::sort`: inherent impls on primitives.
            None => "core",
        },
        None => "(none)",
    }
}

fn path_crate(demangled: &str) -> Option<&str> {
    let mut s = demangled;
    loop {
        let t = s
            .trim_start_matches('<')
            .trim_start_matches('&')
            .trim_start_matches("mut ")
            .trim_start_matches("dyn ")
            .trim_start_matches("impl ")
            .trim_start_matches('[')
            .trim_start_matches('*')
            .trim_start_matches("const ");
        if t == s {
            break;
        }
        s = t;
    }
    match s.find("::") {
        Some(i) if i > 0 && s[..i].chars().all(|c| c.is_alphanumeric() || c == '_') => {
            Some(&s[..i])
        }
        _ => None,
    }
}

/// A function in the image: demangled name (without the hash), crate, size in bytes.
#[derive(Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub krate: String,
    pub bytes: u64,
}

/// The `n` largest functions of an ELF image by symbol size, and the total bytes of
/// text per crate (largest first). An image without a symbol table gives empty lists.
pub fn largest_functions(elf: &[u8], n: usize) -> (Vec<Function>, Vec<(String, u64)>) {
    let Ok(file) = object::File::parse(elf) else {
        return (Vec::new(), Vec::new());
    };
    let mut funcs: Vec<Function> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            let krate = crate_of(&name).to_string();
            Some(Function {
                name,
                krate,
                bytes: s.size(),
            })
        })
        .collect();
    funcs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    funcs.dedup_by(|a, b| a.name == b.name && a.bytes == b.bytes);
    let mut per_crate: std::collections::BTreeMap<String, u64> = Default::default();
    for f in &funcs {
        *per_crate.entry(f.krate.clone()).or_default() += f.bytes;
    }
    let mut per_crate: Vec<(String, u64)> = per_crate.into_iter().collect();
    per_crate.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    funcs.truncate(n);
    (funcs, per_crate)
}

/// The size breakdown: the largest functions, then the text bytes per crate.
pub fn size_tables(funcs: &[Function], per_crate: &[(String, u64)]) -> (Table, Table) {
    let mut largest = Table::new(&[("bytes", "bytes"), ("crate", "crate"), ("function", "name")]);
    for f in funcs {
        largest.row([
            f.bytes.into(),
            f.krate.clone().into(),
            cell(format!("`{}`", f.name), f.name.clone()),
        ]);
    }
    let mut crates = Table::new(&[("crate", "crate"), ("bytes", "bytes")]);
    for (k, b) in per_crate {
        crates.row([k.clone().into(), (*b).into()]);
    }
    (largest, crates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_of_looks_through_impls() {
        assert_eq!(crate_of("core::fmt::write"), "core");
        assert_eq!(
            crate_of("<libos::sched::Task as core::fmt::Debug>::fmt"),
            "libos"
        );
        assert_eq!(crate_of("<&T as core::fmt::Display>::fmt"), "core");
        assert_eq!(crate_of("<char>::escape_debug_ext"), "core");
        assert_eq!(crate_of("<&mut kvm::serial::Port>::write"), "kvm");
        assert_eq!(crate_of("<[u8] as core::fmt::Debug>::fmt"), "core");
        assert_eq!(crate_of("_start"), "(none)");
        assert_eq!(crate_of("::x"), "(none)");
        assert_eq!(crate_of(""), "(none)");
    }

    #[test]
    fn rows_are_met_only_within_their_goal() {
        assert!(Row::count("a", 400, 400, "").met());
        assert!(!Row::count("a", 401, 400, "").met());
        assert!(!Row::ratio("r", f64::NAN, 1.05, "").met());
        let md = table(&[Row::ratio("r", 1.2, 1.05, "n")]).markdown();
        assert!(md.contains("| r | 1.200 | ≤ 1.050 — n | **no** |"), "{md}");
    }

    #[test]
    fn largest_functions_of_this_binary() {
        // xtask itself is an ELF with a symbol table in test builds.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let (funcs, per_crate) = largest_functions(&exe, 20);
        assert_eq!(funcs.len(), 20);
        assert!(funcs.windows(2).all(|w| w[0].bytes >= w[1].bytes));
        let total: u64 = per_crate.iter().map(|c| c.1).sum();
        assert!(total >= funcs.iter().map(|f| f.bytes).sum::<u64>());
        assert!(largest_functions(b"not an elf", 20).0.is_empty());
    }
}
