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
    // The OS error once (issue 11 case 7).
    assert_eq!(
        err.trim_end(),
        "/nonexistent/p.yaml: cannot read the policy: No such file or directory (os error 2)"
    );
}

/// Issue 11, the command-line cases: a NUL that used to cut the policy short, a FIFO the
/// agent used to block on, /dev/zero, a 10 MB value echoed whole, limits in debug output.
#[test]
fn check_refuses_hostile_policy_files_quickly_and_briefly() {
    let dir = TempDir::new().unwrap();
    let nul = dir
        .write(
            "nul.yaml",
            "default: allow\nblock:\n  - preset: cloud-metadata\n\0 - cidr: 10.0.0.0/8\n",
        )
        .unwrap();
    let (code, _, err) = run_enforcer(&["check", "--policy", nul.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "{}:4:1: invalid YAML: control character U+0000 is not allowed",
            nul.display()
        )),
        "{err}"
    );
    let fifo = dir.path.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let (code, _, err) = run_enforcer(&["check", "--policy", fifo.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read the policy: is a FIFO, not a regular file"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (code, _, err) = run_enforcer(&["check", "--policy", "/dev/zero"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is a character device, not a regular file"),
        "{err}"
    );
    let long = dir
        .write("long.yaml", &format!("mode: {}\n", "x".repeat(10_000_000)))
        .unwrap();
    let (code, _, err) = run_enforcer(&["check", "--policy", long.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.len() < 400, "{} bytes of stderr", err.len());
    let deep = dir
        .write("deep.yaml", &format!("{}a\n", "- ".repeat(40)))
        .unwrap();
    let (_, _, err) = run_enforcer(&["check", "--policy", deep.to_str().unwrap()]);
    assert!(
        err.contains("invalid YAML: nested deeper than 32 levels"),
        "{err}"
    );
}

