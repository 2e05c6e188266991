//! The fuzz targets on stable, in the normal `cargo test`: every target in fuzz/fuzz_targets/ is
//! compiled here from its own file (not a copy), and every saved input in fuzz/seeds/<target>/
//! (the `regress_*` inputs a fuzzing run once crashed on, and the seeds) is run through it. So a
//! target that stops compiling against the library, or an input that panics again, fails the
//! suite without a nightly toolchain or cargo-fuzz.
//!
//! How: each target file says `use libfuzzer_sys::fuzz_target;` and `fuzz_target!(|data: &[u8]|
//! { ... })`. Here `libfuzzer_sys` is this test crate itself (`extern crate self as`), and its
//! `fuzz_target!` (at the end of this file, so the targets' own `use` names it) turns the body
//! into `pub fn run(data: &[u8])`. The targets' `#![no_main]` is a crate-level attribute that a
//! module ignores.

extern crate self as libfuzzer_sys;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

macro_rules! targets {
    ($($name:ident = $path:literal),* $(,)?) => {
        $(
            #[allow(unused_attributes)]
            #[path = $path]
            mod $name;
        )*
        /// Every target compiled here, by name, with its entry point.
        const TARGETS: &[(&str, fn(&[u8]))] = &[$((stringify!($name), $name::run)),*];
    };
}

targets!(
    client_lines = "../fuzz/fuzz_targets/client_lines.rs",
    config = "../fuzz/fuzz_targets/config.rs",
    contracts = "../fuzz/fuzz_targets/contracts.rs",
    difficulty = "../fuzz/fuzz_targets/difficulty.rs",
    gbt = "../fuzz/fuzz_targets/gbt.rs",
    line_reader = "../fuzz/fuzz_targets/line_reader.rs",
    notify = "../fuzz/fuzz_targets/notify.rs",
    payout_numbers = "../fuzz/fuzz_targets/payout_numbers.rs",
    proxy_header = "../fuzz/fuzz_targets/proxy_header.rs",
    stratum_line = "../fuzz/fuzz_targets/stratum_line.rs",
    zmq = "../fuzz/fuzz_targets/zmq.rs",
);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// File stems in `dir` with the extension `ext` (None: every file).
fn names_in(dir: &Path, ext: Option<&str>) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The list above is every target: one added to fuzz/ without being added here fails.
#[test]
fn every_fuzz_target_is_replayed() {
    let here: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names_in(&fuzz_dir().join("fuzz_targets"), Some("rs")), here, "fuzz/fuzz_targets/ vs this file's list");
    let cargo = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for n in &here {
        assert!(cargo.contains(&format!("path = \"fuzz_targets/{n}.rs\"")), "fuzz/Cargo.toml has no [[bin]] for {n}");
    }
    // Every seed directory belongs to a target.
    let seeds = names_in(&fuzz_dir().join("seeds"), None);
    assert!(seeds.is_subset(&here), "seed directories without a target: {:?}", seeds.difference(&here));
}

/// Every saved input through its target; each failure is named by its file.
#[test]
fn saved_fuzz_inputs_replay_without_a_failure() {
    let mut failures = Vec::new();
    let (mut inputs, mut regress) = (0usize, 0usize);
    for (name, run) in TARGETS {
        let dir = fuzz_dir().join("seeds").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            inputs += 1;
            regress += f.file_name().unwrap().to_string_lossy().contains("regress_") as usize;
            if let Err(p) = std::panic::catch_unwind(|| run(&data)) {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {}: {why}", f.display()));
            }
        }
    }
    println!("{inputs} saved inputs replayed, {regress} of them regress_*");
    assert!(failures.is_empty(), "{} saved input(s) fail:\n{}", failures.len(), failures.join("\n"));
    // The directories were found and read: the regress_* inputs known when this was written.
    assert!(regress >= 8 && inputs >= 80, "{inputs} inputs, {regress} regress_*: fuzz/seeds/ not read");
}

/// Stands in for libfuzzer-sys's macro: the target's body as `pub fn run(data: &[u8])`.
#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident: &[u8]| $body:block) => {
        pub fn run($data: &[u8]) $body
    };
}
