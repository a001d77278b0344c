//! Unit tests of the Alertmanager configuration check: Go's URL reading, host spellings,
//! the configuration walk, decisions, reports and suggestions.

mod config;
mod decide;
mod hostile;
mod suggest;
mod urls;

use std::path::Path;

use super::{AmConfig, parse};
use crate::policy::{Policy, parse_policy};

/// A policy from YAML text; panics with the parser's message when invalid.
fn policy(yaml: &str) -> Policy {
    parse_policy(yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// An Alertmanager configuration from YAML text (`*_file` paths relative to `base`).
fn config_in(yaml: &str, base: &Path) -> AmConfig {
    parse(yaml, "am.yml", base).unwrap_or_else(|e| panic!("{e}"))
}

fn config(yaml: &str) -> AmConfig {
    config_in(yaml, Path::new("/nonexistent"))
}