#[test]
fn check_prints_targets_capacity_and_warnings() {
    let dir = TempDir::new().unwrap();
    let p = dir
        .write(
            "p.yaml",
            "default: allow\nblock:\n  - preset: private\nallow:\n  - cidr: 0.0.0.0/0\n  - fqdn: \"*.com\"\ntargets:\n  - process: [prometheus-alertmanager]\n  - cgroup: enforcer-no-such-cgroup.slice\n",
        )
        .unwrap();
    let (code, out, err) = run_enforcer(&["check", "--policy", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "targets (2):",
        "  process prometheus-alertmanager  (",
        "execs are matched by \"prometheus-aler\"",
        "capacity (used of available, per rule set): IPv4 entries ",
        " of 262,144, /32 entries 0 of 262,144, /24 block entries 1 of 131,072; IPv6 entries ",
        "; fqdn rules 1 of 64",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    for needle in [
        ":5:5: allow 0.0.0.0/0 contains every IPv4 block range",
        ":6:5: fqdn \"*.com\" names a public suffix",
        "enforcer-no-such-cgroup.slice does not exist on this machine (yet)",
    ] {
        assert!(err.contains(needle), "{needle} missing:\n{err}");
    }
    let only_mode = dir.write("m.yaml", "mode: enforce\n").unwrap();
    let (code, _, err) = run_enforcer(&["check", "--policy", only_mode.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(err.contains(":1:1: this policy enforces nothing"), "{err}");
    let (code, _, err) = run_enforcer(&["check", "--policy", "/dev/null"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn check_and_run_refuse_a_policy_that_does_not_fit_the_maps() {
    // Issue 13 item 5 / issue 17: 270,000 /32s used to pass check and fail in run (ENOSPC).
    let dir = TempDir::new().unwrap();
    let mut yaml = String::from("default: allow\nblock:\n");
    for i in 0..270_000u32 {
        yaml.push_str(&format!(
            "  - cidr: {}/32\n",
            std::net::Ipv4Addr::from(0x0b00_0000 + i)
        ));
    }
    let p = dir.write("feed.yaml", &yaml).unwrap();
    // Refused by the pre-scan, before the YAML tree is built: every one of these /32s can only
    // go to the exact map, and the message points at the first one beyond its capacity
    // (262,145th entry, line 262,147).
    let expected = format!(
        "{}:262147:5: 270,000 distinct IPv4 /32s certainly go to the exact map, which holds \
         262,144 per rule set",
        p.display()
    );
    let (code, _, err) = run_enforcer(&["check", "--policy", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("refused before parsing the rest"), "{err}");
    // `run` goes through the same check before touching the kernel (no root needed to see it).
    let (code, _, err) = run_enforcer(&[
        "run",
        "--policy",
        p.to_str().unwrap(),
        "--metrics-address",
        "none",
        "--cgroup",
        "/nonexistent",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn detach_fails_when_nothing_is_pinned_there() {
    let (code, _, err) = run_enforcer(&["detach", "--bpffs-dir", "/typo"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("nothing is pinned under /typo"), "{err}");
}

#[test]
fn listen_address_errors_are_usage_errors_that_say_the_form_wanted() {
    // The Prometheus-style name and the earlier one (an alias) alike: exit 2, as every usage
    // error, with what was wanted.
    for flag in ["--web.listen-address", "--metrics-address"] {
        let (code, out, err) = run_enforcer(&["run", flag, "localhost:9895"]);
        assert_eq!(code, 2, "{flag}: {out}{err}");
        assert!(
            err.contains("invalid value 'localhost:9895' for '--web.listen-address <ADDR>'")
                && err.contains("expected IP:PORT such as 127.0.0.1:9895"),
            "{flag}: {err}"
        );
    }
}

#[test]
fn usage_errors_exit_with_2_and_help_and_version_with_0() {
    for args in [
        &["run", "--no-such-flag"][..],
        &["no-such-command"],
        &["check", "--format", "yaml"],
        &["run", "--log.level", "verbose"],
        &["run", "--log.format", "xml"],
        &["run", "--drain-interval-ms", "0"],
        &["completions", "tcsh"],
        &[],
    ] {
        let (code, out, err) = run_enforcer(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        // No command at all: the help, on stderr.
        assert!(
            err.starts_with("error: ") || (args.is_empty() && err.contains("Usage: enforcer")),
            "{args:?}: {err}"
        );
    }
    let (code, out, _) = run_enforcer(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("2 on a usage error"), "{out}");
    let (code, out, _) = run_enforcer(&["run", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--web.listen-address",
        "--log.level",
        "--log.format",
        "[alias: --metrics-address]",
    ] {
        assert!(out.contains(flag), "{flag} missing:\n{out}");
    }
}

#[test]
fn version_names_the_git_revision_and_the_build_date() {
    let (code, out, err) = run_enforcer(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!(
            "enforcer {} (revision ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let (revision, rest) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{line}"));
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    // This checkout's commit (the tests run in a git checkout).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success());
    assert_eq!(
        revision,
        String::from_utf8_lossy(&head.stdout).trim(),
        "{line}"
    );
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && parts[0].len() == 4
            && parts.iter().all(|p| p.parse::<u32>().is_ok())
            && (1..=12).contains(&parts[1].parse::<u32>().unwrap())
            && (1..=31).contains(&parts[2].parse::<u32>().unwrap())
            && parts[0].parse::<u32>().unwrap() >= 2026,
        "{line}"
    );
}

#[test]
fn check_prints_a_policy_alone_as_json() {
    let dir = TempDir::new().unwrap();
    let p = dir
        .write(
            "p.yaml",
            "mode: audit\ndefault: deny\nblock:\n  - preset: cloud-metadata\nallow:\n  - cidr: 10.96.0.10/32\n    ports: [53]\napi:\n  allow:\n    - cidr: 127.0.0.1/32\n",
        )
        .unwrap();
    let (code, out, err) =
        run_enforcer(&["check", "--policy", p.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["valid"], true);
    assert_eq!(v["mode"], "audit");
    assert_eq!(v["policy"], p.to_str().unwrap());
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "allow cidr 10.96.0.10/32 ports 53"
                && r["location"].as_str().unwrap().ends_with(":6:5")),
        "{v}"
    );
    assert_eq!(
        v["api"]["other_peers"],
        "would be refused (audit mode: answered, logged)"
    );
    assert_eq!(v["capacity"]["ipv4_entries"]["available"], 262_144);
    // No targets and no --cgroup: nothing to warn about for check itself.
    assert!(v["warnings"].is_array(), "{v}");

    // A refused policy: the same document shape says so, with the message, and exit 1.
    let bad = dir
        .write(
            "bad.yaml",
            "default: deny\nblock:\n  - cidr: 10.0.0.300/8\n",
        )
        .unwrap();
    let (code, out, err) = run_enforcer(&[
        "check",
        "--policy",
        bad.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["valid"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:3:11:", bad.display())),
        "{v}"
    );
}

#[test]
fn check_says_audit_mode_would_refuse_api_peers() {
    let dir = TempDir::new().unwrap();
    for (mode, said) in [
        (
            "audit",
            "any other peer: would be refused (audit mode: answered, logged)",
        ),
        ("enforce", "any other peer: refused (its SYN is dropped)"),
    ] {
        let p = dir
            .write(
                &format!("{mode}.yaml"),
                &format!(
                    "mode: {mode}\ndefault: allow\napi:\n  allow:\n    - cidr: 127.0.0.1/32\n"
                ),
            )
            .unwrap();
        let (code, out, err) = run_enforcer(&["check", "--policy", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(said), "{mode}:\n{out}");
    }
}

#[test]
fn completions_and_man_pages_come_from_the_command_definition() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run_enforcer(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        // fish spells long flags `-l web.listen-address`.
        for word in ["enforcer", "web.listen-address", "alertmanager-config"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, out, err) = run_enforcer(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH enforcer 1"), "{out}");
    assert!(out.contains("completions"), "{out}");
    let dir = TempDir::new().unwrap();
    let (code, _, err) = run_enforcer(&["man", "--dir", dir.path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let run_page = std::fs::read_to_string(dir.path.join("enforcer-run.1")).unwrap();
    assert!(run_page.contains("web.listen\\-address"), "{run_page}");
    for page in [
        "enforcer.1",
        "enforcer-check.1",
        "enforcer-detach.1",
        "enforcer-man.1",
    ] {
        assert!(dir.path.join(page).is_file(), "{page}");
    }
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

#[test]
fn run_diagnostics_follow_log_format_and_log_level() {
    // A policy that cannot be read: `run` fails before touching the kernel, with one error line.
    let run = |args: &[&str], rust_log: &str| {
        let out = std::process::Command::new(integration_tests::enforcer_bin())
            .args([
                "run",
                "--policy",
                "/nonexistent/p.yaml",
                "--web.listen-address",
                "none",
            ])
            .args(args)
            .env("RUST_LOG", rust_log)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json = run(&[], "info");
    let line: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["message"], "enforcer run failed");

    let logfmt = run(&["--log.format", "logfmt"], "info");
    assert!(logfmt.starts_with("ts="), "{logfmt}");
    assert!(
        logfmt.contains(" level=error msg=\"enforcer run failed\" error=\"/nonexistent/p.yaml: cannot read the policy"),
        "{logfmt}"
    );

    // --log.level wins over RUST_LOG.
    assert_eq!(run(&[], "off"), "");
    assert!(run(&["--log.level", "error"], "off").contains("enforcer run failed"));
}
