//! The FQDN allowlist on a real kernel, loopback only.
//!
//! Two DNS responders share one answer function and one log (tests/src/dns.rs):
//! - the *target's* responder runs on a thread that entered the probe's empty network namespace
//!   and listens on 127.0.0.53:53 (and [::1]:53) there: the probe (in the protected cgroup)
//!   queries it over a connected UDP socket, so every answer crosses the learning program on
//!   its way into the probe;
//! - the *agent's* responder listens on host loopback (127.0.0.1, a random port), named in the
//!   policy's `dns: servers:` — the agent lives in the host namespace and cannot reach the
//!   probe's, and must never use the machine's own resolver.
//!
//! The answer function can answer each side differently (`Client`), which is how a test shows
//! that an address only the target received (never the agent) is allowed.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use integration_tests::{
    Agent, ECONNREFUSED, EPERM, Outcome, Probe, TempDir, TestCgroup,
    dns::{AnswerFn, Client, Fresh, Log, Record, Responder, TYPE_A, TYPE_AAAA, fixed},
    http_get, privileged,
};

const PORT: u16 = 8443;

/// Allows the probe's DNS queries to its responder, nothing else but what `rest` adds.
fn policy(agent_dns: &Responder, rest: &str, dns_extra: &str) -> String {
    format!(
        "mode: enforce\ndefault: deny\n{rest}\n  - cidr: 127.0.0.53/32\n    ports: [53]\n    protocols: [udp]\n  - cidr: ::1/128\n    ports: [53]\n    protocols: [udp]\ndns:\n  servers: [\"{}\"]\n{dns_extra}",
        agent_dns.addr
    )
}

struct Setup {
    _dir: TempDir,
    agent: Agent,
    probe: Probe,
    log: Arc<Log>,
    target_dns: Option<Responder>,
    target_dns6: Option<Responder>,
    agent_dns: Option<Responder>,
    _cg: TestCgroup,
}

/// A responder in the probe's network namespace, on `addr`, for the probe's queries.
fn target_responder(
    addr: &str,
    probe: &Probe,
    answer: &Arc<AnswerFn>,
    log: &Arc<Log>,
) -> Responder {
    Responder::start(
        addr.parse().unwrap(),
        Some(probe.pid()),
        Client::Target,
        answer.clone(),
        log.clone(),
    )
    .unwrap()
}

/// The agent's responder, on host loopback (the policy's `dns: servers:`).
fn agent_responder(answer: Arc<AnswerFn>, log: &Arc<Log>) -> Responder {
    Responder::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Client::Agent,
        answer,
        log.clone(),
    )
    .unwrap()
}

/// Probe, both responders, then the agent with `rest` (the `allow:` list, after `allow:`) and
/// extra `dns:` keys.
fn setup(answer: Arc<AnswerFn>, block: &str, allow: &str, dns_extra: &str) -> Setup {
    setup_args(answer, block, allow, dns_extra, &[])
}

