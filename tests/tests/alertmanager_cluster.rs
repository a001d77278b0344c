//! The embedded default keeps a real Alertmanager working: a two-replica cluster (Debian's
//! `prometheus-alertmanager` 0.25) on loopback addresses, in a network namespace of its own
//! with only `lo` up, both replicas in the enforced cgroup. The default blocks 127.0.0.0/8,
//! yet with the automatic rules (each replica's resolv.conf name server on port 53, its
//! `--cluster.peer` addresses on 9094) the replicas gossip (a silence created on one shows up
//! on the other) and resolve names through their own name server (a webhook receiver given by
//! name gets the alert), while a receiver on another loopback address is denied. With the
//! automatic rules turned off in the policy, gossip to the peer is denied.
//!
//! Everything stays inside the namespace: its resolv.conf (`/etc/netns/<ns>/resolv.conf`,
//! which `ip netns exec` bind-mounts) names the test's own DNS responder on 127.0.0.53, and
//! the webhook sink listens on 192.0.2.10 (TEST-NET-1, not in a blocked preset) on that `lo`.
use std::{
    net::{Ipv4Addr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use integration_tests::{
    Agent, Background, ChildGuard, HttpSink, NetNs, TempDir, TestCgroup, installed, privileged,
};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";
/// The namespace's name server (the test's responder), as in systemd-resolved setups.
const DNS_ADDR: &str = "127.0.0.53";
/// The name the webhook receiver is addressed by, and where it points.
const SINK_NAME: &str = "sink.amc.test";
const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SINK_PORT: u16 = 8080;
/// A DNS-name peer: resolved by the responder, but not pinned by the agent (a warning).
const PEER_NAME: &str = "peer-b.amc.test";
/// The receiver that must be denied: another loopback address.
const BLOCKED_URL: &str = "http://127.0.0.9:8080/-/quit";
const LOOPBACK_RULE: &str = "block preset:private 127.0.0.0/8";

/// Needs root and Alertmanager: fails without them, unless a skip is asked for
/// (`ENFORCER_TESTS_ALLOW_SKIP=1`).
fn runnable() -> bool {
    const INSTALL: &str = "apt-get install prometheus-alertmanager";
    privileged() && installed(ALERTMANAGER, INSTALL) && installed(AMTOOL, INSTALL)
}

/// A network namespace created for the test: only `lo` up, plus the sink's address on it, and
/// its own resolv.conf naming [`DNS_ADDR`]; deleted, with `/etc/netns/<name>`, on drop.
fn netns() -> anyhow::Result<NetNs> {
    let mut ns = NetNs::new("enforcer-amc")?;
    ns.ip(&["addr", "add", &format!("{SINK_ADDR}/32"), "dev", "lo"])?;
    let resolv = format!(
        "# enforcer test namespace {}\nnameserver {DNS_ADDR}\n",
        ns.name
    );
    ns.resolv_conf(&resolv)?;
    Ok(ns)
}

/// The namespace's name server: answers A queries for [`SINK_NAME`] (→ [`SINK_ADDR`]) and
/// [`PEER_NAME`] (→ 127.0.0.3), other types of those names with no answer, anything else
/// with NXDOMAIN. Counts the queries for the sink's name.
fn dns_responder(ns: &NetNs, sink_queries: Arc<AtomicUsize>) -> anyhow::Result<Background> {
    let socket = ns.run(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind((DNS_ADDR, 53))?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(s)
    })?;
    Ok(Background::spawn(move |stop| {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some((reply, name)) = dns_reply(&buf[..n]) {
                if name == SINK_NAME {
                    sink_queries.fetch_add(1, Ordering::Relaxed);
                }
                let _ = socket.send_to(&reply, from);
            }
        }
    }))
}

/// The reply to one DNS query, and the name asked for (lower case, no trailing dot).
fn dns_reply(query: &[u8]) -> Option<(Vec<u8>, String)> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");
    let address = match name.as_str() {
        SINK_NAME => Some(SINK_ADDR),
        PEER_NAME => Some(Ipv4Addr::new(127, 0, 0, 3)),
        _ => None,
    };
    let answer = address.filter(|_| qtype == 1);
    let rcode = if address.is_some() { 0 } else { 3 };
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]); // id
    reply.push(0x80 | 0x04 | (query[2] & 0x01)); // QR, AA, RD as asked
    reply.push(0x80 | rcode); // RA
    reply.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let Some(a) = answer {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
        reply.extend_from_slice(&a.octets());
    }
    Some((reply, name))
}

