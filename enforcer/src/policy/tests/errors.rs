//! Rejected values: each names file:line:column and says what is wrong.

use super::*;

#[test]
fn unknown_keys_name_the_expected_ones() {
    let expected_top = "(expected one of: mode, default, block, allow, targets, alertmanager, dns, integrity, api)";
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
}

#[test]
fn cidr_values() {
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
}

#[test]
fn ports_values() {
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
}

#[test]
fn protocols_values() {
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
}

#[test]
fn entry_shapes() {
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
}

#[test]
fn top_level_values() {
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
}

#[test]
fn duplicates_and_document_shape() {
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
