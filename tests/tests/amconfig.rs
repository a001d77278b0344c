//! `enforcer check --alertmanager-config` and `enforcer suggest` on real-world-shaped
//! Alertmanager configurations (tests/fixtures/alertmanager/), run as a user runs them.
//!
//! Every top-level fixture is also fed to `amtool check-config` (Alertmanager 0.25, Debian's
//! package; scripts/setup.sh installs it): the configurations are ones Alertmanager accepts.
//! The fixtures in `newer/` use receiver kinds and fields newer than 0.25 (msteams,
//! msteamsv2, jira, rocketchat, incidentio, mattermost, Slack app tokens, webhook `url_file`,
//! templated webhook URLs), which amtool 0.25 rejects; they are checked by `enforcer` only.
//! No test resolves a name through the machine's resolver (`--resolve` runs on `localhost`
//! only, which is decided as loopback without DNS).
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{TempDir, run_enforcer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/alertmanager")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// `check` of a fixture against tests/fixtures/alertmanager/policy.yaml (or `policy`).
fn check(config: &str, policy: Option<&str>, extra: &[&str]) -> (i32, String, String) {
    let policy = policy.map_or_else(|| fixture("policy.yaml"), str::to_owned);
    let config = fixture(config);
    let mut args = vec![
        "check",
        "--policy",
        &policy,
        "--alertmanager-config",
        &config,
    ];
    args.extend_from_slice(extra);
    run_enforcer(&args)
}

/// The report line of `receiver`'s `field`: `(STATUS, rest of the line)`.
fn line<'a>(out: &'a str, receiver: &str, field: &str) -> (&'a str, &'a str) {
    out.lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let status = words.next()?;
            (words.next()? == receiver && words.next()? == field).then_some((status, l))
        })
        .unwrap_or_else(|| panic!("no line for {receiver} {field} in:\n{out}"))
}

fn assert_line(out: &str, receiver: &str, field: &str, status: &str, needle: &str) {
    let (s, l) = line(out, receiver, field);
    assert_eq!(s, status, "{l}");
    assert!(l.contains(needle), "{needle:?} missing in: {l}");
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn amtool_accepts_every_fixture_alertmanager_0_25_knows() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let out = match Command::new("amtool")
            .arg("check-config")
            .arg(&path)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                integration_tests::cannot_run(
                    "amtool is not installed (apt-get install prometheus-alertmanager)",
                );
                return;
            }
            Err(e) => panic!("running amtool: {e}"),
        };
        assert!(
            out.status.success(),
            "amtool rejects {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} fixtures");
}

