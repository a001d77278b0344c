//! `enforcer run` on a real kernel: a probe in a child cgroup and an empty network namespace
//! calls connect()/sendto(); without the enforcer non-loopback destinations fail with
//! ENETUNREACH, with it EPERM, and each denied call is counted on one JSON line.
use std::time::Duration;

use integration_tests::{
    Agent, ECONNREFUSED, ENETUNREACH, EPERM, Outcome, Probe, TempDir, TestCgroup, denied_calls,
    lost_events, privileged,
};

const METADATA_RULE: &str = "block preset:cloud-metadata 169.254.169.254/32";
const TEN_RULE: &str = "block preset:private 10.0.0.0/8";

/// The calls of the list, with the rule the embedded default policy denies them by.
const DEFAULT_DENIED: &[(&str, &str, &str, u16, &str)] = &[
    // (call, proto, address, port, rule)
    ("connect", "tcp", "169.254.169.254", 80, METADATA_RULE),
    ("connect", "udp", "169.254.169.254", 80, METADATA_RULE),
    ("sendto", "udp", "169.254.169.254", 80, METADATA_RULE),
    ("connect", "tcp", "10.0.0.1", 443, TEN_RULE),
    ("connect", "udp", "10.0.0.1", 53, TEN_RULE),
    ("sendto", "udp", "10.0.0.1", 53, TEN_RULE),
    (
        "connect",
        "tcp",
        "::ffff:169.254.169.254",
        80,
        METADATA_RULE,
    ),
    ("connect", "tcp", "64:ff9b::a9fe:a9fe", 80, METADATA_RULE),
    // IPv4-compatible and SIIT spellings are decided as the IPv4 address they carry.
    ("connect", "tcp", "::169.254.169.254", 80, METADATA_RULE),
    ("sendto", "udp", "::169.254.169.254", 80, METADATA_RULE),
    (
        "connect",
        "tcp",
        "::ffff:0:169.254.169.254",
        80,
        METADATA_RULE,
    ),
    ("connect", "udp", "::ffff:0:10.0.0.1", 53, TEN_RULE),
    // Local-use NAT64 (no fixed place for the IPv4 address) and site-local: blocked whole.
    (
        "connect",
        "tcp",
        "64:ff9b:1:a9fe:a9:fe00::",
        80,
        "block preset:private 64:ff9b:1::/48",
    ),
    (
        "connect",
        "tcp",
        "fec0::1",
        80,
        "block preset:private fec0::/10",
    ),
    (
        "connect",
        "tcp",
        "fd00:ec2::254",
        80,
        "block preset:cloud-metadata fd00:ec2::254/128",
    ),
    (
        "connect",
        "udp",
        "fd00:ec2::254",
        80,
        "block preset:cloud-metadata fd00:ec2::254/128",
    ),
    (
        "sendto",
        "udp",
        "fd00:ec2::254",
        80,
        "block preset:cloud-metadata fd00:ec2::254/128",
    ),
];

fn call(probe: &mut Probe, what: &str, proto: &str, addr: &str, port: u16) -> Outcome {
    match what {
        "connect" => probe.connect(proto, addr, port),
        "sendto" => probe.sendto(addr, port),
        other => panic!("unknown call {other}"),
    }
    .unwrap_or_else(|e| panic!("{what} {proto} {addr}:{port}: {e}"))
}

fn expected_hook(what: &str, addr: &str) -> &'static str {
    match (what, addr.contains(':')) {
        ("connect", false) => "connect4",
        ("connect", true) => "connect6",
        (_, false) => "sendmsg4",
        (_, true) => "sendmsg6",
    }
}

#[test]
fn without_the_enforcer_the_namespace_is_unreachable_not_denied() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    for &(what, proto, addr, port, _) in DEFAULT_DENIED {
        assert_eq!(
            call(&mut probe, what, proto, addr, port),
            Outcome::Errno(ENETUNREACH),
            "{what} {proto} {addr}"
        );
    }
}

