//! The `alertmanager` section and the automatic rules it describes.

use super::*;

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
            file: "/proc/1234/root/etc/resolv.conf".into(),
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