#[test]
fn globals_and_builtin_defaults_pass_an_allowlist() {
    let (code, out, err) = check("slack-pagerduty-globals.yml", None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let g = "(from global.slack_api_url)";
    assert_line(
        &out,
        "slack-default",
        "slack_configs[0].api_url",
        "ALLOW",
        g,
    );
    assert_line(
        &out,
        "slack-default",
        "slack_configs[0].api_url",
        "ALLOW",
        "https://hooks.slack.com:443",
    );
    assert_line(
        &out,
        "slack-default",
        "slack_configs[0].api_url",
        "ALLOW",
        "allow fqdn hooks.slack.com ports 443",
    );
    assert_line(
        &out,
        "pagerduty-oncall",
        "pagerduty_configs[0].url",
        "ALLOW",
        "https://events.pagerduty.com:443",
    );
    assert_line(
        &out,
        "pagerduty-oncall",
        "opsgenie_configs[0].api_url",
        "ALLOW",
        "allow fqdn *.opsgenie.com ports 443",
    );
    assert_line(
        &out,
        "db-team",
        "slack_configs[0].api_url",
        "ALLOW",
        "slack-pagerduty-globals.yml:30:18",
    );
    assert!(out.contains("4 destinations: 4 allowed, 0 denied"), "{out}");
    // Slack's secret path is never printed.
    assert!(
        !out.contains("XXXXXXXX") && !out.contains("services/"),
        "{out}"
    );
}

#[test]
fn the_metadata_service_is_denied_in_every_spelling() {
    let (code, out, _) = check("metadata-spellings.yml", None, &[]);
    assert_eq!(code, 1, "{out}");
    let rule = "block preset:cloud-metadata 169.254.169.254/32";
    for receiver in [
        "plain",
        "decimal",
        "octal",
        "hex",
        "short",
        "mixed",
        "trailing-dot",
        "mapped",
        "mapped-hex",
        "nat64",
        "explicit-port",
    ] {
        assert_line(&out, receiver, "webhook_configs[0].url", "DENY", rule);
    }
    assert_line(
        &out,
        "decimal",
        "webhook_configs[0].url",
        "DENY",
        "http://169.254.169.254:80",
    );
    assert_line(
        &out,
        "ecs",
        "webhook_configs[0].url",
        "DENY",
        "block preset:cloud-metadata 169.254.170.2/32",
    );
    assert_line(
        &out,
        "slack-lookalike",
        "slack_configs[0].api_url",
        "DENY",
        "https://169.254.169.254:443",
    );
    assert!(out.contains("host written as 2852039166"), "{out}");
    assert!(out.contains("the text before '@' is userinfo"), "{out}");
    assert!(
        out.contains("13 destinations: 0 allowed, 13 denied"),
        "{out}"
    );
}

#[test]
fn internal_services_and_alertmanager_itself_are_denied() {
    let (code, out, _) = check("internal.yml", None, &[]);
    assert_eq!(code, 1, "{out}");
    let f = "webhook_configs[0].url";
    assert_line(
        &out,
        "k8s-secrets",
        f,
        "DENY",
        "block preset:private 10.0.0.0/8",
    );
    assert_line(&out, "self-quit", f, "DENY", "http://127.0.0.1:9093");
    assert_line(
        &out,
        "self-quit",
        f,
        "DENY",
        "block preset:private 127.0.0.0/8",
    );
    assert_line(
        &out,
        "self-by-name",
        f,
        "DENY",
        "block preset:private 127.0.0.0/8",
    );
    assert_line(
        &out,
        "self-empty-host",
        f,
        "DENY",
        "block preset:private 127.0.0.0/8",
    );
    assert_line(
        &out,
        "unspecified",
        f,
        "DENY",
        "block preset:private 0.0.0.0/8",
    );
    assert_line(&out, "cluster-service", f, "DENY", "default deny");
    assert_line(
        &out,
        "ipv6-link-local",
        f,
        "DENY",
        "block preset:private fe80::/10",
    );
    assert!(out.contains("loopback address 127.0.0.1"), "{out}");
}

#[test]
fn proxies_and_token_endpoints_are_destinations_and_secrets_stay_hidden() {
    let (code, out, _) = check("opsgenie-proxy.yml", None, &[]);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "opsgenie",
        "opsgenie_configs[0].api_url",
        "ALLOW",
        "(from global.opsgenie_api_url)",
    );
    assert_line(
        &out,
        "opsgenie",
        "opsgenie_configs[0].http_config.proxy_url",
        "DENY",
        "http://opsgenie-proxy.corp.example:8080",
    );
    assert_line(
        &out,
        "victorops",
        "victorops_configs[0].http_config.proxy_url",
        "ALLOW",
        "(from global.http_config)",
    );
    assert_line(
        &out,
        "platform-hook",
        "webhook_configs[0].http_config.oauth2.token_url",
        "DENY",
        "https://sso.platform.example.com:443",
    );
    assert!(
        out.contains("sent through the proxy in opsgenie_configs[0].http_config.proxy_url"),
        "{out}"
    );
    for secret in ["s3cret", "user:", "abc123", "token="] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
}

#[test]
fn email_smarthosts_are_smtp_destinations() {
    let (code, out, _) = check("email.yml", None, &[]);
    assert_eq!(code, 1, "{out}");
    let f = "email_configs[0].smarthost";
    assert_line(&out, "ops-mail", f, "ALLOW", "smtp://smtp.example.com:587");
    assert_line(&out, "ops-mail", f, "ALLOW", "(from global.smtp_smarthost)");
    assert_line(&out, "relay", f, "DENY", "smtp://mail-relay.example.net:25");
    assert_line(&out, "relay", f, "DENY", "default deny");
    assert_line(
        &out,
        "implicit-tls",
        f,
        "DENY",
        "smtp://smtp.example.org:465",
    );
    assert_line(
        &out,
        "local-relay",
        f,
        "DENY",
        "block preset:private 127.0.0.0/8",
    );
}

#[test]
fn url_files_are_read_and_unreadable_ones_fail() {
    let (code, out, _) = check("url-file.yml", None, &[]);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "from-global-file",
        "slack_configs[0].api_url_file",
        "ALLOW",
        "https://hooks.slack.com:443",
    );
    assert!(out.contains("read from secrets/slack-url"), "{out}");
    assert_line(
        &out,
        "missing-file",
        "slack_configs[0].api_url_file",
        "INVALID",
        "unreadable file",
    );
    assert_line(
        &out,
        "path-template",
        "webhook_configs[0].url",
        "DENY",
        "https://hooks.chat.example.com:443",
    );
    assert!(!out.contains("ZZZZ"), "{out}");
}

