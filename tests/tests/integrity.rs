//! The integrity watchdog against the real Alertmanager 0.25 and amtool from Debian (issue 15),
//! tried the way an attacker who reaches the API (or the configuration file) would.
//!
//! Alertmanager runs in a network namespace of the test's own (only `lo` up, no route out), in
//! a child cgroup the agent is attached to (`--cgroup`, direct mode). The agent reads its API
//! from inside that namespace every second and POSTs each finding to a sink on the host's
//! loopback (out of band: not through Alertmanager). In one run, in order:
//!
//! 1. a harmless silence (`alertname="DiskFull"`, 1 h) → no finding;
//! 2. `amtool silence add 'alertname=~".+"' --duration=48h` → `silence_matches_everything`
//!    (and `silence_too_long`), and the POST arrives at the sink, whose URL secret the agent
//!    never logs;
//! 3. a narrow silence edited through the API into `alertname=~".+"` → `silence_broadened`,
//!    linking the expired id to its successor;
//! 4. the harmless silence's end moved later → `silence_extended`;
//! 5. a silence of `severity="critical"` → `silence_covers_protected`;
//! 6. alertmanager.yml rewritten with a receiver at 169.254.169.254 and `POST /-/reload` →
//!    `config_changed` and `receiver_denied` naming that receiver;
//! 7. the API stopped (the process frozen with SIGSTOP) → `api_unreachable`.
//!
//! Each finding must arrive within [`WITHIN`] of the change (one 1 s interval, plus the read
//! itself and the line's way through a pipe).
use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use integration_tests::alertmanager::{
    AM_ADDR, Findings, Watched, agent_metric, am_api as api, amtool_silence, start_alertmanager,
};
use integration_tests::{
    Agent, HttpSink, NetNs, TempDir, TestCgroup, installed, privileged, wait_for,
};
use serde_json::Value;
/// In the notify URL's query: must never appear in the agent's logs.
const SECRET: &str = "s3cr3t-token";

const CONFIG: &str = "route:\n  receiver: team-webhook\n  group_wait: 1s\nreceivers:\n  - name: team-webhook\n    webhook_configs:\n      - url: http://127.0.0.1:5001/alerts\n";
const TAMPERED: &str = "route:\n  receiver: team-webhook\n  group_wait: 1s\n  routes:\n    - receiver: collector\n      continue: true\nreceivers:\n  - name: team-webhook\n    webhook_configs:\n      - url: http://127.0.0.1:5001/alerts\n  - name: collector\n    webhook_configs:\n      - url: http://169.254.169.254/latest/meta-data/iam/security-credentials/\n";

fn policy(notify_port: u16) -> String {
    format!(
        "mode: enforce\ndefault: allow\nblock:\n  - preset: private\n  - preset: cloud-metadata\n\
         allow:\n  - cidr: 127.0.0.1/32\n    ports: [5001]\n    protocols: [tcp]\n\
         integrity:\n  interval: 1s\n  max_silence_duration: 24h\n  unreachable_after: 3\n\
         \x20 notify:\n    - url: http://127.0.0.1:{notify_port}/hook?token={SECRET}\n"
    )
}