#[test]
fn embedded_default_denies_metadata_private_and_their_ipv6_spellings_with_one_line_each() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(None, &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    for &(what, proto, addr, port, rule) in DEFAULT_DENIED {
        assert_eq!(
            call(&mut probe, what, proto, addr, port),
            Outcome::Errno(EPERM),
            "{what} {proto} {addr}:{port}"
        );
        let lines = agent.take_events(1, Duration::from_secs(5));
        assert_eq!(
            lines.len(),
            1,
            "exactly one JSON line for {what} {proto} {addr}: {lines:?}"
        );
        let ev = &lines[0];
        assert_eq!(ev["event"], "connect_denied", "{ev}");
        assert_eq!(ev["mode"], "enforce");
        assert_eq!(ev["rule"], rule, "{ev}");
        assert_eq!(ev["hook"], expected_hook(what, addr), "{ev}");
        assert_eq!(ev["protocol"], proto, "{ev}");
        assert_eq!(
            ev["dst_ip"],
            addr.parse::<std::net::IpAddr>().unwrap().to_string(),
            "{ev}"
        );
        assert_eq!(ev["dst_port"], port, "{ev}");
        assert_eq!(ev["pid"], probe.pid(), "{ev}");
        assert_eq!(ev["comm"], "probe", "{ev}");
        // The probe is single-threaded and runs as the test's user.
        assert_eq!(ev["tid"], probe.pid(), "{ev}");
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((&ev["uid"], &ev["gid"]), (&uid.into(), &gid.into()), "{ev}");
        assert_eq!(ev["cgroup_id"], cg.id(), "{ev}");
        assert!(ev["timestamp"].is_string(), "{ev}");
    }
    // The default blocks 127/8 too (preset private): Alertmanager calling its own API
    // (http://127.0.0.1:9093/-/reload, which a webhook's POST triggers) is one of the attacks.
    let port = probe.listen("127.0.0.1").unwrap();
    assert_eq!(
        probe.connect("tcp", "127.0.0.1", port).unwrap(),
        Outcome::Errno(EPERM)
    );
    let status = agent.stop().expect("agent exited");
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{}",
        agent.stderr_text()
    );
    assert!(
        agent.stderr_text().contains("\"message\":\"detached\""),
        "{}",
        agent.stderr_text()
    );
}

#[test]
fn loopback_listener_allowed_but_blocked_loopback_address_denied() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            "mode: enforce\ndefault: allow\nblock:\n  - cidr: 127.0.0.2/32\n",
        )
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let open = probe.listen("127.0.0.1").unwrap();
    let blocked = probe.listen("127.0.0.2").unwrap();
    assert_eq!(
        probe.connect("tcp", "127.0.0.1", open).unwrap(),
        Outcome::Ok
    );
    assert_eq!(
        probe.connect("tcp", "127.0.0.2", blocked).unwrap(),
        Outcome::Errno(EPERM)
    );
    // A closed loopback port is refused by the stack, not by us.
    assert_eq!(
        probe.connect("tcp", "127.0.0.3", 9).unwrap(),
        Outcome::Errno(ECONNREFUSED)
    );
    let lines = agent.take_events(1, Duration::from_secs(5));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["rule"], "block cidr 127.0.0.2/32");
    assert_eq!(lines[0]["dst_port"], blocked);
}

#[test]
fn explicit_allow_with_port_inside_blocked_range_opens_that_port_only() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            "default: allow\nblock:\n  - preset: private\nallow:\n  - cidr: 10.1.2.3/32\n    ports: [443]\n    protocols: [tcp]\n",
        )
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "10.1.2.3", 443).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
    assert_eq!(
        probe.connect("tcp", "10.1.2.3", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(
        probe.connect("udp", "10.1.2.3", 443).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(
        probe.connect("tcp", "10.1.2.4", 443).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(
        probe.connect("tcp", "::ffff:10.1.2.3", 443).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
    let lines = agent.take_events(3, Duration::from_secs(5));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["rule"] == TEN_RULE), "{lines:?}");
}

#[test]
fn udplite_sockets_are_refused_to_targets() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let _agent = Agent::start(None, &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    // No connect hook runs for UDP-Lite: the socket itself is refused (EPERM from socket()),
    // whatever the destination; plain UDP to the same addresses is not blocked (ENETUNREACH).
    for addr in ["192.0.2.7", "2001:db8::7", "::ffff:192.0.2.7"] {
        assert_eq!(
            probe.connect("udplite", addr, 53).unwrap(),
            Outcome::Errno(EPERM),
            "connect udplite {addr}"
        );
        assert_eq!(
            probe.sendto_proto("udplite", addr, 53).unwrap(),
            Outcome::Errno(EPERM),
            "sendto udplite {addr}"
        );
        assert_eq!(
            probe.connect("udp", addr, 53).unwrap(),
            Outcome::Errno(ENETUNREACH),
            "connect udp {addr}"
        );
    }
}

#[test]
fn udplite_is_decided_by_the_udp_rules_in_audit_mode() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            "mode: audit\ndefault: allow\nblock:\n  - cidr: 192.0.2.0/24\n    protocols: [udp]\n  - cidr: 2001:db8::/64\n    protocols: [udp]\n",
        )
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    // Audit mode lets the socket be; its unconnected sends are decided as UDP (would_deny).
    for addr in ["192.0.2.7", "2001:db8::7"] {
        assert_eq!(
            probe.sendto_proto("udplite", addr, 53).unwrap(),
            Outcome::Errno(ENETUNREACH),
            "sendto udplite {addr}"
        );
    }
    // Each socket is logged as one that enforce mode would refuse, each send as would_deny.
    let lines = agent.take_events(4, Duration::from_secs(5));
    assert_eq!(lines.len(), 4, "{lines:?}");
    let (refusals, lines): (Vec<_>, Vec<_>) =
        lines.into_iter().partition(|l| l["hook"] == "sock_create");
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    for l in &refusals {
        assert_eq!(l["event"], "would_refuse", "{l}");
        assert_eq!(
            l["rule"], "udplite socket (no connect hook decides it)",
            "{l}"
        );
    }
    for (l, rule) in lines.iter().zip([
        "block cidr 192.0.2.0/24 protocols udp",
        "block cidr 2001:db8::/64 protocols udp",
    ]) {
        assert_eq!(l["event"], "would_deny", "{l}");
        assert_eq!(l["protocol"], "udplite", "{l}");
        assert_eq!(l["rule"], rule, "{l}");
    }
}

