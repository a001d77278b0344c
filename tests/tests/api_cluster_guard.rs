//! The API guard's cluster surface (issue 29) with real Alertmanagers (Debian's
//! `prometheus-alertmanager` 0.25), each in a network namespace of the test's own, linked by
//! veth pairs on TEST-NET addresses (no route out of them):
//!
//! - A (the victim, enforced) gossips on 0.0.0.0:9094 and names B (192.0.2.2) as its peer;
//! - B (a replica, enforced) names A (192.0.2.1);
//! - C (the attacker, not enforced, on 198.51.100.2) names A (198.51.100.1) and creates
//!   `alertname=~".+"` on its own API.
//!
//! Asserted: the agent guards A's and B's 9094 by default (no `cluster_ports` in the policy);
//! a silence made on B shows up on A and one made on A on B (the replicas converge); C's
//! silence never reaches A; C's TCP SYNs and UDP datagrams to 9094 are `api_peer_refused`
//! lines (surface `cluster`) and counted in `enforcer_api_cluster_packets_total`; B's session
//! with A is a `cluster_join` line naming B and port 9094.
mod api_guard_support;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use api_guard_support::{metric, metrics_address};

use anyhow::bail;
use integration_tests::{
    Agent, ChildGuard, NetNs, TempDir, TestCgroup, eventually, installed, privileged,
};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";
const A_B: &str = "192.0.2.1";
const B: &str = "192.0.2.2";
const A_C: &str = "198.51.100.1";
const C: &str = "198.51.100.2";

fn runnable() -> bool {
    const INSTALL: &str = "apt-get install prometheus-alertmanager";
    privileged() && installed(ALERTMANAGER, INSTALL) && installed(AMTOOL, INSTALL)
}

/// `ip -n <a> link add <a_if> type veth peer name <b_if> netns <b>`, addressed and up.
fn link(a: &NetNs, a_if: &str, a_addr: &str, b: &NetNs, b_if: &str, b_addr: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])
    .unwrap();
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname])
            .unwrap();
        ns.ip(&["link", "set", ifname, "up"]).unwrap();
    }
}

/// One Alertmanager, killed by its PID on drop.
struct Am {
    /// Killed on drop.
    _child: ChildGuard,
    log: PathBuf,
}

