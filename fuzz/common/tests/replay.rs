//! Replays every committed fuzz input on stable: the regression inputs (each a crash
//! the fuzzer once found: `fuzz/regressions/<target>/`) and the seed corpus
//! (`fuzz/seeds/<target>/`), through the same target functions the fuzzers run; then a
//! few thousand pseudo-random inputs per target as a smoke check.

use std::fs;
use std::path::{Path, PathBuf};

use upcall_fuzz_common::{TARGETS, target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn inputs(kind: &str, name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(name);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn regression_and_seed_inputs_pass() {
    let mut n = 0;
    for kind in ["regressions", "seeds"] {
        let Ok(dirs) = fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for d in dirs {
            let d = d.unwrap().path();
            if !d.is_dir() {
                continue;
            }
            let name = d.file_name().unwrap().to_str().unwrap().to_owned();
            let run = target(&name).unwrap_or_else(|| panic!("{kind}/{name}: no such target"));
            for (path, bytes) in inputs(kind, &name) {
                // A panic names the input through the test's output.
                eprintln!("replaying {}", path.display());
                run(&bytes);
                n += 1;
            }
        }
    }
    eprintln!("{n} inputs replayed");
}

#[test]
fn built_in_seeds_pass() {
    for (name, input) in upcall_fuzz_common::seeds::seeds() {
        target(name).unwrap_or_else(|| panic!("seed for unknown target {name}"))(&input);
    }
}

/// Writes the seed corpus to `fuzz/seeds/<target>/seed-N` (run after changing seeds).
#[test]
#[ignore = "writes files; run by hand after changing the seeds"]
fn write_seeds() {
    let mut count = std::collections::BTreeMap::new();
    for (name, input) in upcall_fuzz_common::seeds::seeds() {
        let dir = fuzz_dir().join("seeds").join(name);
        fs::create_dir_all(&dir).unwrap();
        let n = count.entry(name).or_insert(0);
        fs::write(dir.join(format!("seed-{n}")), input).unwrap();
        *n += 1;
    }
}

/// xorshift64*: deterministic bytes.
fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn every_target_survives_random_inputs() {
    for &(name, run) in TARGETS {
        let mut seed = 0x9e37_79b9_7f4a_7c15 ^ name.len() as u64;
        for k in 0..2000 {
            let input = bytes(&mut seed, k % 600);
            run(&input);
        }
    }
}
