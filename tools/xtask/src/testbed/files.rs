//! File helpers of the test-bed caches: every cache entry is written under a private
//! temporary name and renamed into place when complete, so concurrent runs (threads or
//! processes) never see half an entry.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Failure, fail};

/// Reads a whole file, failing with its name.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).or_else(|e| fail(format!("read {}: {e}", path.display())))
}

/// Creates a directory and its parents.
pub(crate) fn mkdir(dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir).or_else(|e| fail(format!("create {}: {e}", dir.display())))
}

/// Renames, failing with both names.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), Failure> {
    fs::rename(from, to).or_else(|e| {
        fail(format!(
            "rename {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// A sibling of `path` private to this call, renamed onto `path` when complete.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// The file in `dir` whose name starts with `prefix`; fails unless there is exactly one.
pub(crate) fn only_file(dir: &Path, prefix: &str) -> Result<PathBuf, Failure> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    match &found[..] {
        [one] => Ok(one.clone()),
        _ => fail(format!(
            "Xen test bed: expected one {prefix}* in {}, found {}",
            dir.display(),
            found.len()
        )),
    }
}
