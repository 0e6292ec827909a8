//! Replays the fuzz corpus on stable: every target of
//! `tapedeck::fuzzing` over every file in fuzz/corpus/<target>/ (the
//! seeds and the inputs worth keeping) and fuzz/regressions/<target>/
//! (crashes once found, minimized). The real fuzzer (nightly, fuzz/run.sh)
//! searches for new inputs; this keeps the ones found passing.
//!
//! Its own test binary, apart from tests/it: it needs none of its helpers
//! and builds in seconds, so `cargo test --test fuzz_corpus` is a quick
//! check after a fix.

use std::path::{Path, PathBuf};

use tapedeck::fuzzing::TARGETS;

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_survives_its_corpus_and_regressions() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let seeds = inputs(&fuzz.join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed");
        for file in seeds
            .iter()
            .chain(&inputs(&fuzz.join("regressions").join(name)))
        {
            let data = std::fs::read(file).expect("a readable corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "targets panicked on: {failed:#?}");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        let call = format!("tapedeck::fuzzing::{name}(data)");
        let source = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_default();
        assert!(
            source.contains(&call) && manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/fuzz_targets/{name}.rs must call {call} and be a [[bin]] of fuzz/Cargo.toml"
        );
    }
}