#[test]
fn the_silence_attack_and_a_tampered_configuration_are_caught_and_sent_out_of_band() {
    let setup = "scripts/setup.sh installs Debian's prometheus-alertmanager";
    if !privileged()
        || !installed("/usr/bin/prometheus-alertmanager", setup)
        || !installed("/usr/bin/amtool", setup)
    {
        return;
    }
    let Watched {
        ns,
        cg,
        tmp: _tmp,
        sink,
        mut agent,
        am,
        metrics: metrics_addr,
        config,
    } = Watched::start("enforcer-integ", policy, CONFIG);
    let mut findings = Findings {
        agent: &mut agent,
        seen: Vec::new(),
    };

    // 1. A harmless silence: nothing, for three intervals.
    let harmless = amtool_silence(&ns, "alertname=\"DiskFull\"", "1h");
    std::thread::sleep(Duration::from_secs(3));
    findings.collect();
    assert!(
        findings.seen.is_empty(),
        "harmless silence raised {:#?}",
        findings.seen
    );

    // 2. The silence attack.
    let t = Instant::now();
    let broad = amtool_silence(&ns, "alertname=~\".+\"", "48h");
    let f = findings.expect("silence_matches_everything", t, |f| {
        f["silence_id"] == broad
    });
    assert_eq!(f["matchers"], "{alertname=~\".+\"}", "{f}");
    assert_eq!(f["created_by"], "mallory", "{f}");
    assert_eq!(f["comment"], "integrity test", "{f}");
    assert_eq!(f["pid"], am.pid(), "{f}");
    assert_eq!(f["target"], format!("cgroup:{}", cg.path.display()), "{f}");
    assert_eq!(f["api"], format!("http://{AM_ADDR}/"), "{f}");
    findings.expect("silence_too_long", t, |f| f["silence_id"] == broad);
    let post = wait_for(Duration::from_secs(5), "the out-of-band POST", || {
        sink.received()
            .into_iter()
            .find(|r| r.body.contains("silence_matches_everything") && r.body.contains(&broad))
    });
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, format!("/hook?token={SECRET}"));
    let body: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(body["event"], "integrity");
    assert_eq!(body["finding"], "silence_matches_everything");
    eprintln!("out-of-band POST after {:?}", t.elapsed());
    let (status, _) = api(&ns, "DELETE", &format!("/api/v2/silence/{broad}"), "");
    assert_eq!(status, 200);

    // 3. A narrow silence edited into a broad one: Alertmanager expires the old id and makes
    // a new one; the count of active silences does not move.
    let narrow = amtool_silence(&ns, "alertname=\"Narrow\"", "1h");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, json) = api(&ns, "GET", &format!("/api/v2/silence/{narrow}"), "");
    let mut edit: Value = serde_json::from_str(&json).unwrap();
    edit["matchers"] =
        serde_json::json!([{"name": "alertname", "value": ".+", "isRegex": true, "isEqual": true}]);
    let t = Instant::now();
    let (status, answer) = api(&ns, "POST", "/api/v2/silences", &edit.to_string());
    assert_eq!(status, 200, "{answer}");
    let successor: Value = serde_json::from_str(&answer).unwrap();
    let successor = successor["silenceID"].as_str().unwrap().to_owned();
    assert_ne!(successor, narrow, "Alertmanager replaced the silence");
    let f = findings.expect("silence_broadened", t, |f| f["silence_id"] == successor);
    assert_eq!(f["previous_id"], narrow, "{f}");
    assert_eq!(f["previous_matchers"], "{alertname=\"Narrow\"}", "{f}");
    api(&ns, "DELETE", &format!("/api/v2/silence/{successor}"), "");

    // 4. The harmless silence extended in place (same id, later end).
    let (_, json) = api(&ns, "GET", &format!("/api/v2/silence/{harmless}"), "");
    let mut edit: Value = serde_json::from_str(&json).unwrap();
    edit["endsAt"] = Value::String("2099-01-01T00:00:00.000Z".into());
    let t = Instant::now();
    let (status, answer) = api(&ns, "POST", "/api/v2/silences", &edit.to_string());
    assert_eq!(status, 200, "{answer}");
    let f = findings.expect("silence_extended", t, |f| f["silence_id"] == harmless);
    assert_eq!(f["ends_at"], "2099-01-01T00:00:00.000Z", "{f}");

    // 5. A protected alert silenced.
    let t = Instant::now();
    let critical = amtool_silence(&ns, "severity=\"critical\"", "1h");
    let f = findings.expect("silence_covers_protected", t, |f| {
        f["silence_id"] == critical
    });
    assert_eq!(f["protected"][0], "severity=\"critical\"", "{f}");

    // 6. The configuration rewritten behind the review gate and reloaded.
    std::fs::write(&config, TAMPERED).unwrap();
    let t = Instant::now();
    let (status, answer) = api(&ns, "POST", "/-/reload", "");
    assert_eq!(status, 200, "{answer}");
    let f = findings.expect("config_changed", t, |_| true);
    assert_eq!(
        f["receivers_added"],
        serde_json::json!(["collector"]),
        "{f}"
    );
    assert_eq!(
        f["routes_added"],
        serde_json::json!(["route.routes[0] (receiver collector)"]),
        "{f}"
    );
    let f = findings.expect("receiver_denied", t, |f| f["receiver"] == "collector");
    assert_eq!(f["destination"], "http://169.254.169.254:80", "{f}");
    assert_eq!(f["field"], "webhook_configs[0].url", "{f}");
    assert!(
        f["rule"].as_str().unwrap().contains("cloud-metadata"),
        "{f}"
    );
    wait_for(Duration::from_secs(5), "the receiver_denied POST", || {
        sink.received()
            .into_iter()
            .find(|r| r.body.contains("receiver_denied") && r.body.contains("collector"))
    });

    // The metrics count each finding once by kind, and the silences by breadth.
    for (series, want) in [
        (
            "enforcer_integrity_findings_total{kind=\"silence_matches_everything\"}",
            2.0,
        ),
        (
            "enforcer_integrity_findings_total{kind=\"silence_broadened\"}",
            1.0,
        ),
        (
            "enforcer_integrity_findings_total{kind=\"config_changed\"}",
            1.0,
        ),
        (
            "enforcer_integrity_active_findings{kind=\"receiver_denied\"}",
            1.0,
        ),
        (
            "enforcer_integrity_notifications_total{result=\"sent\"}",
            1.0,
        ),
    ] {
        let got = agent_metric(&metrics_addr, series);
        assert!(
            got.is_some_and(|v| v >= want),
            "{series}: {got:?}, want >= {want}"
        );
    }
    let labels = format!(
        "target=\"cgroup:{}\",pid=\"{}\"",
        cg.path.display(),
        am.pid()
    );
    let narrow = format!("enforcer_integrity_silences{{{labels},breadth=\"narrow\"}}");
    assert_eq!(
        agent_metric(&metrics_addr, &narrow),
        Some(1.0),
        "the DiskFull silence"
    );
    let read = format!("enforcer_integrity_last_successful_read_timestamp_seconds{{{labels}}}");
    assert!(
        agent_metric(&metrics_addr, &read).is_some_and(|t| t > 1.7e9),
        "{read}"
    );

    // 7. The API stops answering.
    // SAFETY: kill(2) on the PID of the Alertmanager this test started.
    unsafe { libc::kill(am.pid() as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let f = loop {
        findings.collect();
        if let Some(f) = findings
            .seen
            .iter()
            .find(|f| f["finding"] == "api_unreachable")
        {
            break f.clone();
        }
        // Three failed reads of at most 1 s each, one interval apart.
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no api_unreachable: {:?}",
            findings.kinds()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("api_unreachable after {:?}", t.elapsed());
    assert_eq!(f["failed_reads"], 3, "{f}");
    // SAFETY: as above.
    unsafe { libc::kill(am.pid() as i32, libc::SIGCONT) };

    // Each finding was raised once (a state is not printed again while it holds); no URL
    // secret in the agent's logs.
    let mut keys: Vec<String> = findings
        .seen
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}",
                f["finding"], f["silence_id"], f["receiver"], f["hash"]
            )
        })
        .collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(
        keys.len(),
        before,
        "a finding was raised twice: {:#?}",
        findings.seen
    );
    let stderr = findings.agent.stderr_text();
    assert!(
        !stderr.contains(SECRET),
        "the notify URL's secret was logged"
    );
    drop(findings);
    agent.stop();
}

