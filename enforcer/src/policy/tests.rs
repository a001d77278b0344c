use std::net::IpAddr;

use enforcer_common::proto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn ok(yaml: &str) -> Policy {
    parse_policy(yaml, "p.yaml")
        .unwrap_or_else(|e| panic!("expected a valid policy, got {e}\n{yaml}"))
}

/// (line, column, message) of a rejected policy.
fn err(yaml: &str) -> (usize, usize, String) {
    match parse_policy(yaml, "p.yaml") {
        Ok(p) => panic!("expected an error, got {p:?}\n{yaml}"),
        Err(PolicyError::Invalid { location, problem }) => {
            assert_eq!(location.file, "p.yaml");
            (location.line, location.column, problem.to_string())
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn assert_err(yaml: &str, line: usize, column: usize, message: &str) {
    let (l, c, m) = err(yaml);
    assert_eq!((l, c, m.as_str()), (line, column, message), "\n{yaml}");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const FULL: &str = "\
mode: audit
default: deny
block:
  - preset: cloud-metadata
  - cidr: 198.51.100.0/24
    ports: [80, \"8000-8080\", 8081]
    protocols: [tcp, udp]
allow:
  - cidr: 10.96.0.10/32
    ports: [53]
    protocols: [udp, tcp]
  - fqdn: Hooks.Slack.com.
    ports: [443]
  - fqdn: '*.pagerduty.com'
  - cidr: 2001:db8::/32
    protocols: tcp
    ports: 9094
targets:
  - process: [alertmanager, prometheus-alertmanager]
  - systemd_unit: prometheus-alertmanager.service
  - cgroup: /sys/fs/cgroup/kubepods.slice
  - process: alertmanager
";

#[test]
fn full_policy() {
    let p = ok(FULL);
    assert_eq!(p.source, "p.yaml");
    assert_eq!(p.mode, Mode::Audit);
    assert_eq!(p.default, DefaultVerdict::Deny);
    let described: Vec<String> = p.rules.iter().map(Rule::describe).collect();
    assert_eq!(
        described,
        [
            "block preset:cloud-metadata 169.254.169.254/32",
            "block preset:cloud-metadata 169.254.170.2/32",
            "block preset:cloud-metadata 169.254.170.23/32",
            "block preset:cloud-metadata fd00:ec2::254/128",
            "block preset:cloud-metadata fd00:ec2::23/128",
            "block preset:cloud-metadata 100.100.100.200/32",
            "block preset:cloud-metadata 168.63.129.16/32 ports 80,32526",
            "block preset:cloud-metadata 192.0.0.192/32",
            "block cidr 198.51.100.0/24 ports 80,8000-8081 protocols tcp,udp",
            "allow cidr 10.96.0.10/32 ports 53 protocols tcp,udp",
            "allow cidr 2001:db8::/32 ports 9094 protocols tcp",
        ]
    );
    let r = &p.rules[8];
    assert_eq!(
        r.ports,
        [PortRange::single(80), PortRange { lo: 8000, hi: 8081 }]
    );
    assert_eq!(r.protocols, proto::TCP | proto::UDP);
    assert_eq!(r.source, RuleSource::Cidr);
    assert_eq!(
        r.location,
        Location {
            file: "p.yaml".into(),
            line: 5,
            column: 5
        }
    );
    assert_eq!(
        p.rules[0].location,
        Location {
            file: "p.yaml".into(),
            line: 4,
            column: 5
        }
    );
    assert_eq!(p.rules[0].protocols, proto::ALL);
    assert!(p.rules[0].ports.is_empty());
    assert_eq!(p.fqdns.len(), 2);
    assert_eq!(
        (p.fqdns[0].name.as_str(), p.fqdns[0].wildcard),
        ("hooks.slack.com", false)
    );
    assert_eq!(p.fqdns[0].ports, [PortRange::single(443)]);
    assert_eq!(
        p.fqdns[0].to_string(),
        "allow fqdn hooks.slack.com ports 443"
    );
    assert_eq!(p.fqdns[0].location.line, 12);
    assert_eq!(
        (p.fqdns[1].name.as_str(), p.fqdns[1].wildcard),
        ("pagerduty.com", true)
    );
    assert_eq!(p.fqdns[1].to_string(), "allow fqdn *.pagerduty.com");
    let loc = |line| Location {
        file: "p.yaml".into(),
        line,
        column: 5,
    };
    assert_eq!(
        p.targets,
        [
            Target::Process {
                names: vec!["alertmanager".into(), "prometheus-alertmanager".into()],
                location: loc(19)
            },
            Target::SystemdUnit {
                name: "prometheus-alertmanager.service".into(),
                location: loc(20)
            },
            Target::Cgroup {
                path: "/sys/fs/cgroup/kubepods.slice".into(),
                location: loc(21)
            },
            Target::Process {
                names: vec!["alertmanager".into()],
                location: loc(22)
            },
        ]
    );
    assert_eq!(p.describe_rule(8), described[8]);
    assert_eq!(
        p.describe_rule(enforcer_common::rule_id::DEFAULT),
        "default deny"
    );
    assert_eq!(p.describe_rule(99), "unknown rule 99");
}

#[test]
fn defaults_and_shorthands() {
    let p =
        ok("block:\n  - cidr: 192.0.2.1\n  - cidr: 2001:db8::1\n  - cidr: \" 192.0.2.0/24 \"\n");
    assert_eq!((p.mode, p.default), (Mode::Enforce, DefaultVerdict::Allow));
    let nets: Vec<IpNet> = p.rules.iter().map(|r| r.net).collect();
    assert_eq!(
        nets,
        [
            net("192.0.2.1/32"),
            net("2001:db8::1/128"),
            net("192.0.2.0/24")
        ]
    );
    // A key without a value is an empty list.
    let p = ok("default: deny\nblock:\nallow:\ntargets:\n");
    assert!(p.rules.is_empty() && p.targets.is_empty());
    // Flow style, quoted ports, overlapping ranges merged.
    let p =
        ok("{default: allow, block: [{cidr: 192.0.2.0/24, ports: ['443', 1-10, 5-20, 21, 0x50]}]}");
    assert_eq!(
        p.rules[0].ports,
        [
            PortRange { lo: 1, hi: 21 },
            PortRange::single(80),
            PortRange::single(443)
        ]
    );
    // Protocol names are case-insensitive; one protocol is a one-element list.
    assert_eq!(
        ok("block:\n  - cidr: 192.0.2.0/24\n    protocols: UDP\n").rules[0].protocols,
        proto::UDP
    );
}

#[test]
fn mapped_and_nat64_cidrs_become_ipv4() {
    let p = ok("block:
  - cidr: ::ffff:10.0.0.0/104
  - cidr: 64:ff9b::169.254.169.254
  - cidr: 64:ff9b::/96
  - cidr: ::fffe:0:0/95
  - cidr: 64:ff9b::/64
");
    let nets: Vec<IpNet> = p.rules.iter().map(|r| r.net).collect();
    assert_eq!(
        nets,
        [
            net("10.0.0.0/8"),
            net("169.254.169.254/32"),
            net("0.0.0.0/0"),
            net("::fffe:0:0/95"),
            net("64:ff9b::/64")
        ]
    );
}

#[test]
fn preset_entries_take_ports_and_protocols() {
    let p = ok("allow:\n  - preset: cloud-metadata\n    ports: [80-90]\n    protocols: [tcp]\n");
    // Every entry gets 80-90 except WireServer, which keeps only 80.
    assert_eq!(p.rules.len(), 8);
    assert_eq!(
        p.rules[6].to_string(),
        "allow preset:cloud-metadata 168.63.129.16/32 ports 80 protocols tcp"
    );
    assert_eq!(
        p.rules[0].to_string(),
        "allow preset:cloud-metadata 169.254.169.254/32 ports 80-90 protocols tcp"
    );
    // Disjoint ports drop the entry.
    let p = ok("block:\n  - preset: cloud-metadata\n    ports: [443]\n");
    assert_eq!(p.rules.len(), 7);
    assert!(p.rules.iter().all(|r| r.net != net("168.63.129.16/32")));
}

#[test]
fn error_positions_and_messages() {
    let expected_top = "(expected one of: mode, default, block, allow, targets, alertmanager, dns)";
    assert_err(
        "mode: enforce\nblok:\n  - preset: private\n",
        2,
        1,
        &format!("unknown key \"blok\" {expected_top}"),
    );
    assert_err(
        "mode: enforce\n1: x\n",
        2,
        1,
        &format!("unknown key \"1\" {expected_top}"),
    );
    assert_err(
        "default: deny\nblock:\n  - cidr: 10.0.0.0/8\n    port: [80]\n",
        4,
        5,
        "unknown key \"port\" (expected one of: cidr, preset, ports, protocols)",
    );
    assert_err(
        "allow:\n  - cidr: 10.0.0.0/8\n    cider: x\n",
        3,
        5,
        "unknown key \"cider\" (expected one of: cidr, preset, fqdn, ports, protocols)",
    );
    assert_err(
        "default: deny\nblock:\n  - cidr: 10.0.0.300/8\n",
        3,
        11,
        "invalid CIDR \"10.0.0.300/8\": \"10.0.0.300\" is not an IPv4 or IPv6 address",
    );
    assert_err(
        "block:\n  - cidr: 10.0.0.1/8\n",
        2,
        11,
        "CIDR \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
    );
    assert_err(
        "block:\n  - cidr: 2001:db8::1/32\n",
        2,
        11,
        "CIDR \"2001:db8::1/32\" has host bits set; did you mean 2001:db8::/32?",
    );
    assert_err(
        "block:\n  - cidr: 10.0.0.0/33\n",
        2,
        11,
        "invalid CIDR \"10.0.0.0/33\": prefix length 33 is longer than 32",
    );
    assert_err(
        "block:\n  - cidr: ::/129\n",
        2,
        11,
        "invalid CIDR \"::/129\": prefix length 129 is longer than 128",
    );
    assert_err(
        "block:\n  - cidr: 10.0.0.0/x\n",
        2,
        11,
        "invalid CIDR \"10.0.0.0/x\": prefix length \"x\" is not a number 0..=32",
    );
    assert_err(
        "block:\n  - cidr: 10.0.0.0/\n",
        2,
        11,
        "invalid CIDR \"10.0.0.0/\": prefix length \"\" is not a number 0..=32",
    );
    assert_err(
        "block:\n  - cidr: 1.5\n",
        2,
        11,
        "invalid CIDR \"1.5\": \"1.5\" is not an IPv4 or IPv6 address",
    );
    assert_err(
        "block:\n  - cidr: [10.0.0.0/8]\n",
        2,
        11,
        "cidr must be an address range such as 10.0.0.0/8, found a list",
    );
    assert_err(
        "block:\n  - preset: privat\n",
        2,
        13,
        "unknown preset \"privat\" (known: private, cloud-metadata)",
    );
    let ports = "block:\n  - cidr: 10.0.0.0/8\n    ports: ";
    assert_err(
        &format!("{ports}[80, 70000]\n"),
        3,
        17,
        "port 70000 out of range 1..=65535",
    );
    assert_err(
        &format!("{ports}[0]\n"),
        3,
        13,
        "port 0 out of range 1..=65535",
    );
    assert_err(
        &format!("{ports}[-1]\n"),
        3,
        13,
        "port -1 out of range 1..=65535",
    );
    assert_err(
        &format!("{ports}[99999999999999999999999]\n"),
        3,
        13,
        "port 99999999999999999999999 out of range 1..=65535",
    );
    assert_err(
        &format!("{ports}[\"1-70000\"]\n"),
        3,
        13,
        "port 70000 out of range 1..=65535",
    );
    assert_err(
        &format!("{ports}[\"0-10\"]\n"),
        3,
        13,
        "port 0 out of range 1..=65535",
    );
    assert_err(
        &format!("{ports}[9000-80]\n"),
        3,
        13,
        "port range 9000-80 is reversed (did you mean 80-9000?)",
    );
    let invalid = "expected a number 1..=65535 or a range like \"8000-8080\"";
    assert_err(
        &format!("{ports}[http]\n"),
        3,
        13,
        &format!("invalid port \"http\": {invalid}"),
    );
    assert_err(
        &format!("{ports}[1.5]\n"),
        3,
        13,
        &format!("invalid port \"1.5\": {invalid}"),
    );
    assert_err(
        &format!("{ports}[\"80-\"]\n"),
        3,
        13,
        &format!("invalid port \"80-\": {invalid}"),
    );
    assert_err(
        &format!("{ports}[[80]]\n"),
        3,
        13,
        "a port must be a number 1..=65535 or a range like \"8000-8080\", found a list",
    );
    assert_err(
        &format!("{ports}[]\n"),
        3,
        12,
        "ports is empty; leave `ports` out to match every port",
    );
    assert_err(
        &format!("{ports}\n"),
        3,
        10,
        "ports must be a list, found nothing",
    );
    assert_err(
        &format!("{ports}{{a: 1}}\n"),
        3,
        12,
        "ports must be a list, found a mapping",
    );
    let protocols = "block:\n  - cidr: 10.0.0.0/8\n    protocols: ";
    assert_err(
        &format!("{protocols}[tcp, icmp]\n"),
        3,
        22,
        "unknown protocol \"icmp\" (expected tcp or udp)",
    );
    assert_err(
        &format!("{protocols}[]\n"),
        3,
        16,
        "protocols is empty; leave `protocols` out to match every protocol",
    );
    assert_err(
        "block:\n  - cidr: 10.0.0.0/8\n    preset: private\n",
        3,
        5,
        "entry has both \"cidr\" and \"preset\"; give exactly one",
    );
    assert_err(
        "allow:\n  - fqdn: example.com\n    cidr: 10.0.0.0/8\n",
        3,
        5,
        "entry has both \"fqdn\" and \"cidr\"; give exactly one",
    );
    assert_err(
        "block:\n  - ports: [80]\n",
        2,
        5,
        "entry needs one of: cidr, preset",
    );
    assert_err(
        "allow:\n  - {}\n",
        2,
        5,
        "entry needs one of: cidr, preset, fqdn",
    );
    assert_err(
        "block:\n  - fqdn: example.com\n",
        2,
        5,
        "\"fqdn\" is only allowed in `allow`; block addresses with `cidr` or `preset`",
    );
    assert_err(
        "allow:\n  - fqdn: -bad.example.com\n",
        2,
        11,
        "invalid domain name \"-bad.example.com\": label \"-bad\" starts or ends with '-'",
    );
    assert_err(
        "block:\n  - 10.0.0.0/8\n",
        2,
        5,
        "a block entry must be a mapping such as `cidr: 10.0.0.0/8`, found a string",
    );
    assert_err(
        "block: private\n",
        1,
        8,
        "block must be a list of entries, found a string",
    );
    assert_err(
        "allow: {cidr: 10.0.0.0/8}\n",
        1,
        8,
        "allow must be a list of entries, found a mapping",
    );
    assert_err(
        "mode: [enforce]\n",
        1,
        7,
        "mode must be enforce or audit, found a list",
    );
    assert_err(
        "mode:\ndefault: deny\n",
        1,
        5,
        "mode must be enforce or audit, found nothing",
    );
    assert_err(
        "mode: enforcing\n",
        1,
        7,
        "unknown mode \"enforcing\" (expected enforce or audit)",
    );
    assert_err(
        "mode: yes\n",
        1,
        7,
        "unknown mode \"yes\" (expected enforce or audit)",
    );
    assert_err(
        "default: true\n",
        1,
        10,
        "unknown default \"true\" (expected allow or deny)",
    );
    assert_err(
        "default: denied\n",
        1,
        10,
        "unknown default \"denied\" (expected allow or deny)",
    );
    assert_err(
        "mode: enforce\ndefault: deny\nmode: audit\n",
        3,
        1,
        "duplicate key \"mode\" (first given at line 1, column 1)",
    );
    assert_err(
        "block:\n  - cidr: 10.0.0.0/8\n    ports: [1]\n    ports: [2]\n",
        4,
        5,
        "duplicate key \"ports\" (first given at line 3, column 5)",
    );
    assert_err(
        "- mode: enforce\n",
        1,
        1,
        "the policy must be a mapping, found a list",
    );
    assert_err(
        "just text\n",
        1,
        1,
        "the policy must be a mapping, found a string",
    );
    assert_err("? [a]\n: b\n", 1, 3, "a key must be a name, found a list");
}

#[test]
fn empty_policies() {
    let empty =
        "policy is empty: it needs at least `default: allow|deny` and a `block` or `allow` list";
    for yaml in [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "{}",
        "targets:\n  - process: [alertmanager]\n",
        "alertmanager:\n  allow_own_dns: false\n",
    ] {
        assert_err(yaml, 1, 1, empty);
    }
    let e = parse_policy("", "p.yaml").unwrap_err();
    assert_eq!(e.to_string(), format!("p.yaml:1:1: {empty}"));
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let (l, c, m) = err("mode: enforce\nblock: [1, 2\ndefault: deny\n");
    assert!(m.starts_with("invalid YAML: "), "{m}");
    assert!((l, c) >= (2, 1), "{l}:{c} {m}");
    let (l, c, m) = err("block:\n\t- cidr: 10.0.0.0/8\n");
    assert_eq!((l, c), (2, 2), "{m}");
    let (l, _, m) = err("mode: enforce\n---\nmode: audit\n");
    assert_eq!(l, 3, "{m}");
    assert_eq!(
        m,
        "invalid YAML: a policy is one YAML document; remove the `---` separator"
    );
    assert_eq!(
        err("a: &a [*a]\n").2,
        "invalid YAML: an alias refers to a node that contains it"
    );
    assert_eq!(err("mode: 'enforce").2, "invalid YAML: unclosed quote");
}

#[test]
fn display_is_file_line_column_sentence() {
    let e = parse_policy("default: deny\nblock:\n  - cidr: 10.0.0.300/8\n", "p.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "p.yaml:3:11: invalid CIDR \"10.0.0.300/8\": \"10.0.0.300\" is not an IPv4 or IPv6 address"
    );
    assert_eq!(e.location().map(|l| (l.line, l.column)), Some((3, 11)));
}

#[test]
fn columns_count_characters() {
    assert_err(
        "# ünïcödé\nblock:\n  - {cidr: 10.0.0.0/8, ünknown: 1}\n",
        3,
        24,
        "unknown key \"ünknown\" (expected one of: cidr, preset, ports, protocols)",
    );
}

#[test]
fn fqdn_syntax() {
    use super::parse::parse_fqdn;
    assert_eq!(
        parse_fqdn("Hooks.Slack.COM."),
        Ok(("hooks.slack.com".into(), false))
    );
    assert_eq!(
        parse_fqdn("*.example.com"),
        Ok(("example.com".into(), true))
    );
    assert_eq!(parse_fqdn("localhost"), Ok(("localhost".into(), false)));
    assert_eq!(parse_fqdn("x1-2.a"), Ok(("x1-2.a".into(), false)));
    let long_label = "a".repeat(64);
    let name_253 = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name_253.len(), 253);
    assert!(parse_fqdn(&name_253).is_ok());
    assert!(parse_fqdn(&format!("{name_253}.")).is_ok());
    for bad in [
        "",
        ".",
        "*",
        "*.",
        "a..b",
        ".a",
        "a.b..",
        "*.*.example.com",
        "foo.*.com",
        "ex*ample.com",
        "x_y.com",
        "-a.com",
        "a-.com",
        "a b.com",
        "10.0.0.1",
        "::1",
        "exämple.com",
        &long_label,
        &format!("{name_253}a"),
    ] {
        assert!(parse_fqdn(bad).is_err(), "{bad:?} accepted");
    }
}

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
fn alertmanager_settings() {
    let both = AlertmanagerSettings {
        allow_own_dns: true,
        allow_cluster_peers: true,
    };
    assert_eq!(ok("default: allow\n").alertmanager, both);
    assert_eq!(ok("default: allow\nalertmanager:\n").alertmanager, both);
    assert_eq!(ok("default: allow\nalertmanager: {}\n").alertmanager, both);
    assert_eq!(default_policy().alertmanager, both);
    let p = ok("default: allow\nalertmanager:\n  allow_own_dns: false\n");
    assert_eq!(
        p.alertmanager,
        AlertmanagerSettings {
            allow_own_dns: false,
            allow_cluster_peers: true,
        }
    );
    let p = ok(
        "alertmanager: {allow_cluster_peers: false, allow_own_dns: false}\nblock:\n  - preset: private\n",
    );
    assert_eq!(
        p.alertmanager,
        AlertmanagerSettings {
            allow_own_dns: false,
            allow_cluster_peers: false,
        }
    );
    assert!(
        p.rules
            .iter()
            .all(|r| r.source == RuleSource::Preset("private"))
    );
}

#[test]
fn alertmanager_errors() {
    assert_err(
        "default: allow\nalertmanager:\n  allow_dns: true\n",
        3,
        3,
        "unknown key \"allow_dns\" (expected one of: allow_own_dns, allow_cluster_peers)",
    );
    // `yes` is not a boolean (strict YAML 1.2 booleans).
    assert_err(
        "default: allow\nalertmanager:\n  allow_own_dns: yes\n",
        3,
        18,
        "allow_own_dns must be true or false, found a string",
    );
    assert_err(
        "default: allow\nalertmanager:\n  allow_cluster_peers: 1\n",
        3,
        24,
        "allow_cluster_peers must be true or false, found a number",
    );
    assert_err(
        "default: allow\nalertmanager:\n  allow_cluster_peers:\n",
        3,
        22,
        "allow_cluster_peers must be true or false, found nothing",
    );
    assert_err(
        "default: allow\nalertmanager:\n  allow_own_dns: true\n  allow_own_dns: false\n",
        4,
        3,
        "duplicate key \"allow_own_dns\" (first given at line 3, column 3)",
    );
    assert_err(
        "default: allow\nalertmanager: false\n",
        2,
        15,
        "alertmanager must be a mapping, found true/false",
    );
    assert_err(
        "default: allow\nalertmanager: [allow_own_dns]\n",
        2,
        15,
        "alertmanager must be a mapping, found a list",
    );
}

#[test]
fn auto_rules_describe_their_origin() {
    let rule = |kind, net: &str, port| Rule {
        action: RuleAction::Allow,
        net: net.parse().unwrap(),
        ports: vec![PortRange::single(port)],
        protocols: proto::TCP | proto::UDP,
        source: RuleSource::Auto { kind, pid: 1234 },
        location: Location {
            file: "/proc/1234/root/etc/resolv.conf".to_owned(),
            line: 1,
            column: 1,
        },
    };
    assert_eq!(
        rule(AutoKind::ResolvConf, "127.0.0.53/32", 53).to_string(),
        "allow auto:resolv.conf 127.0.0.53/32 ports 53 protocols tcp,udp (pid 1234)"
    );
    assert_eq!(
        rule(AutoKind::ClusterPeer, "fd00::2/128", 9094).to_string(),
        "allow auto:cluster.peer fd00::2/128 ports 9094 protocols tcp,udp (pid 1234)"
    );
}

#[test]
fn load_policy_reads_files() {
    let dir = std::env::temp_dir().join(format!("enforcer-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, "default: deny\n").unwrap();
    let p = load_policy(&good).unwrap();
    assert_eq!(p.source, good.display().to_string());
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, b"default: deny\nmode: \xff\n").unwrap();
    let e = load_policy(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:7: policy is not UTF-8 text", bad.display())
    );
    let missing = dir.join("missing.yaml");
    let e = load_policy(&missing).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read policy: ", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embedded_default_policy() {
    let p = default_policy();
    assert_eq!(p.source, DEFAULT_POLICY_NAME);
    assert_eq!((p.mode, p.default), (Mode::Enforce, DefaultVerdict::Allow));
    let expected: Vec<IpNet> = preset("private")
        .unwrap()
        .entries
        .iter()
        .chain(&preset("cloud-metadata").unwrap().entries)
        .map(|e| e.net)
        .collect();
    let got: Vec<IpNet> = p.rules.iter().map(|r| r.net).collect();
    assert_eq!(got, expected);
    assert!(p.rules.iter().all(|r| r.action == RuleAction::Block));
    assert!(p.fqdns.is_empty() && p.targets.is_empty());
}

fn entries(name: &str) -> Vec<String> {
    preset(name)
        .unwrap()
        .entries
        .iter()
        .map(|e| {
            let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
            if ports.is_empty() {
                e.net.to_string()
            } else {
                format!("{} ports {}", e.net, ports.join(","))
            }
        })
        .collect()
}

#[test]
fn preset_contents() {
    let names: Vec<&str> = presets().iter().map(|p| p.name).collect();
    assert_eq!(names, ["private", "cloud-metadata"]);
    assert_eq!(
        entries("private"),
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "127.0.0.0/8",
            "0.0.0.0/8",
            "fc00::/7",
            "fe80::/10",
            "::1/128",
            "::/128",
            "224.0.0.0/4",
            "ff00::/8",
            "240.0.0.0/4",
            "198.18.0.0/15",
            "192.0.0.0/24",
            // 6to4 images of every IPv4 range above.
            "2002:a00::/24",
            "2002:ac10::/28",
            "2002:c0a8::/32",
            "2002:6440::/26",
            "2002:a9fe::/32",
            "2002:7f00::/24",
            "2002::/24",
            "2002:e000::/20",
            "2002:f000::/20",
            "2002:c612::/31",
            "2002:c000::/40",
            "2001::/32",
        ]
    );
    assert_eq!(
        entries("cloud-metadata"),
        [
            "169.254.169.254/32",
            "169.254.170.2/32",
            "169.254.170.23/32",
            "fd00:ec2::254/128",
            "fd00:ec2::23/128",
            "100.100.100.200/32",
            "168.63.129.16/32 ports 80,32526",
            "192.0.0.192/32",
        ]
    );
    assert!(preset("private").unwrap().description.contains("2001::/32"));
    for p in presets() {
        for e in &p.entries {
            assert_eq!(e.net, e.net.trunc(), "{} {}", p.name, e.net);
            assert_eq!(
                normalize_net(e.net),
                e.net,
                "preset ranges are already normalised"
            );
        }
    }
    let listing = render_presets();
    assert!(
        listing.contains("cloud-metadata") && listing.contains("168.63.129.16/32 ports 80,32526"),
        "{listing}"
    );
    assert!(
        listing.contains("2002:a00::/24") && listing.contains("6to4 of 10.0.0.0/8"),
        "{listing}"
    );
}

#[test]
fn normalisation() {
    let a = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(normalize_addr(a("::ffff:1.2.3.4")), a("1.2.3.4"));
    assert_eq!(normalize_addr(a("64:ff9b::102:304")), a("1.2.3.4"));
    assert_eq!(
        normalize_addr(a("64:ff9b:1::102:304")),
        a("64:ff9b:1::102:304")
    );
    assert_eq!(normalize_addr(a("::1.2.3.4")), a("::1.2.3.4"));
    assert_eq!(normalize_addr(a("1.2.3.4")), a("1.2.3.4"));
    assert_eq!(normalize_net(net("::ffff:0:0/96")), net("0.0.0.0/0"));
    assert_eq!(normalize_net(net("64:ff9b::a00:0/104")), net("10.0.0.0/8"));
    assert_eq!(normalize_net(net("::/80")), net("::/80"));
    assert_eq!(normalize_net(net("::ffff:10.0.0.1/96")), net("0.0.0.0/0"));
    assert_eq!(
        merge_port_ranges(&[
            PortRange::single(5),
            PortRange { lo: 1, hi: 4 },
            PortRange::single(65535),
            PortRange { lo: 7, hi: 65534 }
        ]),
        [PortRange { lo: 1, hi: 5 }, PortRange { lo: 7, hi: 65535 }]
    );
}

const MUTATION_ALPHABET: &[&str] = &[
    ":", "-", " ", "\n", "\t", "[", "]", "{", "}", ",", "\"", "'", "&a", "*a", "!!", "#", "?", "|",
    ">", "%", "@", "0", "/", ".", "::", "ports", "cidr", "preset", "fqdn", "\u{feff}", "é", "\r",
    "\\", "<<: *a",
];

#[test]
fn garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..2000 {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = parse_policy(&String::from_utf8_lossy(&bytes), "fuzz.yaml");
        let text: String = (0..len)
            .map(|_| {
                *MUTATION_ALPHABET
                    .get(rng.random_range(0..MUTATION_ALPHABET.len()))
                    .unwrap_or(&"")
            })
            .collect();
        let _ = parse_policy(&text, "fuzz.yaml");
    }
    let base: Vec<char> = FULL.chars().collect();
    for _ in 0..2500 {
        let mut text = base.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..=text.len());
            match rng.random_range(0..3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                1 if at < text.len() => {
                    text[at] = MUTATION_ALPHABET[rng.random_range(0..MUTATION_ALPHABET.len())]
                        .chars()
                        .next()
                        .unwrap_or(' ');
                }
                _ => {
                    let piece = MUTATION_ALPHABET[rng.random_range(0..MUTATION_ALPHABET.len())];
                    text.splice(at..at, piece.chars());
                }
            }
        }
        let text: String = text.into_iter().collect();
        if let Err(PolicyError::Invalid { location, .. }) = parse_policy(&text, "fuzz.yaml") {
            assert!(location.line >= 1 && location.column >= 1, "{location}");
        }
    }
    // Deep nesting is refused, not recursed into.
    for open in ["[", "{a: ", "- "] {
        let _ = parse_policy(&open.repeat(20_000), "deep.yaml");
    }
    let nested: String = (0..300).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let _ = parse_policy(&nested, "deep.yaml");
    // Alias bombs are refused by the parser's budget.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(parse_policy(&bomb, "bomb.yaml").is_err());
}

#[test]
fn dns_section_defaults_values_and_errors() {
    let p = ok("default: deny\nallow:\n  - fqdn: hooks.slack.com\n");
    assert_eq!(p.dns, DnsSettings::default());
    assert_eq!(p.dns.grace_period, std::time::Duration::from_secs(300));
    let p = ok("default: deny
allow:
  - fqdn: hooks.slack.com
dns:
  servers: [\"127.0.0.1:5353\", \"::1\", \"[::1]:53\", 10.96.0.10]
  grace_period: 90s
  max_addresses_per_name: 8
  max_addresses: 100
");
    let servers: Vec<String> = p.dns.servers.iter().map(ToString::to_string).collect();
    assert_eq!(
        servers,
        ["127.0.0.1:5353", "[::1]:53", "[::1]:53", "10.96.0.10:53"]
    );
    assert_eq!(p.dns.grace_period, std::time::Duration::from_secs(90));
    assert_eq!(
        (p.dns.max_addresses_per_name, p.dns.max_addresses),
        (8, 100)
    );
    for (text, secs) in [
        ("300", 300),
        ("5m", 300),
        ("1h", 3600),
        ("0", 0),
        ("1500ms", 1),
    ] {
        let p = ok(&format!("default: deny\ndns:\n  grace_period: {text}\n"));
        assert_eq!(p.dns.grace_period.as_secs(), secs, "{text}");
    }
    assert_err(
        "default: deny\ndns:\n  servers: [\"dns.example\"]\n",
        3,
        13,
        "invalid name server \"dns.example\": expected an address with an optional port, such as 127.0.0.1:5353 or [::1]:53",
    );
    assert_err(
        "default: deny\ndns:\n  grace_period: 5 minutes\n",
        3,
        17,
        "invalid duration \"5 minutes\": expected seconds or a number with a unit (ms, s, m, h), such as 300 or 5m",
    );
    assert_err(
        "default: deny\ndns:\n  grace_period: 2d\n",
        3,
        17,
        "invalid duration \"2d\": expected seconds or a number with a unit (ms, s, m, h), such as 300 or 5m",
    );
    assert_err(
        "default: deny\ndns:\n  grace_period: 25h\n",
        3,
        17,
        "grace_period 25h is out of range 0..=86400s",
    );
    assert_err(
        "default: deny\ndns:\n  max_addresses: 0\n",
        3,
        18,
        "max_addresses 0 is out of range 1..=65536",
    );
    assert_err(
        "default: deny\ndns:\n  max_addresses_per_name: many\n",
        3,
        27,
        "max_addresses_per_name must be a whole number, found a string",
    );
    assert_err(
        "default: deny\ndns:\n  server: [127.0.0.1]\n",
        3,
        3,
        "unknown key \"server\" (expected one of: servers, grace_period, max_addresses_per_name, max_addresses)",
    );
    assert_err(
        "default: deny\ndns:\n  servers: []\n",
        3,
        12,
        "servers must not be empty",
    );
    // `dns` alone does not make a policy.
    let (_, _, m) = err("dns:\n  grace_period: 1s\n");
    assert!(m.starts_with("policy is empty"), "{m}");
}

#[test]
fn bad_fqdn_names_point_at_the_value() {
    assert_err(
        "default: deny\nallow:\n  - fqdn: hooks..slack.com\n    ports: [443]\n",
        3,
        11,
        "invalid domain name \"hooks..slack.com\": empty label (two dots in a row, or a dot at the start)",
    );
    assert_err(
        "default: deny\nallow:\n  - fqdn: \"*.*.example.com\"\n",
        3,
        11,
        "invalid domain name \"*.*.example.com\": `*` is only allowed as the whole first label, as in *.example.com",
    );
}