/// The webhook receiver behind [`SINK_NAME`]: records every request.
fn webhook_sink(ns: &NetNs) -> anyhow::Result<HttpSink> {
    let listener = ns.run(|| TcpListener::bind((SINK_ADDR, SINK_PORT)))?;
    Ok(HttpSink::start(listener)?)
}

/// One Alertmanager replica, started in the cgroup (before it creates a socket) and in the
/// namespace; killed by its PID on drop.
struct Replica {
    child: ChildGuard,
    log: PathBuf,
}

impl Replica {
    /// `me`/`peer`: 127.0.0.2 or 127.0.0.3 (gossip on 9094, web on 9093).
    fn start(
        ns: &NetNs,
        cg: &TestCgroup,
        dir: &TempDir,
        me: &str,
        peers: &[String],
    ) -> anyhow::Result<Self> {
        let config = dir.write("alertmanager.yml", &alertmanager_config())?;
        let data = dir.path.join(format!("data-{me}"));
        std::fs::create_dir_all(&data)?;
        let log = dir.path.join(format!("alertmanager-{me}.log"));
        let mut args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", data.display()),
            format!("--web.listen-address={me}:9093"),
            format!("--cluster.listen-address={me}:9094"),
            "--cluster.reconnect-interval=2s".to_owned(),
            "--cluster.peer-timeout=1s".to_owned(),
            "--log.level=debug".to_owned(),
        ];
        for p in peers {
            args.push("--cluster.peer".to_owned());
            args.push(p.clone());
        }
        // The shell moves itself into the cgroup, then `ip netns exec` execs Alertmanager in
        // the same process: every socket it creates belongs to the enforced cgroup.
        let mut cmd = ns.command_in_cgroup(cg, ALERTMANAGER);
        cmd.args(&args)
            // The pure Go resolver reads /etc/resolv.conf (the namespace's) and nothing else.
            .env("GODEBUG", "netdns=go");
        let child = ChildGuard::spawn_logged(format!("alertmanager {me}"), &mut cmd, &log)?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process is Alertmanager itself (after `sh` and `ip netns exec`).
    fn wait_exec(&mut self) -> anyhow::Result<()> {
        let exe = PathBuf::from(format!("/proc/{}/exe", self.pid()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("alertmanager exited with {status}:\n{}", self.log_text());
            }
            if std::fs::read_link(&exe).is_ok_and(|p| p == Path::new(ALERTMANAGER)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("pid {} never became {ALERTMANAGER}", self.pid())
    }
}

/// Every alert goes to both receivers: the sink (by name) and the blocked loopback address.
fn alertmanager_config() -> String {
    format!(
        "route:
  receiver: sink
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: blocked
      continue: true
    - receiver: sink
receivers:
  - name: sink
    webhook_configs:
      - url: http://{SINK_NAME}:{SINK_PORT}/hook
        send_resolved: false
  - name: blocked
    webhook_configs:
      - url: {BLOCKED_URL}
        send_resolved: false
"
    )
}

/// `amtool <args> --alertmanager.url=http://<at>:9093`, inside the namespace.
fn amtool(ns: &NetNs, at: &str, args: &[&str]) -> anyhow::Result<String> {
    let url = format!("--alertmanager.url=http://{at}:9093");
    let mut all = vec![AMTOOL];
    all.extend_from_slice(args);
    all.push(&url);
    let out = ns.output(&all)?;
    if !out.status.success() {
        bail!(
            "amtool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `f` every 500 ms until it returns `Some`, for at most `timeout`.
fn eventually<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    integration_tests::eventually(timeout, Duration::from_millis(500), f)
}

/// Waits for a deny line matching `pred` (other lines are kept in `seen`).
fn wait_deny(
    agent: &mut Agent,
    seen: &mut Vec<serde_json::Value>,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ev) = seen.iter().find(|e| pred(e)) {
            return Some(ev.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        seen.extend(agent.take_events(1, Duration::from_secs(1)));
    }
}

/// The `--cluster.peer` list of a replica whose peer is `other`.
fn peer(other: &str) -> Vec<String> {
    vec![format!("{other}:9094")]
}

/// Waits (10 s at most) until the agent has logged every one of the `expected` automatic rules.
fn wait_for_auto_rules(agent: &Agent, expected: &[String]) {
    let found = eventually(Duration::from_secs(10), || {
        let log = agent.stderr_text();
        expected
            .iter()
            .all(|r| log.contains(&format!("\"rule\":\"{r}\"")))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "automatic rules missing; expected {expected:#?}\nagent stderr:\n{}",
        agent.stderr_text()
    );
}
#[test]
fn embedded_default_keeps_an_alertmanager_cluster_gossiping_and_resolving() {
    if !runnable() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let ns = netns().unwrap();
    let dir = TempDir::new().unwrap();
    let sink_queries = Arc::new(AtomicUsize::new(0));
    let _dns = dns_responder(&ns, sink_queries.clone()).unwrap();
    let sink = webhook_sink(&ns).unwrap();
    // The embedded default: 127.0.0.0/8 is blocked.
    let mut agent = Agent::start(None, &cg).unwrap();

    // Replica A also names its peer by DNS name: that flag cannot be pinned (a warning).
    let mut peers_a = peer("127.0.0.3");
    peers_a.push(format!("{PEER_NAME}:9094"));
    let mut a = Replica::start(&ns, &cg, &dir, "127.0.0.2", &peers_a).unwrap();
    let mut b = Replica::start(&ns, &cg, &dir, "127.0.0.3", &peer("127.0.0.2")).unwrap();
    a.wait_exec().unwrap();
    b.wait_exec().unwrap();

    // The agent finds both replicas and adds exactly their name server and peers.
    let expected = [
        format!(
            "allow auto:cluster.peer 127.0.0.3/32 ports 9094 protocols tcp,udp (pid {})",
            a.pid()
        ),
        format!(
            "allow auto:cluster.peer 127.0.0.2/32 ports 9094 protocols tcp,udp (pid {})",
            b.pid()
        ),
        format!(
            "allow auto:resolv.conf {DNS_ADDR}/32 ports 53 protocols tcp,udp (pid {})",
            a.pid().min(b.pid())
        ),
    ];
    wait_for_auto_rules(&agent, &expected);
    let log = agent.stderr_text();
    assert!(
        log.contains("automatic rule added"),
        "no 'automatic rule added' line:\n{log}"
    );
    assert!(
        log.contains(&format!("--cluster.peer {PEER_NAME}:9094")) && log.contains("DNS name"),
        "no warning about the DNS-name peer:\n{log}"
    );

    // Gossip: a silence created on A shows up on B.
    let id = eventually(Duration::from_secs(20), || {
        amtool(
            &ns,
            "127.0.0.2",
            &[
                "silence",
                "add",
                "alertname=EnforcerGossipTest",
                "--comment=gossip through the enforcer",
                "--author=enforcer-test",
                "--duration=1h",
            ],
        )
        .ok()
    })
    .expect("amtool silence add on replica A")
    .trim()
    .to_owned();
    assert!(!id.is_empty());
    let seen_on_b = eventually(Duration::from_secs(30), || {
        amtool(&ns, "127.0.0.3", &["silence", "query", "-q"])
            .ok()
            .filter(|out| out.lines().any(|l| l.trim() == id))
    });
    assert!(
        seen_on_b.is_some(),
        "silence {id} never reached replica B\nA:\n{}\nB:\n{}\nagent:\n{}",
        a.log_text(),
        b.log_text(),
        agent.stderr_text()
    );

    // DNS and notifications: the alert reaches the sink by name, the loopback receiver is
    // denied.
    amtool(
        &ns,
        "127.0.0.2",
        &["alert", "add", "EnforcerNotifyTest", "severity=none"],
    )
    .unwrap();
    let delivered = eventually(Duration::from_secs(30), || {
        sink.received()
            .into_iter()
            .map(|r| r.body)
            .find(|b| b.contains("EnforcerNotifyTest"))
    });
    assert!(
        delivered.is_some(),
        "the sink never got the alert (DNS queries for {SINK_NAME}: {})\nA:\n{}\nagent:\n{}",
        sink_queries.load(Ordering::Relaxed),
        a.log_text(),
        agent.stderr_text()
    );
    assert!(sink_queries.load(Ordering::Relaxed) > 0);

    let denied_in_log = eventually(Duration::from_secs(30), || {
        a.log_text()
            .lines()
            .find(|l| l.contains("127.0.0.9:8080") && l.contains("operation not permitted"))
            .map(str::to_owned)
    });
    assert!(
        denied_in_log.is_some(),
        "Alertmanager never logged the denied receiver:\n{}",
        a.log_text()
    );
    let mut seen = Vec::new();
    let deny = wait_deny(&mut agent, &mut seen, Duration::from_secs(10), |e| {
        e["dst_ip"] == "127.0.0.9" && e["dst_port"] == 8080
    })
    .unwrap_or_else(|| panic!("no deny line for 127.0.0.9:8080: {seen:#?}"));
    assert_eq!(deny["event"], "connect_denied", "{deny}");
    assert_eq!(deny["rule"], LOOPBACK_RULE, "{deny}");
    assert_eq!(deny["pid"], a.pid(), "{deny}");
    assert_eq!(deny["hook"], "connect4", "{deny}");

    // Stopping a replica removes its rules (and a new policy generation is installed).
    drop(b);
    let removed = eventually(Duration::from_secs(10), || {
        agent
            .stderr_text()
            .contains("automatic rule removed")
            .then_some(())
    });
    assert!(removed.is_some(), "{}", agent.stderr_text());
}

#[test]
fn with_the_automatic_rules_off_gossip_to_the_peer_is_denied() {
    if !runnable() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let ns = netns().unwrap();
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "policy.yaml",
            "mode: enforce\ndefault: allow\nblock:\n  - preset: private\n\
             alertmanager:\n  allow_own_dns: false\n  allow_cluster_peers: false\n",
        )
        .unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut a = Replica::start(&ns, &cg, &dir, "127.0.0.2", &peer("127.0.0.3")).unwrap();
    let mut b = Replica::start(&ns, &cg, &dir, "127.0.0.3", &peer("127.0.0.2")).unwrap();
    a.wait_exec().unwrap();
    b.wait_exec().unwrap();
    let mut seen = Vec::new();
    let deny = wait_deny(&mut agent, &mut seen, Duration::from_secs(30), |e| {
        e["dst_port"] == 9094 && (e["dst_ip"] == "127.0.0.3" || e["dst_ip"] == "127.0.0.2")
    })
    .unwrap_or_else(|| {
        panic!(
            "no deny line for gossip on 9094: {seen:#?}\nA:\n{}",
            a.log_text()
        )
    });
    assert_eq!(deny["event"], "connect_denied", "{deny}");
    assert_eq!(deny["rule"], LOOPBACK_RULE, "{deny}");
    let from_a = deny["pid"] == a.pid() && deny["dst_ip"] == "127.0.0.3";
    let from_b = deny["pid"] == b.pid() && deny["dst_ip"] == "127.0.0.2";
    assert!(from_a || from_b, "{deny}");
    let log = agent.stderr_text();
    assert!(!log.contains("automatic rule"), "{log}");
    assert!(log.contains("\"auto_rules\":0"), "{log}");
}

/// Scope mode (`--scope`, a `process:` target): the agent finds the Alertmanager among the
/// target processes below the scope and allows its peer; the kernel then lets the join
/// through (refused by the empty address, not denied).
#[test]
fn in_scope_mode_a_target_alertmanager_gets_its_rules() {
    if !runnable() {
        return;
    }
    let scope = TestCgroup::new().unwrap();
    let workload = scope.child("workload").unwrap();
    let ns = netns().unwrap();
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "policy.yaml",
            "default: allow\nblock:\n  - preset: private\n\
             targets:\n  - process: [prometheus-alertmanager]\n",
        )
        .unwrap();
    let agent = Agent::start_args(Some(&policy), &["--scope", &scope.path_str()]).unwrap();
    // Nobody listens on 127.0.0.3: the join is refused once the rule is in place.
    let mut a = Replica::start(&ns, &workload, &dir, "127.0.0.2", &peer("127.0.0.3")).unwrap();
    a.wait_exec().unwrap();
    let expected = [
        format!(
            "allow auto:cluster.peer 127.0.0.3/32 ports 9094 protocols tcp,udp (pid {})",
            a.pid()
        ),
        format!(
            "allow auto:resolv.conf {DNS_ADDR}/32 ports 53 protocols tcp,udp (pid {})",
            a.pid()
        ),
    ];
    wait_for_auto_rules(&agent, &expected);
    let refused = eventually(Duration::from_secs(20), || {
        a.log_text()
            .contains("127.0.0.3:9094: connect: connection refused")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the join was never let through:\n{}\nagent:\n{}",
        a.log_text(),
        agent.stderr_text()
    );
}
