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

#[test]
fn target_values_are_validated() {
    // Issue 11 case 2: each of these used to pass `check` and enforce nothing under `run`.
    let t = |entry: &str| format!("default: deny\ntargets:\n  - {entry}\n");
    assert_err(
        &t("process: [/usr/bin/alertmanager]"),
        3,
        15,
        "invalid target \"/usr/bin/alertmanager\": a process target is an executable's file \
         name, not a path (did you mean \"alertmanager\"?)",
    );
    assert_err(
        &t("process: [1]"),
        3,
        15,
        "a process name must be an executable name, found a number",
    );
    assert_err(
        &t("process: [\"a \"]"),
        3,
        15,
        "invalid target \"a \": an executable name has no leading or trailing spaces",
    );
    let (_, _, m) = err(&t(&format!("process: [{}]", "a".repeat(256))));
    assert!(
        m.ends_with("256 bytes, longer than a file name may be (255 bytes)"),
        "{m}"
    );
    assert_err(
        &t("systemd_unit: prometheus-alertmanager"),
        3,
        19,
        "invalid target \"prometheus-alertmanager\": a unit name ends with .service, .scope, \
         .slice (did you mean \"prometheus-alertmanager.service\"?)",
    );
    let (_, _, m) = err(&t("systemd_unit: system.slice/x.service"));
    assert!(m.contains("a unit name has no `/`"), "{m}");
    for path in ["../../..", "/sys/fs/cgroup/../../etc", "a/./b"] {
        let (l, c, m) = err(&t(&format!("cgroup: {path}")));
        assert_eq!((l, c), (3, 13), "{m}");
        assert!(
            m.contains("`.` and `..` are not allowed in a cgroup path"),
            "{m}"
        );
    }
    // What is valid stays valid.
    let p = ok(&t(
        "process: [alertmanager, prometheus-alertmanager]\n  - systemd_unit: am.service\n  - systemd_unit: kubepods.slice\n  - cgroup: kubepods.slice/pod1",
    ));
    assert_eq!(p.targets.len(), 4);
}

#[test]
fn check_lists_targets_with_the_kernel_prefix_of_long_names() {
    let p =
        ok("default: deny\ntargets:\n  - process: [prometheus-alertmanager, am]\n  - cgroup: /a\n");
    let mut out = String::new();
    crate::policy::targets::render(&mut out, &p);
    assert!(out.contains("targets (2):"), "{out}");
    assert!(
        out.contains("  process prometheus-alertmanager, am  (p.yaml:3:5)"),
        "{out}"
    );
    assert!(
        out.contains("execs are matched by \"prometheus-aler\""),
        "{out}"
    );
    assert!(out.contains("  cgroup /a  (p.yaml:4:5)"), "{out}");
}
