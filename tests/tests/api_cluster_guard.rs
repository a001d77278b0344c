//! The API guard's cluster surface (issue 29) with real Alertmanagers (Debian's
//! `prometheus-alertmanager` 0.25), all in one network namespace of the test's own with only
//! `lo` up (so it runs in the VM guests too, which have no veth), each on its own loopback
//! address:
//!
//! - A (the victim, enforced) gossips on 0.0.0.0:9094, advertised as 127.0.0.2, and names B
//!   (127.0.0.4:9095) as its peer;
//! - B (a replica, enforced) gossips on 127.0.0.4:9095 and names A (127.0.0.2:9094);
//! - C (the attacker, not enforced) gossips on 127.0.0.3:9096, names A as 127.0.0.5:9094
//!   (A listens on every address) and creates `alertname=~".+"` on its own API.
//!
//! Memberlist dials TCP without binding a source address, and on loopback the kernel would
//! pick 127.0.0.1 for every dialer; local routes with a preferred source give each dialer its
//! own address, as separate hosts would have: whoever dials 127.0.0.2 comes from B's
//! 127.0.0.4, whoever dials 127.0.0.5 from C's 127.0.0.3, whoever dials 127.0.0.4 from A's
//! 127.0.0.2. (Datagrams leave from each member's bound gossip socket anyway.)
//!
//! Asserted: the agent guards A's 9094 and B's 9095 by default (no `cluster_ports` in the
//! policy); a silence made on B shows up on A and one made on A on B (the replicas converge);
//! C's silence never reaches A; C's TCP SYNs and UDP datagrams to 9094 are `api_peer_refused`
//! lines (surface `cluster`) and counted in `enforcer_api_cluster_packets_total`; B's session
//! with A is a `cluster_join` line naming B and port 9094; once `cluster_allow` lets C in, its
//! silence does reach A (the control).
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
/// A's advertised address, as B dials it.
const A: &str = "127.0.0.2";
/// A again, as C dials it.
const A_C: &str = "127.0.0.5";
const B: &str = "127.0.0.4";
const C: &str = "127.0.0.3";

fn runnable() -> bool {
    const INSTALL: &str = "apt-get install prometheus-alertmanager";
    privileged() && installed(ALERTMANAGER, INSTALL) && installed(AMTOOL, INSTALL)
}

/// The local routes that give each dialer its own source address (see the module's
/// documentation).
fn sources(ns: &NetNs) {
    for (dst, src) in [(A, B), (A_C, C), (B, A)] {
        ns.ip(&[
            "route",
            "add",
            "local",
            &format!("{dst}/32"),
            "dev",
            "lo",
            "src",
            src,
            "table",
            "local",
        ])
        .unwrap();
    }
}

/// One Alertmanager, killed by its PID on drop.
struct Am {
    /// Killed on drop.
    _child: ChildGuard,
    log: PathBuf,
}

impl Am {
    /// Web on `web`:9093; gossip on `listen` (advertised as `advertise`); `peers` are
    /// `address:port`.
    #[expect(clippy::too_many_arguments, reason = "one Alertmanager's command line")]
    fn start(
        ns: &NetNs,
        cg: Option<&TestCgroup>,
        dir: &TempDir,
        name: &str,
        web: &str,
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
            .arg(format!("--web.listen-address={web}:9093"))
            .arg(format!("--cluster.listen-address={listen}"))
            .arg(format!("--cluster.advertise-address={advertise}"))
            .arg("--cluster.reconnect-interval=2s")
            .arg("--cluster.pushpull-interval=5s")
            .arg("--log.level=debug");
        for p in peers {
            cmd.arg(format!("--cluster.peer={p}"));
        }
        let child = ChildGuard::spawn_logged(format!("alertmanager {name}"), &mut cmd, &log)
            .expect("starting Alertmanager");
        Self { _child: child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `amtool <args>` against the Alertmanager whose web port is on `web`.
fn amtool(ns: &NetNs, web: &str, args: &[&str]) -> anyhow::Result<String> {
    let url = format!("--alertmanager.url=http://{web}:9093");
    let mut all = vec![AMTOOL, url.as_str()];
    all.extend_from_slice(args);
    let out = ns.output(&all)?;
    if !out.status.success() {
        bail!("amtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn silence(ns: &NetNs, web: &str, matcher: &str) -> String {
    eventually(Duration::from_secs(30), Duration::from_millis(500), || {
        amtool(
            ns,
            web,
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

fn has_silence(ns: &NetNs, web: &str, id: &str) -> bool {
    amtool(ns, web, &["silence", "query", "-q"])
        .is_ok_and(|out| out.lines().any(|l| l.trim() == id))
}

const POLICY: &str = "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n\
                      api:\n  allow:\n    - cidr: 127.0.0.0/8\n";

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
    let ns = NetNs::new("enforcer-cg").unwrap();
    sources(&ns);
    let cg = TestCgroup::new().unwrap();
    let dir = TempDir::new().unwrap();
    let metrics = metrics_address();
    let mut agent = Agent::start_args(
        Some(&policy(&dir)),
        &["--cgroup", &cg.path_str(), "--metrics-address", &metrics],
    )
    .unwrap();
    let a = Am::start(
        &ns,
        Some(&cg),
        &dir,
        "a",
        A,
        "0.0.0.0:9094",
        &format!("{A}:9094"),
        &[&format!("{B}:9095")],
    );
    let b = Am::start(
        &ns,
        Some(&cg),
        &dir,
        "b",
        B,
        &format!("{B}:9095"),
        &format!("{B}:9095"),
        &[&format!("{A}:9094")],
    );
    let c = Am::start(
        &ns,
        None,
        &dir,
        "c",
        C,
        &format!("{C}:9096"),
        &format!("{C}:9096"),
        &[&format!("{A_C}:9094")],
    );

    // The replicas converge both ways.
    let from_b = silence(&ns, B, "alertname=FromReplicaB");
    let on_a = eventually(Duration::from_secs(40), Duration::from_millis(500), || {
        has_silence(&ns, A, &from_b).then_some(())
    });
    assert!(
        on_a.is_some(),
        "B's silence never reached A\nA:\n{}\nB:\n{}\nagent:\n{}",
        a.log_text(),
        b.log_text(),
        agent.stderr_text()
    );
    let from_a = silence(&ns, A, "alertname=FromVictimA");
    let on_b = eventually(Duration::from_secs(40), Duration::from_millis(500), || {
        has_silence(&ns, B, &from_a).then_some(())
    });
    assert!(on_b.is_some(), "A's silence never reached B");

    // The attacker's silence exists on its own Alertmanager and never reaches A (C keeps
    // trying to join: --cluster.reconnect-interval=2s, push/pull every 5 s).
    let planted = silence(&ns, C, "alertname=~.+");
    assert!(has_silence(&ns, C, &planted));
    let leaked = eventually(Duration::from_secs(20), Duration::from_millis(500), || {
        has_silence(&ns, A, &planted).then_some(())
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
        has_silence(&ns, A, &planted).then_some(())
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