/// [`setup`] with extra `enforcer run` arguments.
fn setup_args(
    answer: Arc<AnswerFn>,
    block: &str,
    allow: &str,
    dns_extra: &str,
    extra: &[&str],
) -> Setup {
    let cg = TestCgroup::new().unwrap();
    let probe = Probe::spawn(&cg).unwrap();
    let log = Arc::new(Log::default());
    let target_dns = target_responder("127.0.0.53:53", &probe, &answer, &log);
    let target_dns6 = target_responder("[::1]:53", &probe, &answer, &log);
    let agent_dns = agent_responder(answer, &log);
    let dir = TempDir::new().unwrap();
    let text = policy(&agent_dns, &format!("{block}allow:\n{allow}"), dns_extra);
    let path = dir.write("p.yaml", &text).unwrap();
    let cg_path = cg.path.display().to_string();
    let mut args = vec!["--cgroup", cg_path.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::start_args(Some(&path), &args).unwrap();
    Setup {
        _dir: dir,
        agent,
        probe,
        log,
        target_dns: Some(target_dns),
        target_dns6: Some(target_dns6),
        agent_dns: Some(agent_dns),
        _cg: cg,
    }
}

fn connect(probe: &mut Probe, ip: IpAddr) -> Outcome {
    probe.connect("tcp", &ip.to_string(), PORT).unwrap()
}

#[test]
fn rotating_answers_with_ttl_1s_never_race_1000_rounds() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    // Every query gets two addresses nobody got before, TTL 1 s.
    let fresh = Arc::new(Fresh::new(100));
    let f = fresh.clone();
    let answer: Arc<AnswerFn> = Arc::new(move |name: &str, qtype: u16, _: &Client| {
        (name == "rotate.test").then(|| {
            if qtype != TYPE_A {
                return vec![];
            }
            vec![
                Record::Addr {
                    ip: f.next(),
                    ttl: 1,
                },
                Record::Addr {
                    ip: f.next(),
                    ttl: 1,
                },
            ]
        })
    });
    let mut s = setup(
        answer,
        "",
        &format!("  - fqdn: rotate.test\n    ports: [{PORT}]\n"),
        "",
    );
    let reply = s
        .probe
        .command_line(&format!("rounds rotate.test 127.0.0.53 53 {PORT} 1000"))
        .unwrap();
    let counts: Vec<u64> = reply
        .strip_prefix("ok ")
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let [addrs, eperm, refused, other, failed] = counts[..] else {
        panic!("{reply}")
    };
    assert_eq!(
        (eperm, failed, other),
        (0, 0, 0),
        "{reply}\n{}",
        s.agent.stderr_text()
    );
    assert_eq!((addrs, refused), (2000, 2000), "{reply}");
    let received = s.log.addresses(Client::Target, "rotate.test");
    assert_eq!(received.len(), 2000);
    // The agent resolved the name itself too, and got other addresses: those work as well.
    let agent_got = s.log.addresses(Client::Agent, "rotate.test");
    assert!(
        !agent_got.is_empty(),
        "the agent never resolved rotate.test"
    );
    assert!(agent_got.iter().all(|a| !received.contains(a)));
    // Deny events name the FQDN from the agent's memory, which learned events feed
    // asynchronously (drained every 50 ms): give the last round's events time to arrive. The
    // wait also lets the agent install the answer it got last (the responder logs an answer
    // before the agent has it; the agent re-resolves every second, TTL 1 s).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        connect(&mut s.probe, *agent_got.last().unwrap()),
        Outcome::Errno(ECONNREFUSED)
    );
    // Never answered: denied by the default, named as such.
    assert_eq!(
        connect(&mut s.probe, "127.101.0.1".parse().unwrap()),
        Outcome::Errno(EPERM)
    );
    // Answered, but on a port the rule does not open: denied, and the event names the FQDN.
    let last = *received.last().unwrap();
    assert_eq!(
        s.probe.connect("tcp", &last.to_string(), PORT + 1).unwrap(),
        Outcome::Errno(EPERM)
    );
    // Memory does not grow with rotation: beyond max_addresses_per_name (64 by default) the
    // oldest learned addresses were removed, so the first answer no longer opens anything.
    assert_eq!(connect(&mut s.probe, received[0]), Outcome::Errno(EPERM));
    let lines = s.agent.take_events(3, Duration::from_secs(5));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["rule"] == "default deny"),
        "{lines:?}"
    );
    assert!(lines[0].get("fqdn").is_none(), "{lines:?}");
    assert_eq!(lines[1]["fqdn"], "rotate.test", "{lines:?}");
    assert_eq!(lines[2]["fqdn"], "rotate.test", "{lines:?}");
    let stderr = s.agent.stderr_text();
    assert!(
        stderr.contains("more learned addresses than max_addresses_per_name"),
        "{stderr}"
    );
}

