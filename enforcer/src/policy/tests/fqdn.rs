//! `fqdn` rules and the `dns` section.

use super::*;

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

#[test]
fn wildcards_cover_one_or_more_labels_below_only() {
    let p = parse_policy(
        "default: deny\nallow:\n  - fqdn: \"*.example.com\"\n  - fqdn: example.org\n",
        "t.yaml",
    )
    .unwrap();
    let (w, e) = (&p.fqdns[0], &p.fqdns[1]);
    assert!(w.covers("a.example.com"));
    assert!(w.covers("a.b.example.com"));
    assert!(!w.covers("example.com"));
    assert!(!w.covers("aexample.com"));
    assert!(!w.covers(".example.com"));
    assert!(!w.covers("a.example.com.evil"));
    assert!(e.covers("example.org"));
    assert!(!e.covers("a.example.org"));
}