#[test]
fn default_deny_names_the_default() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            "default: deny\nallow:\n  - cidr: 127.0.0.0/8\n    ports: [8080]\n",
        )
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "127.0.0.1", 8080).unwrap(),
        Outcome::Errno(ECONNREFUSED)
    );
    assert_eq!(
        probe.connect("tcp", "192.0.2.1", 443).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(
        probe.connect("tcp", "::1", 8080).unwrap(),
        Outcome::Errno(EPERM)
    );
    let lines = agent.take_events(2, Duration::from_secs(5));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["rule"] == "default deny"),
        "{lines:?}"
    );
}

#[test]
fn audit_mode_lets_the_call_through_and_logs_would_deny() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            "mode: audit\ndefault: allow\nblock:\n  - preset: cloud-metadata\n",
        )
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
    assert_eq!(
        probe.sendto("169.254.169.254", 80).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
    let lines = agent.take_events(2, Duration::from_secs(5));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["event"], "would_deny", "{l}");
        assert_eq!(l["mode"], "audit", "{l}");
        assert_eq!(l["rule"], METADATA_RULE, "{l}");
    }
}

#[test]
fn the_agent_detaches_on_sigint_and_sigterm() {
    if !privileged() {
        return;
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let cg = TestCgroup::new().unwrap();
        let mut agent = Agent::start(None, &cg).unwrap();
        assert_eq!(integration_tests::attached_programs(&cg.path).unwrap(), 4);
        agent.signal(signal);
        let status = agent.stop().expect("exited");
        assert!(status.success(), "{status:?}");
        assert_eq!(integration_tests::attached_programs(&cg.path).unwrap(), 0);
        let mut probe = Probe::spawn(&cg).unwrap();
        assert_eq!(
            probe.connect("tcp", "169.254.169.254", 80).unwrap(),
            Outcome::Errno(ENETUNREACH)
        );
    }
}

#[test]
fn a_flood_of_denials_is_fully_accounted_for_as_counted_lines_or_lost_events() {
    if !privileged() {
        return;
    }
    const N: u64 = 200_000;
    let cg = TestCgroup::new().unwrap();
    // Without aggregation (a line per call) the agent cannot keep up with the flood, so the
    // ring overflows; `denial_flood.rs` floods with the default window.
    let mut agent = Agent::start_args(
        None,
        &["--cgroup", &cg.path_str(), "--denial-window-ms", "0"],
    )
    .unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let (eperm, other) = probe.flood("udp", "169.254.169.254", 80, N).unwrap();
    assert_eq!((eperm, other), (N, 0));
    // Lines keep arriving while the agent drains; wait until they stop.
    let mut lines = Vec::new();
    loop {
        let batch = agent.take_events(1, Duration::from_secs(2));
        if batch.is_empty() {
            break;
        }
        lines.extend(batch);
    }
    // With a zero window every denial is its own line.
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "connect_denied")
            .all(|l| l["count"] == 1 && l.get("window_ms").is_none()),
        "a line folded calls without a window"
    );
    let denied = denied_calls(&lines, |_| true);
    let lost = lost_events(&lines);
    assert_eq!(
        denied + lost,
        N,
        "{denied} counted by lines + {lost} lost != {N} denied calls"
    );
    assert!(
        lost > 0,
        "a 1 MiB ring cannot hold {N} events: the flood must have been counted as lost"
    );
    assert!(
        agent.stderr_text().contains("events lost"),
        "{}",
        agent.stderr_text()
    );
}
