//! `cargo xtask check-noinstr`: the analogue of objtool's noinstr validation.
//!
//! Entry code that runs before the entry state is consistent (or after it is torn
//! down) lives in `.noinstr.text`. It may only call code in the same section, or the
//! bracket `libos::entry::instrumentation` (Linux's `instrumentation_begin/end`), inside
//! which logging, tracing and allocation are allowed. Any other direct call or jump out
//! of the section, and any indirect one, is a violation.

use std::path::Path;
use std::process::Command;

use object::{Object, ObjectSection};

use crate::{Failure, Outcome, Platform, build, fail, host};

/// Targets a noinstr function may call (demangled-name prefixes): the instrumentation
/// bracket, the backends' dispatch between enter and exit, and Xen's hypercall page (the hypervisor's code: a PV guest returns through
/// its `HYPERVISOR_iret` entry).
const ALLOWED: &[&str] = &[
    "libos::entry::instrumentation",
    "hypercall_page",
    // The backends' handler dispatch: called by their trap functions only between
    // `irqentry_enter` and `irqentry_exit`, it is the instrumentation region itself (a
    // direct call, where the generic bracket would cost the exception path an indirect
    // call through a closure).
    "upcall_kvm::traps::dispatch",
    "upcall_xen::traps::dispatch",
];

/// Instruction prefixes objdump prints before a mnemonic (`bnd jmp`, `notrack call`,
/// `cs call`, ...): skipped, so a prefixed branch is still seen as one.
const PREFIXES: &[&str] = &[
    "bnd", "notrack", "cs", "ds", "es", "fs", "gs", "ss", "data16", "addr32", "rex", "rex.W",
    "rex.B", "rex.X", "rex.R", "rex.WB", "lock", "rep", "repz", "repnz", "repe", "repne",
];

/// One offending instruction.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    /// Function (demangled) and offset of the instruction.
    pub from: String,
    /// What it calls or jumps to.
    pub to: String,
}

/// Finds violations in `objdump -d` output of the section spanning `[start, end)`.
pub fn violations(disassembly: &str, start: u64, end: u64) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut func = String::new();
    for line in disassembly.lines() {
        // Function header: "0000000000121710 <_ZN5libos...E>:"
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n)
        {
            func = format!("{:#}", rustc_demangle::demangle(name));
            continue;
        }
        let Some((addr, insn)) = line.trim_start().split_once(":\t") else {
            continue;
        };
        let mut words = insn
            .split_whitespace()
            .skip_while(|w| PREFIXES.contains(w) || w.starts_with("rex."));
        let Some(mnemonic) = words.next() else {
            continue;
        };
        if !(mnemonic.starts_with("call")
            || mnemonic.starts_with("jmp")
            || mnemonic.starts_with('j'))
        {
            continue;
        }
        let from = format!("{func} (at 0x{addr})");
        let operand = words.next().unwrap_or("");
        if operand.starts_with('*') {
            out.push(Violation {
                from,
                to: format!("indirect `{}`", insn.trim()),
            });
            continue;
        }
        let Ok(target) = u64::from_str_radix(operand, 16) else {
            continue;
        };
        if (start..end).contains(&target) {
            continue;
        }
        let name = insn
            .split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .map(|(n, _)| n.split('+').next().unwrap_or(n))
            .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
            .unwrap_or_else(|| format!("{target:#x}"));
        if !ALLOWED.iter().any(|a| name.starts_with(a)) {
            out.push(Violation { from, to: name });
        }
    }
    out
}

/// Checks one image; `Ok(n)` = the number of noinstr instructions examined is fine.
pub fn check_image(image: &Path) -> Result<Vec<Violation>, Failure> {
    let data = std::fs::read(image).or_else(|e| fail(format!("read {}: {e}", image.display())))?;
    let file =
        object::File::parse(&*data).or_else(|e| fail(format!("parse {}: {e}", image.display())))?;
    let Some(section) = file.section_by_name(".noinstr.text") else {
        return fail(format!("{} has no .noinstr.text section", image.display()));
    };
    if section.size() == 0 {
        return fail(format!(
            "{}: .noinstr.text is empty (entry core not linked?)",
            image.display()
        ));
    }
    let (start, end) = (section.address(), section.address() + section.size());
    let out = host::output_checked(
        Command::new("objdump")
            .args(["-d", "--no-show-raw-insn", "-j", ".noinstr.text"])
            .arg(image),
        "objdump (binutils)",
    )?;
    Ok(violations(
        &String::from_utf8_lossy(&out.stdout),
        start,
        end,
    ))
}

/// `cargo xtask check-noinstr [APP] [--release]`.
pub fn command(app: &str, release: bool) -> Outcome {
    let image = build::build(app, Platform::Kvm, release)?;
    let found = check_image(&image)?;
    for v in &found {
        println!("noinstr violation: {} calls {}", v.from, v.to);
    }
    if found.is_empty() {
        println!("check-noinstr: {} is clean", image.display());
        Ok(0)
    } else {
        fail(format!(
            "{} noinstr violation(s) in {}",
            found.len(),
            image.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
0000000000001000 <_ZN5libos5entry14irqentry_enter17h0123456789abcdefE>:
    1000:\tpush   %rbp
    1004:\tcall   2000 <_ZN5libos5entry15instrumentation17h0123456789abcdefE>
    1009:\tcall   1010 <_ZN5libos5entry5local17h0123456789abcdefE>
    100e:\tjmp    3000 <_ZN5libos7console6_print17h0123456789abcdefE+0x10>
    1010:\tcall   *%rax
    1012:\tbnd jmp 4000 <_ZN5libos4time6now_ns17h0123456789abcdefE>
    1018:\tnotrack jmp *%rcx
    101c:\tjmp    5000 <hypercall_page+0x2e0>
";

    #[test]
    fn finds_calls_out_of_the_section() {
        let v = violations(DUMP, 0x1000, 0x1100);
        assert_eq!(v.len(), 4, "{v:?}");
        assert_eq!(v[0].to, "libos::console::_print");
        assert!(v[0].from.starts_with("libos::entry::irqentry_enter"));
        assert!(v[1].to.starts_with("indirect"));
        // Prefixed branches are branches too (they were skipped before).
        assert_eq!(v[2].to, "libos::time::now_ns");
        assert!(v[3].to.starts_with("indirect"));
    }
}