#[test]
fn builtin_endpoints_of_every_integration_are_listed() {
    let dir = TempDir::new().unwrap();
    let open = dir
        .write("open.yaml", "default: allow\nblock:\n  - preset: private\n")
        .unwrap();
    let open = open.to_str().unwrap();
    let mut hosts = Vec::new();
    for config in ["chat-integrations.yml", "newer/receivers.yml"] {
        let (code, out, err) = check(config, Some(open), &["--format", "json"]);
        assert_eq!(code, 0, "{config}: {out}{err}");
        let report = json(&out);
        assert_eq!(report["passed"], true);
        for d in report["destinations"].as_array().unwrap() {
            hosts.push(format!("{}:{}", d["host"].as_str().unwrap(), d["port"]));
        }
    }
    assert_eq!(
        hosts,
        [
            "api.telegram.org:443",
            "webexapis.com:443",
            "qyapi.weixin.qq.com:443",
            "alert.victorops.com:443",
            "api.pushover.net:443",
            "discord.com:443",
            "sns.eu-west-1.amazonaws.com:443",
            "example.webhook.office.com:443",
            "prod-00.westeurope.logic.azure.com:443",
            "chat.example.org:443",
            "api.incident.io:443",
            "example.atlassian.net:443",
            "open.rocket.chat:443",
            "hooks.chat.example.com:443",
            "slack.com:443",
        ]
    );
}

