//! The main job end to end (issue 4, part 1; `scripts/demo` runs the same scenario), with the
//! real Alertmanager 0.25 and Prometheus 2.42 from Debian's packages (scripts/setup.sh installs
//! them).
//!
//! In a network namespace created by the test (only `lo` up, no route out): Prometheus
//! evaluates `DemoAlwaysFiring` (`vector(1)`) every second and alerts Alertmanager on
//! 127.0.0.1:9093; Alertmanager (`--cluster.listen-address=`, in a child cgroup the enforcer is
//! attached to, joined before exec) notifies two webhook receivers: `team-webhook`, a sink on
//! 127.0.0.1:5001 served by this test and allowed by the policy, and `injected`,
//! `http://169.254.169.254/latest/meta-data/iam/security-credentials/`. Configurations:
//! tests/fixtures/e2e/. The test asserts: the sink received the alert; Alertmanager logged the
//! injected receiver's failure as `connect: operation not permitted`; every deny line of the
//! enforcer is that call, decided by the cloud-metadata rule; Alertmanager's
//! `alertmanager_notification_requests_failed_total{integration="webhook"}` rose.
//!
//! Guards remove the namespace, the cgroup and the temporary directory, and end every process
//! the test started (by PID), also when an assertion fails.
use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use integration_tests::{
    Agent, ChildGuard, ENETUNREACH, HttpSink, NetNs, TempDir, TestCgroup, privileged, wait_for,
};

const METADATA_RULE: &str = "block preset:cloud-metadata 169.254.169.254/32";
const INJECTED_URL: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
/// As in tests/fixtures/e2e/alertmanager.yml and policy.yaml.
const SINK_ADDR: &str = "127.0.0.1:5001";
/// As in tests/fixtures/e2e/prometheus.yml.
const AM_ADDR: &str = "127.0.0.1:9093";
const PROM_ADDR: &str = "127.0.0.1:9090";
const FAILED_REQUESTS: &str =
    "alertmanager_notification_requests_failed_total{integration=\"webhook\"}";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/e2e")
        .join(name)
}

