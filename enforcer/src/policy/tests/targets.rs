//! `targets`: what is accepted and refused.

use super::*;

#[test]
fn targets_errors() {
    assert_err(
        "default: deny\ntargets:\n  - pid: 1\n",
        3,
        5,
        "unknown key \"pid\" (expected one of: cgroup, systemd_unit, process)",
    );
    assert_err(
        "default: deny\ntargets:\n  - cgroup: /a\n    process: [x]\n",
        4,
        5,
        "entry has both \"cgroup\" and \"process\"; give exactly one",
    );
    assert_err(
        "default: deny\ntargets:\n  - process: []\n",
        3,
        14,
        "process must not be empty",
    );
    assert_err(
        "default: deny\ntargets:\n  - cgroup: ''\n",
        3,
        13,
        "cgroup must not be empty",
    );
    assert_err(
        "default: deny\ntargets:\n  - {}\n",
        3,
        5,
        "entry needs one of: cgroup, systemd_unit, process",
    );
    assert_err(
        "default: deny\ntargets: x\n",
        2,
        10,
        "targets must be a list of entries, found a string",
    );
}