#[test]
fn an_answer_inside_a_block_range_is_denied_and_warned() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    let answer = fixed(HashMap::from([
        (
            "evil.test".to_owned(),
            vec![Record::Addr {
                ip: "127.66.0.7".parse().unwrap(),
                ttl: 60,
            }],
        ),
        (
            "good.test".to_owned(),
            vec![Record::Addr {
                ip: "127.67.0.7".parse().unwrap(),
                ttl: 60,
            }],
        ),
    ]));
    let mut s = setup(
        answer,
        "block:\n  - cidr: 127.66.0.0/16\n",
        &format!(
            "  - fqdn: evil.test\n    ports: [{PORT}]\n  - fqdn: good.test\n    ports: [{PORT}]\n"
        ),
        "",
    );
    let evil = s.probe.resolve("evil.test", "a", "127.0.0.53").unwrap();
    assert_eq!(evil, ["127.66.0.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(connect(&mut s.probe, evil[0]), Outcome::Errno(EPERM));
    let good = s.probe.resolve("good.test", "a", "127.0.0.53").unwrap();
    assert_eq!(connect(&mut s.probe, good[0]), Outcome::Errno(ECONNREFUSED));
    let lines = s.agent.take_events(1, Duration::from_secs(5));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["rule"], "block cidr 127.66.0.0/16", "{lines:?}");
    assert_eq!(lines[0]["fqdn"], "evil.test", "{lines:?}");
    let stderr = s.agent.stderr_text();
    let warning = stderr
        .lines()
        .find(|l| l.contains("inside a blocked range") && l.contains("\"fqdn\":\"evil.test\""))
        .unwrap_or_else(|| panic!("no rebinding warning:\n{stderr}"));
    assert!(
        warning.contains("\"address\":\"127.66.0.7\"") && warning.contains("WARN"),
        "{warning}"
    );
}

#[test]
fn learned_addresses_outlive_a_dns_outage_until_grace_expiry() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    // The target and the agent get different addresses for the same name.
    let answer: Arc<AnswerFn> = Arc::new(|name: &str, qtype: u16, client: &Client| {
        (name == "grace.test").then(|| {
            let ip = match client {
                Client::Target => "127.77.0.1",
                Client::Agent => "127.77.0.2",
            };
            if qtype == TYPE_A {
                vec![Record::Addr {
                    ip: ip.parse().unwrap(),
                    ttl: 1,
                }]
            } else {
                vec![]
            }
        })
    });
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut s = setup_args(
        answer,
        "",
        &format!("  - fqdn: grace.test\n    ports: [{PORT}]\n"),
        "  grace_period: 3s\n",
        &["--metrics-address", &metrics_addr],
    );
    let learned = s.probe.resolve("grace.test", "a", "127.0.0.53").unwrap()[0];
    let resolved_at = Instant::now();
    let agents = "127.77.0.2".parse::<IpAddr>().unwrap();
    assert_eq!(connect(&mut s.probe, learned), Outcome::Errno(ECONNREFUSED));
    assert_eq!(connect(&mut s.probe, agents), Outcome::Errno(ECONNREFUSED));
    // DNS stops for everyone.
    drop(s.target_dns.take());
    drop(s.target_dns6.take());
    drop(s.agent_dns.take());
    // TTL 1 s + grace 3 s: still allowed at 3 s, denied after 4 s.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(resolved_at.elapsed()));
    assert_eq!(
        connect(&mut s.probe, learned),
        Outcome::Errno(ECONNREFUSED),
        "within grace"
    );
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(resolved_at.elapsed()));
    assert_eq!(
        connect(&mut s.probe, learned),
        Outcome::Errno(EPERM),
        "after grace"
    );
    // The agent keeps its last good answer while DNS fails: never flushed.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        connect(&mut s.probe, agents),
        Outcome::Errno(ECONNREFUSED),
        "agent's answer kept\n{}",
        s.agent.stderr_text()
    );
    let stderr = s.agent.stderr_text();
    assert!(stderr.contains("keeping its last answers"), "{stderr}");
    let metrics = http_get(&metrics_addr, "/metrics").unwrap();
    assert!(
        metrics.contains("enforcer_fqdn_resolution_failures_total{name=\"grace.test\"} "),
        "{metrics}"
    );
    let addresses: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("enforcer_fqdn_addresses "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no enforcer_fqdn_addresses in {metrics}"));
    assert!(addresses >= 1.0, "{metrics}");
    let lines = s.agent.take_events(1, Duration::from_secs(5));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fqdn"], "grace.test", "{lines:?}");
}