/// Scope mode (policy `targets:`, programs at a scope cgroup): the Alertmanager targets are
/// watched the same way, and named by their target.
#[test]
fn scope_mode_watches_the_alertmanager_targets_too() {
    let setup = "scripts/setup.sh installs Debian's prometheus-alertmanager";
    if !privileged()
        || !installed("/usr/bin/prometheus-alertmanager", setup)
        || !installed("/usr/bin/amtool", setup)
    {
        return;
    }
    let ns = NetNs::new("enforcer-integ-scope").unwrap();
    let scope = TestCgroup::new().unwrap();
    let workload = scope.child("workload").unwrap();
    let tmp = TempDir::new().unwrap();
    let sink_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let notify_port = sink_listener.local_addr().unwrap().port();
    let sink = HttpSink::start(sink_listener).unwrap();
    let text = format!(
        "{}targets:\n  - process: [prometheus-alertmanager]\n",
        policy(notify_port)
    );
    let policy_path = tmp.write("policy.yaml", &text).unwrap();
    let config = tmp.write("alertmanager.yml", CONFIG).unwrap();
    let mut agent = Agent::start_args(Some(&policy_path), &["--scope", &scope.path_str()]).unwrap();
    let am = start_alertmanager(&ns, &workload, &tmp, &config);
    agent.wait_for_stderr("integrity watchdog: watching");
    let mut findings = Findings {
        agent: &mut agent,
        seen: Vec::new(),
    };
    let t = Instant::now();
    let broad = amtool_silence(&ns, "alertname=~\".+\"", "2h");
    let f = findings.expect("silence_matches_everything", t, |f| {
        f["silence_id"] == broad
    });
    assert_eq!(f["target"], "process:prometheus-alertmanager", "{f}");
    assert_eq!(f["pid"], am.pid(), "{f}");
    wait_for(Duration::from_secs(5), "the out-of-band POST", || {
        sink.received()
            .into_iter()
            .find(|r| r.body.contains("silence_matches_everything") && r.body.contains(&broad))
    });
}
