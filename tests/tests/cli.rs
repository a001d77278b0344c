//! The command line as a user meets it: `enforcer check` and `enforcer presets` (no root needed).
use integration_tests::{TempDir, run_enforcer};

#[test]
fn check_accepts_a_valid_policy_and_prints_compiled_rules() {
    let dir = TempDir::new().unwrap();
    let p = dir
        .write("p.yaml", "mode: enforce\ndefault: deny\nblock:\n  - preset: cloud-metadata\nallow:\n  - cidr: 10.96.0.10/32\n    ports: [53]\n    protocols: [udp, tcp]\n")
        .unwrap();
    let (code, out, err) = run_enforcer(&["check", "--policy", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("169.254.169.254/32"), "{out}");
    assert!(out.contains("10.96.0.10/32"), "{out}");
}

#[test]
fn check_lists_fqdn_rules_and_dns_settings() {
    let dir = TempDir::new().unwrap();
    let p = dir
        .write("p.yaml", "default: deny\nallow:\n  - fqdn: Hooks.Slack.com.\n    ports: [443]\n  - fqdn: \"*.pagerduty.com\"\ndns:\n  servers: [\"127.0.0.1:5353\"]\n  grace_period: 2m\n")
        .unwrap();
    let (code, out, err) = run_enforcer(&["check", "--policy", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "allow fqdn hooks.slack.com ports 443",
        "allow fqdn *.pagerduty.com",
        "servers 127.0.0.1:5353; grace period 120s",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
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
        (
            "bad-fqdn.yaml",
            "default: deny\nallow:\n  - fqdn: hooks..slack.com\n",
            ":3:11:",
        ),
        (
            "wild-fqdn.yaml",
            "default: deny\nallow:\n  - fqdn: \"a.*.example.com\"\n",
            ":3:11:",
        ),
        (
            "dns-server.yaml",
            "default: deny\ndns:\n  servers: [resolver.local]\n",
            ":3:13:",
        ),
    ];
    for (name, text, at) in cases {
        let p = dir.write(name, text).unwrap();
        let (code, out, err) = run_enforcer(&["check", "--policy", p.to_str().unwrap()]);
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
    let (code, _, err) = run_enforcer(&["check", "--policy", "/nonexistent/p.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/p.yaml"), "{err}");
}

#[test]
fn presets_lists_both_presets() {
    let (code, out, _) = run_enforcer(&["presets"]);
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
