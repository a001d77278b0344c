//! The API guard never locks out the agent's own integrity watchdog (issue 29): with an
//! `api:` allow list that excludes loopback (only 127.0.0.66 may connect), the watchdog still
//! reads Alertmanager's API from 127.0.0.1 inside its network namespace — let in by the
//! agent's identity (its sockets are marked in the kernel before they connect), not by its
//! address — and names a broad silence; a client of the test from 127.0.0.1, whose socket the
//! agent did not mark, gets no answer. Direct mode and scope mode.
mod api_guard_support;

use std::{net::SocketAddr, time::Duration};

use api_guard_support::{connect_from, metric, metrics_address, request};
use integration_tests::{
    Agent, ChildGuard, NetNs, TempDir, TestCgroup, eventually, installed, privileged, wait_for,
};

const BROAD: &str = r#"{"matchers":[{"name":"alertname","value":".+","isRegex":true}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"attacker","comment":"quiet"}"#;

fn runnable() -> bool {
    privileged()
        && installed(
            "/usr/bin/prometheus-alertmanager",
            "scripts/setup.sh installs Debian's prometheus-alertmanager",
        )
}

fn am() -> SocketAddr {
    "127.0.0.1:9093".parse().unwrap()
}

fn watchdog_names_a_broad_silence_under_a_strict_allow_list(scope: bool) {
    let ns = NetNs::new("enforcer-api-wd").unwrap();
    let cg = TestCgroup::new().unwrap();
    let am_cg = scope.then(|| cg.child("am").unwrap());
    let tmp = TempDir::new().unwrap();
    let targets = if scope {
        "targets:\n  - process: [prometheus-alertmanager]\n"
    } else {
        ""
    };
    let policy = tmp
        .write(
            "policy.yaml",
            &format!(
                "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n\
                 integrity:\n  interval: 1s\n\
                 api:\n  allow:\n    - cidr: 127.0.0.66/32\n{targets}"
            ),
        )
        .unwrap();
    let metrics = metrics_address();
    let mut agent = Agent::start_args(
        Some(&policy),
        &[
            if scope { "--scope" } else { "--cgroup" },
            &cg.path_str(),
            "--metrics-address",
            &metrics,
        ],
    )
    .unwrap();
    let config = tmp
        .write(
            "am.yml",
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
    let mut cmd = ns.command_in_cgroup(am_cg.as_ref().unwrap_or(&cg), "prometheus-alertmanager");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            tmp.path.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:9093")
        .arg("--cluster.listen-address=");
    let mut am_child = ChildGuard::spawn_logged(
        "prometheus-alertmanager",
        &mut cmd,
        &tmp.path.join("am.log"),
    )
    .unwrap();
    let from_allowed =
        || ns.run(|| connect_from("127.0.0.66".parse().unwrap(), am(), Duration::from_secs(2)));
    wait_for(Duration::from_secs(30), "Alertmanager's /-/ready", || {
        am_child.assert_alive();
        let s = from_allowed().ok()?;
        (request(s, "GET", "/-/ready", "") == 200).then_some(())
    });
    // The allow list excludes loopback: a client of this test from 127.0.0.1 gets no answer
    // (in scope mode, once the agent has found Alertmanager among its targets).
    wait_for(Duration::from_secs(10), "127.0.0.1 refused", || {
        let r = ns.run(|| connect_from("127.0.0.1".parse().unwrap(), am(), Duration::from_secs(1)));
        r.is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            .then_some(())
    });
    agent.wait_for_stderr("integrity watchdog: watching");

    let s = from_allowed().expect("127.0.0.66 is allowed");
    assert_eq!(request(s, "POST", "/api/v2/silences", BROAD), 200);
    let mut seen = Vec::new();
    let finding = eventually(Duration::from_secs(15), Duration::from_millis(100), || {
        seen.extend(
            agent
                .take_events(0, Duration::from_millis(10))
                .into_iter()
                .filter(|v| v["event"] == "integrity"),
        );
        seen.iter()
            .find(|f| f["finding"] == "silence_matches_everything")
            .cloned()
    });
    assert!(
        finding.is_some(),
        "the watchdog never named the broad silence: {seen:#?}\nagent:\n{}",
        agent.stderr_text()
    );
    assert!(
        !seen.iter().any(|f| f["finding"] == "api_unreachable"),
        "the guard locked the watchdog out: {seen:#?}"
    );
    assert!(
        metric(&metrics, "enforcer_api_watchdog_connections_total") > 0,
        "the watchdog's connections were let in by its identity"
    );
    am_child.assert_alive();
}

#[test]
fn direct_mode_the_watchdog_reads_through_a_strict_allow_list() {
    if runnable() {
        watchdog_names_a_broad_silence_under_a_strict_allow_list(false);
    }
}

#[test]
fn scope_mode_the_watchdog_reads_through_a_strict_allow_list() {
    if runnable() {
        watchdog_names_a_broad_silence_under_a_strict_allow_list(true);
    }
}
