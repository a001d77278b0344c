//! What each fuzz target checks, on one input. The cargo-fuzz targets (`fuzz_targets/`) call
//! these on mutated inputs; the project's test suite (`tests/tests/fuzz_corpus.rs`) calls them
//! on every file of the seed corpus, so the corpus stays a regression suite on stable Rust.
//! Both check: never a panic, and messages that stay short whatever the input.

use std::path::Path;

use enforcer::amconfig::{self, CheckOptions};
use enforcer::compile;
use enforcer::policy::{default_policy, lint, parse_policy};
use enforcer::reference::evaluate;

/// Longest error message accepted (values are quoted cut to ~100 characters).
pub const MAX_MESSAGE: usize = 2_000;

/// The policy parser, linter and compiler: an accepted policy compiles or is refused with a
/// message, and its compiled maps give the reference evaluator's verdict for the first and last
/// address of each of its first 16 rules.
///
/// # Panics
/// When one of these properties does not hold (that is the finding).
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match parse_policy(text, "fuzz.yaml") {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            assert!(message.len() < MAX_MESSAGE, "{} bytes", message.len());
            assert!(e.location().is_none_or(|l| l.line >= 1 && l.column >= 1));
            return;
        }
    };
    let _ = lint::warnings(&policy);
    let Ok(compiled) = compile::compile(&policy) else {
        return;
    };
    let _ = compile::render(&policy, &compiled);
    for rule in policy.rules.iter().take(16) {
        for addr in [rule.net.network(), rule.net.broadcast()] {
            for (port, protocol) in [(443, 6), (53, 17), (0, 1)] {
                let expected = evaluate(&policy, addr, port, protocol);
                assert_eq!(
                    compile::lookup(&compiled, addr, port, protocol),
                    (expected.verdict(), expected.rule_id()),
                    "{addr} {port} {protocol}"
                );
            }
        }
    }
}

/// The alertmanager.yml reader (the file an attacker writes in a pull request), the decider and
/// both reports. `*_file` fields resolve against a directory that does not exist.
///
/// # Panics
/// When a property does not hold.
pub fn amconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match amconfig::parse(text, "fuzz.yml", Path::new("/nonexistent-fuzz-base")) {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            assert!(message.len() < MAX_MESSAGE, "{} bytes", message.len());
            return;
        }
    };
    let policy = default_policy();
    for strict in [false, true] {
        let report = amconfig::check(
            &config,
            &policy,
            CheckOptions {
                resolve: false,
                strict,
            },
        );
        let _ = report.to_text();
        let _ = report.to_json();
    }
}