#[test]
fn wildcards_match_subdomains_only_and_cnames_compression_case_and_ipv6_work() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    let addr = |s: &str| Record::Addr {
        ip: s.parse().unwrap(),
        ttl: 60,
    };
    let answer = fixed(HashMap::from([
        ("a.wild.test".to_owned(), vec![addr("127.88.0.1")]),
        ("a.b.wild.test".to_owned(), vec![addr("127.88.0.2")]),
        ("wild.test".to_owned(), vec![addr("127.88.0.3")]),
        ("xwild.test".to_owned(), vec![addr("127.88.0.4")]),
        ("upper.wild.test".to_owned(), vec![addr("127.88.0.5")]),
        (
            "cname.wild.test".to_owned(),
            vec![
                Record::Cname {
                    target: "edge.cdn.test".to_owned(),
                    ttl: 60,
                },
                Record::Cname {
                    target: "x.edge.cdn.test".to_owned(),
                    ttl: 60,
                },
                addr("127.88.0.6"),
                addr("127.88.0.8"),
            ],
        ),
        (
            "v6.wild.test".to_owned(),
            vec![addr("::1"), addr("::ffff:127.88.0.7")],
        ),
        ("exact.test".to_owned(), vec![addr("127.88.0.9")]),
        ("sub.exact.test".to_owned(), vec![addr("127.88.0.10")]),
    ]));
    let mut s = setup(
        answer,
        "",
        &format!(
            "  - fqdn: \"*.wild.test\"\n    ports: [{PORT}]\n  - fqdn: exact.test\n    ports: [{PORT}]\n"
        ),
        "",
    );
    let mut check = |name: &str, qtype: &str, server: &str, allowed: bool| {
        let ips = s.probe.resolve(name, qtype, server).unwrap();
        assert!(!ips.is_empty(), "{name}: no answer");
        for ip in ips {
            let want = if allowed {
                Outcome::Errno(ECONNREFUSED)
            } else {
                Outcome::Errno(EPERM)
            };
            assert_eq!(connect(&mut s.probe, ip), want, "{name} → {ip}");
        }
    };
    check("a.wild.test", "a", "127.0.0.53", true);
    check("a.b.wild.test", "a", "127.0.0.53", true);
    check("wild.test", "a", "127.0.0.53", false);
    check("xwild.test", "a", "127.0.0.53", false);
    check("UPPER.Wild.TEST", "a", "127.0.0.53", true);
    check("cname.wild.test", "a", "127.0.0.53", true);
    check("v6.wild.test", "aaaa", "::1", true);
    check("exact.test", "a", "::1", true);
    check("sub.exact.test", "a", "127.0.0.53", false);
    let _ = TYPE_AAAA;
}

/// Programs attached to `cgroup` in the ingress direction (the DNS-learning program).
/// The DNS-learning programs attached to `cgroup` (bpftool shows the first 15 bytes of
/// `enforcer_dns_ingress`; the API guard's ingress program is attached there too).
fn dns_learning_programs(cgroup: &std::path::Path) -> usize {
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ingress") && l.contains("enforcer_dns_in"))
        .count()
}

