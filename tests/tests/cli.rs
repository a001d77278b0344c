//! The command line as a user meets it: `enforcer check` and `enforcer presets` (no root needed).
use std::process::Command;

use integration_tests::{TempDir, enforcer_bin};

fn enforcer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("running enforcer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_valid_policy_and_prints_compiled_rules() {
    let dir = TempDir::new().unwrap();
    let p = dir
        .write("p.yaml", "mode: enforce\ndefault: deny\nblock:\n  - preset: cloud-metadata\nallow:\n  - cidr: 10.96.0.10/32\n    ports: [53]\n    protocols: [udp, tcp]\n")
        .unwrap();
    let (code, out, err) = enforcer(&["check", "--policy", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("169.254.169.254/32"), "{out}");
    assert!(out.contains("10.96.0.10/32"), "{out}");
}

#[test]
fn check_rejects_broken_policies_with_file_line_and_column() {
    let dir = TempDir::new().unwrap();
    let cases = [
        (
            "bad-cidr.yaml",
            "default: deny\nblock:\n  - cidr: 10.0.0.300/8\n",
            ":3:11:",
        ),
        (
            "unknown-key.yaml",
            "default: deny\nblok:\n  - preset: private\n",
            ":2:1:",
        ),
        (
            "unknown-preset.yaml",
            "block:\n  - preset: privat\n",
            ":2:13:",
        ),
        (
            "port.yaml",
            "block:\n  - cidr: 10.0.0.0/8\n    ports: [70000]\n",
            ":3:13:",
        ),
        ("empty.yaml", "", ":1:1:"),
    ];
    for (name, text, at) in cases {
        let p = dir.write(name, text).unwrap();
        let (code, out, err) = enforcer(&["check", "--policy", p.to_str().unwrap()]);
        assert_ne!(code, 0, "{name} accepted: {out}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{}{at}", p.display())),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn check_reports_a_missing_file() {
    let (code, _, err) = enforcer(&["check", "--policy", "/nonexistent/p.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/p.yaml"), "{err}");
}

#[test]
fn presets_lists_both_presets() {
    let (code, out, _) = enforcer(&["presets"]);
    assert_eq!(code, 0);
    for needle in [
        "private",
        "cloud-metadata",
        "169.254.169.254/32",
        "fd00:ec2::254/128",
        "168.63.129.16/32",
        "100.64.0.0/10",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
}