#[test]
fn templated_hosts_warn_and_fail_only_when_strict() {
    let dir = TempDir::new().unwrap();
    let p = dir
        .write("p.yaml", "default: deny\nblock:\n  - preset: private\nallow:\n  - fqdn: hooks.example.com\n    ports: [443]\n")
        .unwrap();
    let p = p.to_str().unwrap();
    let (code, out, _) = check("newer/templated.yml", Some(p), &[]);
    assert_eq!(code, 0, "{out}");
    assert_line(
        &out,
        "by-label",
        "webhook_configs[0].url",
        "UNDECIDED",
        "templated: cannot be decided statically",
    );
    assert_line(
        &out,
        "subdomain",
        "webhook_configs[0].url",
        "UNDECIDED",
        "templated",
    );
    assert_line(
        &out,
        "path-only",
        "webhook_configs[0].url",
        "ALLOW",
        "allow fqdn hooks.example.com ports 443",
    );
    let (code, out, _) = check("newer/templated.yml", Some(p), &["--strict"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(strict): FAIL"), "{out}");
}

#[test]
fn unknown_receiver_kinds_fail() {
    // Alertmanager's strict decoding refuses the file; so does check, naming the key.
    let (code, out, err) = check("newer/unknown-kind.yml", None, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(
            "unknown key \"jsmops_configs\" in receivers[0]; Alertmanager refuses keys it does not know"
        ),
        "{err}"
    );
}

/// Files Alertmanager refuses (issue 11): check refuses them too, and so does amtool.
#[test]
fn what_alertmanager_refuses_check_refuses() {
    let dir = TempDir::new().unwrap();
    let cases: [(&str, &[u8], &str); 5] = [
        ("nul.yml", b"route:\n  receiver: r\nreceivers:\n- name: r\n\0\n- name: meta\n  webhook_configs:\n  - url: http://169.254.169.254/\n", ":5:1: invalid YAML: control character U+0000"),
        ("foo.yml", b"foo: bar\n", ":1:1: unknown key \"foo\" in the configuration"),
        ("typo.yml", b"route:\n  receiver: r\nrecievers:\n- name: r\n", "(did you mean \"receivers\"?)"),
        ("inner.yml", b"route:\n  receiver: r\nreceivers:\n- name: r\n  webhook_configs:\n  - url: https://x.example/\n    timout: 5s\n", "unknown key \"timout\" in receivers[0].webhook_configs[0]"),
        ("empty-receivers.yml", b"route:\n  receiver: r\nreceivers: []\n", "no receivers"),
    ];
    for (name, body, needle) in cases {
        let path = dir.path.join(name);
        std::fs::write(&path, body).unwrap();
        let path = path.display().to_string();
        let (code, out, err) = run_enforcer(&["check", "--alertmanager-config", &path]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains(needle), "{name}: {err}");
        if let Ok(o) = Command::new("amtool")
            .arg("check-config")
            .arg(&path)
            .output()
        {
            assert!(!o.status.success(), "amtool accepted {name}");
        }
    }
    // The policy file given by mistake.
    let (code, _, err) = run_enforcer(&["check", "--alertmanager-config", &fixture("policy.yaml")]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown key"), "{err}");
}

#[test]
fn json_report_is_machine_readable() {
    let (code, out, _) = check("metadata-spellings.yml", None, &["--format", "json"]);
    assert_eq!(code, 1);
    let report = json(&out);
    assert_eq!(report["passed"], false);
    assert_eq!(report["summary"]["deny"], 13);
    let hex = report["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["receiver"] == "hex")
        .unwrap();
    assert_eq!(hex["status"], "deny");
    assert_eq!(hex["host"], "169.254.169.254");
    assert_eq!(
        hex["reason"],
        "block preset:cloud-metadata 169.254.169.254/32"
    );
    assert_eq!(hex["line"], 17);
}

#[test]
fn resolve_decides_localhost_as_loopback_without_dns() {
    let dir = TempDir::new().unwrap();
    let am = dir
        .write("am.yml", "route:\n  receiver: r\nreceivers:\n- name: r\n  webhook_configs:\n  - url: http://localhost:9093/-/quit\n")
        .unwrap();
    let (code, out, _) = run_enforcer(&[
        "check",
        "--alertmanager-config",
        am.to_str().unwrap(),
        "--resolve",
    ]);
    assert_eq!(code, 1, "{out}");
    // The embedded default policy blocks loopback.
    assert_line(
        &out,
        "r",
        "webhook_configs[0].url",
        "DENY",
        "block preset:private 127.0.0.0/8",
    );
    assert!(out.contains("names resolved"), "{out}");
}

#[test]
fn suggested_policies_are_valid_and_pass_their_own_safe_configurations() {
    let dir = TempDir::new().unwrap();
    for (config, passes) in [
        ("slack-pagerduty-globals.yml", true),
        ("opsgenie-proxy.yml", true),
        ("chat-integrations.yml", true),
        ("newer/receivers.yml", true),
        ("email.yml", false),
        ("metadata-spellings.yml", false),
        ("internal.yml", false),
        ("url-file.yml", false),
        // Templated hosts are warnings (left out, commented); the fixed host is allowed.
        ("newer/templated.yml", true),
    ] {
        let (code, suggested, err) =
            run_enforcer(&["suggest", "--alertmanager-config", &fixture(config)]);
        assert_eq!(code, 0, "{config}: {err}");
        assert!(suggested.contains("REVIEW BEFORE USE"), "{suggested}");
        assert!(suggested.contains("default: deny"), "{suggested}");
        let path = dir
            .write(&format!("{}.yaml", config.replace('/', "-")), &suggested)
            .unwrap();
        let path = path.to_str().unwrap();
        let (code, out, err) = run_enforcer(&["check", "--policy", path]);
        assert_eq!(
            code, 0,
            "{config}: suggested policy rejected: {err}\n{suggested}\n{out}"
        );
        let (code, out, _) = check(config, Some(path), &[]);
        assert_eq!(code == 0, passes, "{config}:\n{suggested}\n{out}");
    }
    let (_, suggested, _) = run_enforcer(&[
        "suggest",
        "--alertmanager-config",
        &fixture("metadata-spellings.yml"),
    ]);
    assert!(
        suggested.contains("# - cidr: 169.254.169.254/32"),
        "{suggested}"
    );
    assert!(
        suggested.contains("WARNING: plain: webhook_configs[0].url"),
        "{suggested}"
    );
}

#[test]
fn broken_configurations_are_rejected_with_file_line_and_column() {
    let dir = TempDir::new().unwrap();
    let cases = [
        (
            "syntax.yml",
            "route:\n  receiver: r\nreceivers:\n- name: r\n  webhook_configs: [\n",
            ":5:20:",
        ),
        ("type.yml", "receivers: 3\n", ":1:12:"),
        ("duplicate.yml", "receivers:\n- name: a\n  name: b\n", ":3:"),
        ("empty.yml", "", ":1:1:"),
    ];
    for (name, text, at) in cases {
        let p = dir.write(name, text).unwrap();
        for cmd in ["check", "suggest"] {
            let (code, out, err) =
                run_enforcer(&[cmd, "--alertmanager-config", p.to_str().unwrap()]);
            assert_eq!(code, 1, "{name} accepted by {cmd}: {out}");
            let first = err.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(&format!("{}{at}", p.display())),
                "{name} {cmd}: {err}"
            );
            assert!(!err.contains("panicked"), "{name}: {err}");
        }
    }
    let (code, _, err) = run_enforcer(&["check", "--alertmanager-config", "/nonexistent/am.yml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/am.yml"), "{err}");
}
