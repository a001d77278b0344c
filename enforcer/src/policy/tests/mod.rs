//! The policy parser by scenario: well-formed policies (`shape`), rejected values (`errors`),
//! `fqdn` and `dns` (`fqdn`), `targets` (`targets`), `alertmanager` (`alertmanager`), files
//! (`files`), presets (`presets`) and hostile input (`hostile`).

mod alertmanager;
mod errors;
mod files;
mod fqdn;
mod hostile;
mod lint;
mod presets;
mod shape;
mod targets;

use super::*;

pub(super) fn ok(yaml: &str) -> Policy {
    parse_policy(yaml, "p.yaml")
        .unwrap_or_else(|e| panic!("expected a valid policy, got {e}\n{yaml}"))
}

/// (line, column, message) of a rejected policy.
pub(super) fn err(yaml: &str) -> (usize, usize, String) {
    match parse_policy(yaml, "p.yaml") {
        Ok(p) => panic!("expected an error, got {p:?}\n{yaml}"),
        Err(PolicyError::Invalid { location, problem }) => {
            assert_eq!(&*location.file, "p.yaml");
            (location.line, location.column, problem.to_string())
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

pub(super) fn assert_err(yaml: &str, line: usize, column: usize, message: &str) {
    let (l, c, m) = err(yaml);
    assert_eq!((l, c, m.as_str()), (line, column, message), "\n{yaml}");
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