/// With pinning, learned addresses survive an agent crash (the maps are adopted, the learning
/// link is replaced, not added); a reload that only changes ports keeps them under the new
/// ports; a reload that changes the names forgets them until the process resolves again.
#[test]
fn learned_addresses_survive_a_restart_and_follow_reloads() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    let answer = fixed(HashMap::from([
        (
            "keep.test".to_owned(),
            vec![Record::Addr {
                ip: "127.90.0.1".parse().unwrap(),
                ttl: 600,
            }],
        ),
        (
            "other.test".to_owned(),
            vec![Record::Addr {
                ip: "127.90.0.2".parse().unwrap(),
                ttl: 600,
            }],
        ),
    ]));
    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let log = Arc::new(Log::default());
    let _target_dns = target_responder("127.0.0.53:53", &probe, &answer, &log);
    // The agent's responder knows neither name: only learning can allow 127.90.0.1.
    let agent_dns = agent_responder(fixed(HashMap::new()), &log);
    let dir = TempDir::new().unwrap();
    let write = |allow: &str| {
        dir.write(
            "p.yaml",
            &policy(&agent_dns, &format!("allow:\n{allow}"), ""),
        )
        .unwrap()
    };
    let path = write(&format!("  - fqdn: keep.test\n    ports: [{PORT}]\n"));
    let pins = integration_tests::PinDir::new();
    let cg_path = cg.path.display().to_string();
    let pin_dir = pins.path.display().to_string();
    let args = ["--cgroup", &cg_path, "--pin", "--bpffs-dir", &pin_dir];
    let mut agent = Agent::start_args(Some(&path), &args).unwrap();
    let ip: IpAddr = "127.90.0.1".parse().unwrap();
    assert_eq!(probe.resolve("keep.test", "a", "127.0.0.53").unwrap(), [ip]);
    assert_eq!(connect(&mut probe, ip), Outcome::Errno(ECONNREFUSED));
    assert_eq!(dns_learning_programs(&cg.path), 1);

    for round in 0..3 {
        agent.signal(libc::SIGKILL);
        agent.stop();
        assert_eq!(
            connect(&mut probe, ip),
            Outcome::Errno(ECONNREFUSED),
            "round {round}: agent down"
        );
        agent = Agent::start_args(Some(&path), &args).unwrap();
        assert!(
            agent.stderr_text().contains("adopted pinned maps"),
            "{}",
            agent.stderr_text()
        );
        assert_eq!(
            dns_learning_programs(&cg.path),
            1,
            "round {round}: learning link replaced, not added"
        );
        assert_eq!(
            connect(&mut probe, ip),
            Outcome::Errno(ECONNREFUSED),
            "round {round}: restarted"
        );
    }
    // The restarted agent's learning program learns too.
    assert_eq!(
        probe.resolve("keep.test", "a", "127.0.0.53").unwrap(),
        [ip],
        "resolution after restarts"
    );

    // Same names, other port: the learned address moves to the new port.
    write(&format!("  - fqdn: keep.test\n    ports: [{}]\n", PORT + 1));
    agent.signal(libc::SIGHUP);
    agent.wait_for_stderr("\"message\":\"policy reloaded\"");
    assert_eq!(connect(&mut probe, ip), Outcome::Errno(EPERM));
    assert_eq!(
        probe.connect("tcp", &ip.to_string(), PORT + 1).unwrap(),
        Outcome::Errno(ECONNREFUSED)
    );

    // Other names: slots are renumbered, learned addresses are forgotten until resolved again.
    write(&format!(
        "  - fqdn: other.test\n    ports: [{PORT}]\n  - fqdn: keep.test\n    ports: [{PORT}]\n"
    ));
    agent.signal(libc::SIGHUP);
    agent.wait_for_stderr("learned and resolved addresses are forgotten");
    assert_eq!(connect(&mut probe, ip), Outcome::Errno(EPERM));
    assert_eq!(probe.resolve("keep.test", "a", "127.0.0.53").unwrap(), [ip]);
    assert_eq!(connect(&mut probe, ip), Outcome::Errno(ECONNREFUSED));
    drop(agent);
}
