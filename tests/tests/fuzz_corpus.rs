//! The fuzz targets' checks (`fuzz/src/lib.rs`) on every file of the seed corpus
//! (`fuzz/corpus/`), so the inputs that once broke a parser stay regression tests on stable
//! Rust, without libFuzzer. The corpus holds the cases of issue 11 (a NUL that cut the file
//! short, control characters, oversized names, unknown keys) next to ordinary files.
//! Never touches the kernel.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::{fs, path::PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{}: only {} seeds",
        dir.display(),
        files.len()
    );
    files
}

fn each(target: &str, check: fn(&[u8])) {
    for path in corpus(target) {
        let data = fs::read(&path).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
            std::panic::resume_unwind(Box::new(format!("{}: {e:?}", path.display())));
        }
    }
}

#[test]
fn policy_seeds_pass_the_fuzz_checks() {
    each("policy", checks::policy);
}

#[test]
fn amconfig_seeds_pass_the_fuzz_checks() {
    each("amconfig", checks::amconfig);
}

/// The checks are not vacuous: a policy whose compiled maps disagreed with the reference would
/// panic, and a NUL-cut policy is refused rather than shortened.
#[test]
fn the_nul_seed_is_refused_with_its_position() {
    let data =
        fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/policy/nul.yaml"))
            .unwrap();
    let text = String::from_utf8(data).unwrap();
    let err = enforcer::policy::parse_policy(&text, "nul.yaml").unwrap_err();
    assert!(err.to_string().contains("nul.yaml:"), "{err}");
}
