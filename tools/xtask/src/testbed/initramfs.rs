//! The initramfs writer: a file tree, the cpio "newc" format Linux unpacks, and the
//! FNV hash that names cached archives by their contents (pure; host-tested).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::testbed::files::{read, rename, temp_path};
use crate::{Failure, fail};

/// A file system tree to archive, by path (no leading `/`). Sorted, so a directory
/// comes before what it holds.
#[derive(Debug, Default)]
pub(crate) struct Tree(pub(crate) BTreeMap<String, Node>);

/// One entry of a [`Tree`].
#[derive(Debug)]
pub(crate) enum Node {
    /// A directory (mode 0755).
    Dir,
    /// A file copied from the host, with its permission bits.
    File(PathBuf, u32),
    /// A file with these contents and permission bits.
    Data(Vec<u8>, u32),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

impl Tree {
    /// Adds `node` at `path`, and the directories above it.
    pub(crate) fn insert(&mut self, path: &str, node: Node) {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.0
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir);
            parent = p.parent();
        }
        self.0.insert(path.to_string(), node);
    }

    /// Adds `root/path` (a file or a symlink) as `path`.
    pub(crate) fn add_file(&mut self, root: &Path, path: &str) -> Result<(), Failure> {
        let src = root.join(path);
        let meta = fs::symlink_metadata(&src)
            .or_else(|e| fail(format!("Xen test bed: {}: {e}", src.display())))?;
        let node = if meta.file_type().is_symlink() {
            let target = fs::read_link(&src)
                .or_else(|e| fail(format!("readlink {}: {e}", src.display())))?;
            Node::Symlink(target.to_string_lossy().into_owned())
        } else {
            use std::os::unix::fs::PermissionsExt;
            Node::File(src, meta.permissions().mode() & 0o7777)
        };
        self.insert(path, node);
        Ok(())
    }

    /// Adds the files and symlinks under `root` whose relative paths `keep` accepts.
    pub(crate) fn add_tree(
        &mut self,
        root: &Path,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(), Failure> {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let entries =
                fs::read_dir(&dir).or_else(|e| fail(format!("read {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let rel = rel.join(entry.file_name());
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir {
                    stack.push(rel);
                } else if let Some(path) = rel.to_str().filter(|p| keep(p)) {
                    self.add_file(root, path)?;
                }
            }
        }
        Ok(())
    }

    /// Fails if an ELF file in the tree needs a shared library the tree lacks.
    pub(crate) fn check_libraries(&self) -> Result<(), Failure> {
        use object::read::elf::{Dyn, FileHeader};
        let have: Vec<&str> = self
            .0
            .keys()
            .filter(|p| {
                p.starts_with("lib/x86_64-linux-gnu/") || p.starts_with("usr/lib/x86_64-linux-gnu/")
            })
            .filter_map(|p| p.rsplit('/').next())
            .collect();
        for (path, node) in &self.0 {
            let Node::File(src, _) = node else { continue };
            let data = read(src)?;
            let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(&*data) else {
                continue;
            };
            let needed: Vec<String> = (|| {
                let endian = header.endian().ok()?;
                let sections = header.sections(endian, &*data).ok()?;
                let (dynamic, link) = sections.dynamic(endian, &*data).ok()??;
                let strings = sections.strings(endian, &*data, link).ok()?;
                Some(
                    dynamic
                        .iter()
                        .filter(|d| d.tag32(endian) == Some(object::elf::DT_NEEDED))
                        .filter_map(|d| d.string(endian, strings).ok())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                )
            })()
            .unwrap_or_default();
            if let Some(lib) = needed.iter().find(|l| !have.contains(&l.as_str())) {
                return fail(format!(
                    "Xen test bed: /{path} needs {lib}, which no package in DOM0_PACKAGES provides"
                ));
            }
        }
        Ok(())
    }

    /// Writes the tree as an uncompressed `newc` cpio archive (what Linux unpacks into
    /// its initramfs), through a temporary file.
    pub(crate) fn write(&self, out: &Path) -> Result<(), Failure> {
        let tmp = temp_path(out);
        let file =
            fs::File::create(&tmp).or_else(|e| fail(format!("create {}: {e}", tmp.display())))?;
        let mut cpio = Cpio::new(BufWriter::new(file));
        for (path, node) in &self.0 {
            let written = match node {
                Node::Dir => cpio.dir(path),
                Node::File(src, mode) => cpio.file(path, *mode, &read(src)?),
                Node::Data(data, mode) => cpio.file(path, *mode, data),
                Node::Symlink(target) => cpio.symlink(path, target),
                Node::CharDev(major, minor) => cpio.char_device(path, *major, *minor),
            };
            written.or_else(|e| fail(format!("write {}: {e}", tmp.display())))?;
        }
        cpio.finish()
            .and_then(|mut w| w.flush())
            .or_else(|e| fail(format!("write {}: {e}", tmp.display())))?;
        rename(&tmp, out)
    }
}

/// A writer of `newc` cpio archives (`070701` headers, ASCII hex fields, name and data
/// each padded to 4 bytes), the format Linux's initramfs unpacker reads. Entries are
/// owned by root, dated 1970, each with its own inode number.
#[derive(Debug)]
pub(crate) struct Cpio<W: Write> {
    out: W,
    /// Bytes written so far (for the padding).
    len: u64,
    /// The next inode number.
    ino: u32,
}

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> Cpio<W> {
    pub(crate) fn new(out: W) -> Self {
        Cpio {
            out,
            len: 0,
            ino: 1,
        }
    }

    /// A regular file.
    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | mode, 1, (0, 0), data)
    }

    /// A directory (mode 0755).
    pub(crate) fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    /// A symbolic link.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node (mode 0600).
    pub(crate) fn char_device(&mut self, path: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | 0o600, 1, (major, minor), &[])
    }

    /// Ends the archive (the `TRAILER!!!` entry), padded to 512 bytes so another archive
    /// can follow, and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        self.pad(512)?;
        Ok(self.out)
    }

    pub(crate) fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let too_big = || io::Error::other(format!("{name}: too large for cpio"));
        let size = u32::try_from(data.len()).map_err(|_| too_big())?;
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big())?;
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad(4)?;
        self.put(data)?;
        self.pad(4)?;
        self.ino += 1;
        Ok(())
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub(crate) fn pad(&mut self, align: u64) -> io::Result<()> {
        let n = (align - self.len % align) % align;
        self.put(&vec![0; n as usize])
    }
}

