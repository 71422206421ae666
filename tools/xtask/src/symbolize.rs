//! Turning backtrace addresses into function names, from the image's symbol table.
//!
//! The guest prints `  #N 0x<16 hex>` (a return address) and `  rip 0x<16 hex>` (the
//! faulting instruction); [`Symbols::annotate`] appends `  function+0xoff`.

use std::io::Read;
use std::path::Path;

use object::{Object, ObjectSymbol, SymbolKind};

use crate::{Failure, Outcome, fail};

/// Function symbols of an image, sorted by address.
#[derive(Debug, Default)]
pub struct Symbols {
    funcs: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// Reads the symbol table of `image`.
    pub fn load(image: &Path) -> Result<Symbols, Failure> {
        let data =
            std::fs::read(image).or_else(|e| fail(format!("read {}: {e}", image.display())))?;
        let file = object::File::parse(&*data)
            .or_else(|e| fail(format!("parse {}: {e}", image.display())))?;
        let mut funcs: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Text) && s.address() != 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .collect();
        funcs.sort_by_key(|f| f.0);
        Ok(Symbols { funcs })
    }

    /// The function containing `addr`, demangled, with the offset.
    pub fn lookup(&self, addr: u64) -> Option<String> {
        let i = self.funcs.partition_point(|f| f.0 <= addr).checked_sub(1)?;
        let (start, size, name) = &self.funcs[i];
        // Symbols without a size (asm labels) extend to the next symbol.
        let end = if *size > 0 {
            start + size
        } else {
            self.funcs.get(i + 1).map_or(u64::MAX, |f| f.0)
        };
        (addr < end).then(|| format!("{:#}+{:#x}", rustc_demangle::demangle(name), addr - start))
    }

    /// The functions as a `System.map` (`ADDR t NAME` lines, as `nm` writes them), for
    /// tools that read one, e.g. `xenctx -s`; names demangled, blanks replaced by `_`
    /// (such readers split on whitespace).
    pub fn system_map(&self) -> String {
        self.funcs
            .iter()
            .map(|(addr, _, name)| {
                let name = format!("{:#}", rustc_demangle::demangle(name)).replace(' ', "_");
                format!("{addr:016x} t {name}\n")
            })
            .collect()
    }

    /// `line` with the function name appended if it is a backtrace line.
    pub fn annotate(&self, line: &str) -> String {
        let Some((kind, addr)) = parse_frame_line(line) else {
            return line.to_string();
        };
        // A return address points after the call: look up the call itself.
        let lookup_addr = if kind == FrameKind::Return {
            addr.saturating_sub(1)
        } else {
            addr
        };
        match self.lookup(lookup_addr) {
            Some(name) => format!("{line}  {name}"),
            None => line.to_string(),
        }
    }
}

/// Which address a backtrace line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `#N`: a return address.
    Return,
    /// `rip`: the faulting instruction.
    Rip,
}

/// Parses `  #N 0x…` and `  rip 0x…` lines.
pub fn parse_frame_line(line: &str) -> Option<(FrameKind, u64)> {
    let mut words = line.split_whitespace();
    let tag = words.next()?;
    let kind = match tag {
        "rip" => FrameKind::Rip,
        t if t
            .strip_prefix('#')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            FrameKind::Return
        }
        _ => return None,
    };
    let hex = words.next()?.strip_prefix("0x")?;
    if words.next().is_some() || hex.len() != 16 {
        return None;
    }
    Some((kind, u64::from_str_radix(hex, 16).ok()?))
}

/// `cargo xtask symbolize IMAGE [LOG]`.
pub fn command(image: &Path, log: Option<&Path>) -> Outcome {
    let symbols = Symbols::load(image)?;
    let text = match log {
        Some(p) => {
            std::fs::read_to_string(p).or_else(|e| fail(format!("read {}: {e}", p.display())))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .or_else(|e| fail(format!("read stdin: {e}")))?;
            s
        }
    };
    for line in text.lines() {
        println!("{}", symbols.annotate(line));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lines() {
        assert_eq!(
            parse_frame_line("  #12 0x0000000000101234"),
            Some((FrameKind::Return, 0x101234))
        );
        assert_eq!(
            parse_frame_line("  rip 0x00000000001009ba"),
            Some((FrameKind::Rip, 0x1009ba))
        );
        assert_eq!(parse_frame_line("  rip=00000000001009ba"), None);
        assert_eq!(parse_frame_line("  # 0x0000000000101234"), None);
        assert_eq!(parse_frame_line("  #1 0x1234"), None);
        assert_eq!(parse_frame_line("  #1 0x0000000000101234 extra"), None);
    }

    #[test]
    fn lookup_uses_sizes_and_return_addresses() {
        let s = Symbols {
            funcs: vec![
                (0x1000, 0x10, "a".into()),
                (0x1010, 0, "b".into()),
                (0x1100, 0x10, "c".into()),
            ],
        };
        assert_eq!(s.lookup(0x1004).as_deref(), Some("a+0x4"));
        assert_eq!(s.lookup(0x10ff).as_deref(), Some("b+0xef"));
        assert_eq!(s.lookup(0x1110), None);
        assert_eq!(
            s.annotate("  #0 0x0000000000001010"),
            "  #0 0x0000000000001010  a+0xf"
        );
        assert_eq!(
            s.annotate("  rip 0x0000000000001010"),
            "  rip 0x0000000000001010  b+0x0"
        );
    }
}