impl Am {
    /// Web on 127.0.0.1:9093 of `ns`; gossip on `listen` (advertised as `advertise`).
    fn start(
        ns: &NetNs,
        cg: Option<&TestCgroup>,
        dir: &TempDir,
        name: &str,
        listen: &str,
        advertise: &str,
        peers: &[&str],
    ) -> Self {
        let config = dir
            .write(
                &format!("am-{name}.yml"),
                "route:\n  receiver: none\nreceivers:\n  - name: none\n",
            )
            .unwrap();
        let data = dir.path.join(format!("data-{name}"));
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.path.join(format!("am-{name}.log"));
        let mut cmd = match cg {
            Some(cg) => ns.command_in_cgroup(cg, ALERTMANAGER),
            None => ns.command(ALERTMANAGER),
        };
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", data.display()))
            .arg("--web.listen-address=127.0.0.1:9093")
            .arg(format!("--cluster.listen-address={listen}:9094"))
            .arg(format!("--cluster.advertise-address={advertise}:9094"))
            .arg("--cluster.reconnect-interval=2s")
            .arg("--cluster.pushpull-interval=5s")
            .arg("--log.level=debug");
        for p in peers {
            cmd.arg(format!("--cluster.peer={p}:9094"));
        }
        let child = ChildGuard::spawn_logged(format!("alertmanager {name}"), &mut cmd, &log)
            .expect("starting Alertmanager");
        Self { _child: child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `amtool <args>` against the Alertmanager of `ns`.
fn amtool(ns: &NetNs, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec![AMTOOL, "--alertmanager.url=http://127.0.0.1:9093"];
    all.extend_from_slice(args);
    let out = ns.output(&all)?;
    if !out.status.success() {
        bail!("amtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn silence(ns: &NetNs, matcher: &str) -> String {
    eventually(Duration::from_secs(30), Duration::from_millis(500), || {
        amtool(
            ns,
            &[
                "silence",
                "add",
                matcher,
                "--comment=cluster guard test",
                "--author=test",
                "--duration=1h",
            ],
        )
        .ok()
    })
    .expect("amtool silence add")
    .trim()
    .to_owned()
}

fn has_silence(ns: &NetNs, id: &str) -> bool {
    amtool(ns, &["silence", "query", "-q"]).is_ok_and(|out| out.lines().any(|l| l.trim() == id))
}

const POLICY: &str = "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n\
                      api:\n  allow:\n    - cidr: 127.0.0.1/32\n";

fn policy(dir: &TempDir) -> PathBuf {
    dir.write("policy.yaml", POLICY).unwrap()
}

fn target_of(line: &serde_json::Value, cg: &Path) -> bool {
    line["target"]
        .as_str()
        .is_some_and(|t| t.contains(&*cg.to_string_lossy()))
}

#[test]
fn a_stranger_never_gossips_into_the_cluster_and_replicas_still_converge() {
    if !runnable() {
        return;
    }
    let (a_ns, b_ns, c_ns) = (
        NetNs::new("enforcer-cga").unwrap(),
        NetNs::new("enforcer-cgb").unwrap(),
        NetNs::new("enforcer-cgc").unwrap(),
    );
    link(&a_ns, "ab", A_B, &b_ns, "ba", B);
    link(&a_ns, "ac", A_C, &c_ns, "ca", C);
    let cg = TestCgroup::new().unwrap();
    let dir = TempDir::new().unwrap();
    let metrics = metrics_address();
    let mut agent = Agent::start_args(
        Some(&policy(&dir)),
        &["--cgroup", &cg.path_str(), "--metrics-address", &metrics],
    )
    .unwrap();
    let a = Am::start(&a_ns, Some(&cg), &dir, "a", "0.0.0.0", A_B, &[B]);
    let b = Am::start(&b_ns, Some(&cg), &dir, "b", B, B, &[A_B]);
    let c = Am::start(&c_ns, None, &dir, "c", C, C, &[A_C]);

    // The replicas converge both ways.
    let from_b = silence(&b_ns, "alertname=FromReplicaB");
    let on_a = eventually(Duration::from_secs(40), Duration::from_millis(500), || {
        has_silence(&a_ns, &from_b).then_some(())
    });
    assert!(
        on_a.is_some(),
        "B's silence never reached A\nA:\n{}\nB:\n{}\nagent:\n{}",
        a.log_text(),
        b.log_text(),
        agent.stderr_text()
    );
    let from_a = silence(&a_ns, "alertname=FromVictimA");
    let on_b = eventually(Duration::from_secs(40), Duration::from_millis(500), || {
        has_silence(&b_ns, &from_a).then_some(())
    });
    assert!(on_b.is_some(), "A's silence never reached B");

    // The attacker's silence exists on its own Alertmanager and never reaches A (C keeps
    // trying to join: --cluster.reconnect-interval=2s, push/pull every 5 s).
    let planted = silence(&c_ns, "alertname=~.+");
    assert!(has_silence(&c_ns, &planted));
    let leaked = eventually(Duration::from_secs(20), Duration::from_millis(500), || {
        has_silence(&a_ns, &planted).then_some(())
    });
    assert!(
        leaked.is_none(),
        "the attacker's silence reached A\nA:\n{}\nC:\n{}",
        a.log_text(),
        c.log_text()
    );
    let lines = agent.events_within(Duration::from_secs(2));
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "api_peer_refused" && l["peer_ip"] == C)
        .collect();
    assert!(!refused.is_empty(), "no refusal of {C}: {lines:#?}");
    for l in &refused {
        assert_eq!(l["surface"], "cluster", "{l}");
        assert_eq!(l["port"], 9094, "{l}");
        assert!(target_of(l, &cg.path), "{l}");
    }
    assert!(
        refused.iter().any(|l| l["protocol"] == "udp")
            || refused.iter().any(|l| l["protocol"] == "tcp"),
        "{refused:?}"
    );
    let udp = metric(
        &metrics,
        "enforcer_api_cluster_packets_total{protocol=\"udp\",verdict=\"refused\"}",
    );
    let tcp = metric(
        &metrics,
        "enforcer_api_cluster_packets_total{protocol=\"tcp\",verdict=\"refused\"}",
    );
    assert!(udp + tcp > 0, "refusals counted: udp {udp} tcp {tcp}");
    assert!(
        tcp > 0,
        "C's push/pull (TCP) was refused and counted: {tcp}\nC:\n{}",
        c.log_text()
    );
    assert!(
        metric(
            &metrics,
            "enforcer_api_cluster_packets_total{protocol=\"udp\",verdict=\"accepted\"}"
        ) > 0,
        "the replicas' datagrams are counted as accepted"
    );
    // Nothing of C on the web port either: it never reached A's API.
    assert!(
        !lines
            .iter()
            .any(|l| l["event"] == "api_request" && l["peer_ip"] == C),
        "{lines:#?}"
    );

    // B's sessions with A (and A's with B) are attributed.
    let joins: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "cluster_join")
        .collect();
    let b_at_a = joins
        .iter()
        .find(|l| l["peer_ip"] == B && l["port"] == 9094 && l["protocol"] == "tcp");
    assert!(b_at_a.is_some(), "no TCP join line for {B}: {joins:#?}");
    let b_at_a = b_at_a.unwrap();
    assert!(target_of(b_at_a, &cg.path), "{b_at_a}");
    assert!(b_at_a["pid"].as_u64().is_some(), "{b_at_a}");
    assert!(
        !joins.iter().any(|l| l["peer_ip"] == C),
        "a refused peer never joins: {joins:#?}"
    );

    // Control: the same attacker let in by `cluster_allow` does gossip its silence into A —
    // what the guard stopped above.
    std::fs::write(
        dir.path.join("policy.yaml"),
        format!("{POLICY}  cluster_allow:\n    - cidr: {C}/32\n"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_for_stderr("\"message\":\"policy reloaded\"");
    let leaked = eventually(Duration::from_secs(40), Duration::from_millis(500), || {
        has_silence(&a_ns, &planted).then_some(())
    });
    assert!(
        leaked.is_some(),
        "with cluster_allow the attacker's silence should reach A\nA:\n{}\nC:\n{}",
        a.log_text(),
        c.log_text()
    );
    let joined = agent.events_within(Duration::from_secs(1));
    assert!(
        joined
            .iter()
            .any(|l| l["event"] == "cluster_join" && l["peer_ip"] == C),
        "the allowed attacker's join is a line: {joined:#?}"
    );
    drop((a, b, c));
}