/// 64-bit FNV-1a: a stable hash for cache keys.
#[derive(Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive entry: name, mode, rdev (major, minor), data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Splits a newc archive back into its entries.
    fn parse(mut a: &[u8]) -> Vec<Entry> {
        let total = a.len();
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let align = |a: &mut &[u8]| {
            let off = total - a.len();
            *a = &a[(4 - off % 4) % 4..];
        };
        let mut entries = Vec::new();
        loop {
            assert_eq!(&a[..6], b"070701");
            let (mode, size, rdev, namesize) = (
                field(a, 1),
                field(a, 6),
                (field(a, 9), field(a, 10)),
                field(a, 11),
            );
            let name = String::from_utf8(a[110..110 + namesize as usize - 1].to_vec()).unwrap();
            a = &a[110 + namesize as usize..];
            align(&mut a);
            let data = a[..size as usize].to_vec();
            a = &a[size as usize..];
            align(&mut a);
            if name == "TRAILER!!!" {
                assert!(a.iter().all(|&b| b == 0), "only padding after the trailer");
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn cpio_round_trip() {
        let mut c = Cpio::new(Vec::new());
        c.dir("bin").unwrap();
        c.file("bin/busybox", 0o755, b"\x7fELF...").unwrap();
        c.symlink("bin/sh", "busybox").unwrap();
        c.char_device("dev/console", 5, 1).unwrap();
        c.file("empty", 0o644, b"").unwrap();
        let a = c.finish().unwrap();
        assert_eq!(a.len() % 512, 0);
        let e = parse(&a);
        let names: Vec<&str> = e.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev/console", "empty"]
        );
        assert_eq!(e[0].1, S_IFDIR | 0o755);
        assert_eq!((e[1].1, &e[1].3[..]), (S_IFREG | 0o755, &b"\x7fELF..."[..]));
        assert_eq!((e[2].1, &e[2].3[..]), (S_IFLNK | 0o777, &b"busybox"[..]));
        assert_eq!((e[3].1, e[3].2), (S_IFCHR | 0o600, (5, 1)));
    }

    #[test]
    fn tree_adds_parents_first() {
        let mut t = Tree::default();
        t.insert("a/b/c", Node::Data(vec![], 0o644));
        t.insert("a-b", Node::Dir);
        let keys: Vec<&str> = t.0.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "a-b", "a/b", "a/b/c"]);
    }

    #[test]
    fn fnv_is_stable() {
        let mut h = Fnv::new();
        h.add(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
