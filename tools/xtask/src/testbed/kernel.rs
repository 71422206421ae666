//! The Linux kernel as an ELF: cut out of Debian's bzImage (a PV dom0 boots from the
//! ELF through Xen's multiboot loader).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::testbed::files::read;
use crate::{Failure, fail, host};

/// Cuts the kernel's ELF out of a bzImage: the setup header locates the compressed
/// payload, whose last four bytes are the ELF's size; the payload is decompressed with
/// the matching tool (installed from Debian if missing and we are root).
pub(crate) fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), Failure> {
    let data = read(bzimage)?;
    let bad = |what: &str| fail(format!("{}: {what}", bzimage.display()));
    if data.len() < 0x250 || &data[0x202..0x206] != b"HdrS" {
        return bad("not a bzImage (no HdrS setup header)");
    }
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248) as usize;
    let Some(payload) = data.get(start..start + u32_at(0x24c) as usize) else {
        return bad("payload outside the file");
    };
    if payload.len() < 8 {
        return bad("empty payload");
    }
    let size = u32::from_le_bytes(payload[payload.len() - 4..].try_into().expect("4 bytes"));
    let (tool, args, package): (&str, &[&str], &str) = match payload {
        [0x1f, 0x8b, ..] => ("gzip", &["-dc"], "gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", &["-dc", "--single-stream"], "xz-utils"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["-dcq"], "zstd"),
        _ => return bad("payload compressed with a method this tool does not handle"),
    };
    host::ensure_program(tool, &[package])?;
    let file = fs::File::create(out).or_else(|e| fail(format!("create {}: {e}", out.display())))?;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .or_else(|e| fail(format!("cannot start {tool}: {e}")))?;
    // The trailing size makes some tools complain after they wrote everything: the
    // result is judged by its size, not by their exit status.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(payload);
    let _ = child.wait();
    let got = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    if got != u64::from(size) {
        return fail(format!(
            "{tool} unpacked {got} bytes of {}'s payload, expected {size}",
            bzimage.display()
        ));
    }
    check_elf(out)
}

/// Fails unless `path` starts with the ELF magic.
pub(crate) fn check_elf(path: &Path) -> Result<(), Failure> {
    let mut magic = [0u8; 4];
    let ok = fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok();
    if ok && &magic == b"\x7fELF" {
        Ok(())
    } else {
        fail(format!("{} is not an ELF file", path.display()))
    }
}
