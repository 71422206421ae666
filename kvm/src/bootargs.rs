//! The kernel command line from uhyve's flattened device tree (pure; host-tested).
//!
//! uhyve 0.10 writes `/chosen/bootargs` as `"<kernel args> -- <app args>"` (the `--`
//! only when the user gave one), which is exactly the split libos's command-line parser
//! applies. (Its `Cmdval` hypercall is not used: it overwrites argv[0] with the first
//! argument.)
#![forbid(unsafe_code)]

use core::fmt;

/// A device tree uhyve should not have produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not a device tree (bad magic, truncated, inconsistent sizes).
    Malformed,
    /// `bootargs` is not NUL-terminated UTF-8.
    BadBootargs,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed => write!(f, "the device tree from uhyve is malformed"),
            Error::BadBootargs => write!(f, "/chosen/bootargs is not NUL-terminated UTF-8"),
        }
    }
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

fn be32(blob: &[u8], at: usize) -> Result<u32, Error> {
    let b = blob
        .get(at..at.checked_add(4).ok_or(Error::Malformed)?)
        .ok_or(Error::Malformed)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `/chosen/bootargs`, or `None` if the tree has no such property.
///
/// A small walker of our own: the `fdt` crate panics on corrupted trees (found by the
/// property tests below), and a hypervisor-supplied blob must never crash the kernel.
pub fn bootargs(blob: &[u8]) -> Result<Option<&str>, Error> {
    let size = total_size(blob).ok_or(Error::Malformed)?;
    let blob = blob.get(..size).ok_or(Error::Malformed)?;
    let (struct_off, strings_off) = (be32(blob, 8)? as usize, be32(blob, 12)? as usize);
    let strings = blob.get(strings_off..).ok_or(Error::Malformed)?;
    let mut at = struct_off;
    // Depth of the current node (root = 1) and the depth at which we are inside /chosen.
    let mut depth = 0usize;
    let mut in_chosen = None;
    loop {
        let token = be32(blob, at)?;
        at += 4;
        match token {
            FDT_BEGIN_NODE => {
                let rest = blob.get(at..).ok_or(Error::Malformed)?;
                let len = rest.iter().position(|&b| b == 0).ok_or(Error::Malformed)?;
                depth += 1;
                if depth == 2 && &rest[..len] == b"chosen" {
                    in_chosen = Some(depth);
                }
                at = (at + len + 1).next_multiple_of(4);
            }
            FDT_END_NODE => {
                if in_chosen == Some(depth) {
                    return Ok(None);
                }
                depth = depth.checked_sub(1).ok_or(Error::Malformed)?;
            }
            FDT_PROP => {
                let len = be32(blob, at)? as usize;
                let name_off = be32(blob, at + 4)? as usize;
                let value_at = at + 8;
                let value = blob
                    .get(value_at..value_at.checked_add(len).ok_or(Error::Malformed)?)
                    .ok_or(Error::Malformed)?;
                // Only /chosen's property names are looked up (a byte scan each; on
                // uhyve here KVM emulates every guest instruction).
                if in_chosen == Some(depth) && prop_name(strings, name_off)? == b"bootargs" {
                    let text = value.strip_suffix(&[0]).ok_or(Error::BadBootargs)?;
                    return core::str::from_utf8(text)
                        .map(Some)
                        .map_err(|_| Error::BadBootargs);
                }
                at = (value_at + len).next_multiple_of(4);
            }
            FDT_NOP => {}
            FDT_END => return Ok(None),
            _ => return Err(Error::Malformed),
        }
    }
}

/// The NUL-terminated property name at `off` in the strings block.
fn prop_name(strings: &[u8], off: usize) -> Result<&[u8], Error> {
    let name = strings.get(off..).ok_or(Error::Malformed)?;
    Ok(&name[..name.iter().position(|&b| b == 0).ok_or(Error::Malformed)?])
}

/// The total size a device tree header claims (to know how much to read), if `header`
/// starts with the FDT magic.
pub fn total_size(header: &[u8]) -> Option<usize> {
    let word = |i: usize| {
        header
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    (word(0)? == 0xd00d_feed).then_some(word(4)? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal device tree: root { chosen { bootargs = value } }.
    fn tree(value: &[u8]) -> Vec<u8> {
        let be = |v: u32| v.to_be_bytes();
        let mut structs = Vec::new();
        structs.extend(be(1)); // FDT_BEGIN_NODE ""
        structs.extend([0, 0, 0, 0]);
        structs.extend(be(1)); // FDT_BEGIN_NODE "chosen"
        structs.extend(b"chosen\0\0");
        structs.extend(be(3)); // FDT_PROP
        structs.extend(be(value.len() as u32));
        structs.extend(be(0)); // name offset of "bootargs"
        structs.extend(value);
        while structs.len() % 4 != 0 {
            structs.push(0);
        }
        structs.extend(be(2)); // END_NODE chosen
        structs.extend(be(2)); // END_NODE root
        structs.extend(be(9)); // FDT_END
        let strings = b"bootargs\0".to_vec();
        let header_len = 40u32;
        let rsv_off = header_len;
        let struct_off = rsv_off + 16;
        let strings_off = struct_off + structs.len() as u32;
        let total = strings_off + strings.len() as u32;
        let mut out = Vec::new();
        for v in [
            0xd00d_feed,
            total,
            struct_off,
            strings_off,
            rsv_off,
            17,
            16,
            0,
            strings.len() as u32,
            structs.len() as u32,
        ] {
            out.extend(be(v));
        }
        out.extend([0u8; 16]); // empty memory reservation map
        out.extend(structs);
        out.extend(strings);
        out
    }

    #[test]
    fn reads_bootargs() {
        let t = tree(b"preempt=full -- a b\0");
        assert_eq!(total_size(&t), Some(t.len()));
        assert_eq!(bootargs(&t), Ok(Some("preempt=full -- a b")));
        assert_eq!(bootargs(&tree(b"\0")), Ok(Some("")));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(bootargs(&tree(b"no nul")), Err(Error::BadBootargs));
        assert_eq!(bootargs(&tree(b"")), Err(Error::BadBootargs));
        assert_eq!(bootargs(&[0u8; 64]), Err(Error::Malformed));
        assert_eq!(total_size(&[0u8; 8]), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = bootargs(&bytes);
        }

        #[test]
        fn corrupted_trees_never_panic(value in "[ -~]{0,40}", flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut t = tree(format!("{value}\0").as_bytes());
            for (i, b) in flips {
                let n = t.len();
                t[i % n] = b;
            }
            let _ = bootargs(&t);
        }
    }
}