/// The value of one series on `addr`'s /metrics, fetched from inside `ns`.
fn metric(ns: &NetNs, addr: &str, series: &str) -> Option<f64> {
    let (status, body) = ns.http_get(addr, "/metrics").ok()?;
    assert_eq!(status, 200, "GET http://{addr}/metrics");
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Starts one of the Debian packages' daemons, logging to `log`.
fn daemon(name: &str, cmd: &mut std::process::Command, log: &Path) -> ChildGuard {
    ChildGuard::spawn_logged(name, cmd, log).unwrap_or_else(|e| {
        panic!("starting {name} ({e}); scripts/setup.sh installs Debian's package")
    })
}

/// Prints the logs of the processes the test started when the test fails.
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for path in &self.0 {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {} (last lines)", path.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[test]
fn alertmanager_notifies_the_sink_and_the_metadata_receiver_is_denied() {
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let ns = NetNs::new("enforcer-e2e").unwrap();
    let cg = TestCgroup::new().unwrap();
    let tmp = TempDir::new().unwrap();
    let am_log = tmp.path.join("alertmanager.log");
    let prom_log = tmp.path.join("prometheus.log");
    let _logs = LogsOnFailure(vec![am_log.clone(), prom_log.clone()]);

    // The namespace is sealed: outside the enforced cgroup, the metadata service is unreachable.
    let unenforced = ns.run(|| {
        TcpStream::connect_timeout(
            &"169.254.169.254:80".parse().unwrap(),
            Duration::from_secs(2),
        )
    });
    assert_eq!(
        unenforced.err().and_then(|e| e.raw_os_error()),
        Some(ENETUNREACH),
        "169.254.169.254 must be unreachable in the test namespace"
    );

    let sink = HttpSink::start(
        ns.run(|| TcpListener::bind(SINK_ADDR))
            .unwrap_or_else(|e| panic!("webhook sink on {SINK_ADDR} in the namespace: {e}")),
    )
    .unwrap();
    let mut agent = Agent::start(Some(&fixture("policy.yaml")), &cg).unwrap();

    // Alertmanager joins the enforced cgroup before exec (the shell writes its own PID, then
    // execs `ip netns exec`, which execs Alertmanager: one PID throughout).
    let am_storage = tmp.path.join("alertmanager");
    let mut am_cmd = ns.command_in_cgroup(&cg, "prometheus-alertmanager");
    am_cmd
        .arg(format!(
            "--config.file={}",
            fixture("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", am_storage.display()))
        .arg(format!("--web.listen-address={AM_ADDR}"))
        .arg(format!("--web.external-url=http://{AM_ADDR}/"))
        .arg("--cluster.listen-address=");
    let mut am = daemon("prometheus-alertmanager", &mut am_cmd, &am_log);
    wait_for(Duration::from_secs(30), "Alertmanager's /-/ready", || {
        am.assert_alive();
        matches!(ns.http_get(AM_ADDR, "/-/ready"), Ok((200, _))).then_some(())
    });
    let am_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", am.pid())).unwrap();
    let cg_name = cg.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        am_cgroup
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{cg_name}"))),
        "Alertmanager is not in the enforced cgroup: {am_cgroup}"
    );
    let failed_before = metric(&ns, AM_ADDR, FAILED_REQUESTS)
        .unwrap_or_else(|| panic!("Alertmanager's /metrics has no {FAILED_REQUESTS}"));

    let prom_storage = tmp.path.join("prometheus");
    let mut prom = daemon(
        "prometheus",
        ns.command("prometheus")
            .arg(format!(
                "--config.file={}",
                fixture("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", prom_storage.display()))
            .arg(format!("--web.listen-address={PROM_ADDR}"))
            .arg(format!("--web.external-url=http://{PROM_ADDR}/"))
            // The first alert is sent before Prometheus has discovered Alertmanager (~5 s);
            // resend every second instead of every minute.
            .arg("--rules.alert.resend-delay=1s"),
        &prom_log,
    );
    wait_for(Duration::from_secs(30), "Prometheus's /-/ready", || {
        prom.assert_alive();
        matches!(ns.http_get(PROM_ADDR, "/-/ready"), Ok((200, _))).then_some(())
    });

    // 1. The legitimate receiver got the alert.
    let post = wait_for(
        Duration::from_secs(60),
        "the sink to receive the alert",
        || {
            am.assert_alive();
            sink.received().into_iter().find(|r| r.method == "POST")
        },
    );
    assert_eq!(post.path, "/alerts");
    let payload: serde_json::Value = serde_json::from_str(&post.body)
        .unwrap_or_else(|e| panic!("webhook payload is not JSON ({e}): {}", post.body));
    assert_eq!(payload["receiver"], "team-webhook", "{payload}");
    assert_eq!(payload["status"], "firing", "{payload}");
    assert_eq!(
        payload["alerts"][0]["labels"]["alertname"], "DemoAlwaysFiring",
        "{payload}"
    );

    // 2. The injected receiver's POST failed with EPERM, as Alertmanager reports it (after
    // retrying for ~10 s).
    let failure = wait_for(
        Duration::from_secs(60),
        "Alertmanager to log the injected receiver's failure",
        || {
            am.assert_alive();
            std::fs::read_to_string(&am_log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("msg=\"Notify for alerts failed\""))
                .map(str::to_owned)
        },
    );
    for expected in [
        "level=error",
        "injected/webhook[0]",
        INJECTED_URL,
        "dial tcp 169.254.169.254:80: connect: operation not permitted",
    ] {
        assert!(
            failure.contains(expected),
            "Alertmanager's failure line lacks {expected:?}: {failure}"
        );
    }

    // 3. The enforcer's JSON lines: every attempt denied, each the metadata service, decided by
    // the cloud-metadata rule; nothing else Alertmanager did was denied. Identical denials inside
    // the aggregation window share a line whose `count` says how many calls it stands for, and
    // that line is written when the window closes: read until the counts cover the attempts.
    let attempts = failure
        .split(" after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no attempt count in Alertmanager's failure line: {failure}"));
    let denied_calls = |lines: &[serde_json::Value]| -> u64 {
        lines
            .iter()
            .filter(|e| e["event"] == "connect_denied")
            .map(|e| {
                e["count"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no count: {e}"))
            })
            .sum()
    };
    let mut events = agent.take_events(1, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while denied_calls(&events) < attempts && Instant::now() < deadline {
        events.extend(agent.events_within(Duration::from_millis(500)));
    }
    // The integrity watchdog (on by default) read the running configuration through the API
    // and named the injected receiver, out of band of the kernel's denials.
    let (integrity, events): (Vec<_>, Vec<_>) =
        events.into_iter().partition(|e| e["event"] == "integrity");
    assert!(
        integrity.iter().any(|e| e["finding"] == "receiver_denied"
            && e["receiver"] == "injected"
            && e["destination"] == "http://169.254.169.254:80"),
        "no receiver_denied finding for the injected receiver: {integrity:?}"
    );
    assert!(
        !events.is_empty(),
        "no deny line; agent stderr:\n{}",
        agent.stderr_text()
    );
    for e in &events {
        assert_eq!(e["event"], "connect_denied", "{e}");
        assert_eq!(e["mode"], "enforce", "{e}");
        assert_eq!(e["pid"], am.pid(), "{e}");
        assert_eq!(e["comm"], "prometheus-aler", "{e}");
        assert_eq!(e["hook"], "connect4", "{e}");
        assert_eq!(e["protocol"], "tcp", "{e}");
        assert_eq!(e["dst_ip"], "169.254.169.254", "{e}");
        assert_eq!(e["dst_port"], 80, "{e}");
        assert_eq!(e["rule"], METADATA_RULE, "{e}");
    }
    let denied = denied_calls(&events);
    assert!(
        denied >= attempts,
        "{attempts} attempts but the deny lines count {denied} calls ({} lines)",
        events.len()
    );

    // 4. Alertmanager counted the failures; the delivery to the sink succeeded.
    let failed_after = metric(&ns, AM_ADDR, FAILED_REQUESTS).unwrap();
    assert!(
        failed_after > failed_before,
        "{FAILED_REQUESTS} did not rise: {failed_before} -> {failed_after}"
    );
    let notifications_failed = metric(
        &ns,
        AM_ADDR,
        "alertmanager_notifications_failed_total{integration=\"webhook\"}",
    )
    .unwrap();
    assert!(notifications_failed >= 1.0, "{notifications_failed}");
    let requests = metric(
        &ns,
        AM_ADDR,
        "alertmanager_notification_requests_total{integration=\"webhook\"}",
    )
    .unwrap();
    assert!(
        requests - failed_after >= 1.0,
        "no successful webhook request: {requests} requests, {failed_after} failed"
    );

    // Alertmanager keeps working.
    am.assert_alive();
    prom.assert_alive();
    assert!(matches!(ns.http_get(AM_ADDR, "/-/healthy"), Ok((200, _))));
    eprintln!(
        "end to end in {:?}: sink got {} POST(s), {} deny line(s), {FAILED_REQUESTS} {failed_before} -> {failed_after}",
        started.elapsed(),
        sink.received()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        events.len()
    );
}
