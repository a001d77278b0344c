//! Well-formed policies: what the parser builds.

use std::net::IpAddr;

use enforcer_common::proto;

use super::*;

pub(super) const FULL: &str = "\
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
            "block preset:cloud-metadata 64:ff9b:1::/48",
            "block cidr 198.51.100.0/24 ports 80,8000-8081 protocols tcp,udp",
            "allow cidr 10.96.0.10/32 ports 53 protocols tcp,udp",
            "allow cidr 2001:db8::/32 ports 9094 protocols tcp",
        ]
    );
    let r = &p.rules[9];
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
    assert_eq!(p.rules.len(), 9);
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
    assert_eq!(p.rules.len(), 8);
    assert!(p.rules.iter().all(|r| r.net != net("168.63.129.16/32")));
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

#[test]
fn normalisation() {
    let a = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(normalize_addr(a("::ffff:1.2.3.4")), a("1.2.3.4"));
    assert_eq!(normalize_addr(a("64:ff9b::102:304")), a("1.2.3.4"));
    assert_eq!(
        normalize_addr(a("64:ff9b:1::102:304")),
        a("64:ff9b:1::102:304")
    );
    assert_eq!(normalize_addr(a("::1.2.3.4")), a("1.2.3.4"));
    assert_eq!(normalize_addr(a("::ffff:0:1.2.3.4")), a("1.2.3.4"));
    assert_eq!(normalize_addr(a("::1")), a("::1"));
    assert_eq!(normalize_addr(a("::")), a("::"));
    assert_eq!(normalize_addr(a("fec0::1")), a("fec0::1"));
    assert_eq!(
        normalize_net(net("::a9fe:a9fe/128")),
        net("169.254.169.254/32")
    );
    assert_eq!(normalize_net(net("::ffff:0:0:0/96")), net("0.0.0.0/0"));
    assert_eq!(normalize_net(net("::2/127")), net("0.0.0.2/31"));
    // Ranges holding `::` or `::1` stay IPv6.
    assert_eq!(normalize_net(net("::/96")), net("::/96"));
    assert_eq!(normalize_net(net("::/127")), net("::/127"));
    assert_eq!(normalize_net(net("::1/128")), net("::1/128"));
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
