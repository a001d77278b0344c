//! The API guard (issue 14) with the real Alertmanager from Debian, in a network namespace and
//! cgroup of the test's own, the agent attached to that cgroup with
//! `api: allow: [127.0.0.1/32, ::1/128]` (ports: the default, Alertmanager's 9093).
//!
//! Asserted: a client bound to 127.0.0.66 gets no answer from 127.0.0.1:9093 (nor from
//! 127.0.0.2:9093: whatever local address it uses) and one `api_peer_refused` line names it;
//! `amtool silence add` from 127.0.0.1 works and gives an `api_request` line (POST
//! /api/v2/silences); a POST whose connection stays open names the calling process (pid,
//! comm, cgroup); `GET /api/v2/status` is counted, not logged; IPv6 alike (::1 answered,
//! fd00::66 refused); a scan of 10,000 connections from 10,000 addresses gives a bounded
//! number of lines and an exact count in the metrics. Audit mode answers and logs
//! `would_refuse`; scope mode guards a `process:` target.
mod api_guard_support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use api_guard_support::{Guarded, connect_from, request, start_connect};
use integration_tests::{privileged, wait_for};

const ALLOW: &str = "  allow:\n    - cidr: 127.0.0.1/32\n    - cidr: ::1/128\n";
const NO_ANSWER: Duration = Duration::from_millis(1500);
const SILENCE: &str = r#"{"matchers":[{"name":"alertname","value":"ApiGuardTest","isRegex":false}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"test","comment":"api guard test"}"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn am(addr: &str) -> SocketAddr {
    SocketAddr::new(ip(addr), api_guard_support::AM_PORT)
}

#[test]
fn unknown_peers_get_no_answer_and_every_write_is_logged_with_its_caller() {
    if !privileged() {
        return;
    }
    let mut g = Guarded::start("enforcer-api", ALLOW);

    // A peer outside the allow list: no answer, whichever local address it dials.
    for to in ["127.0.0.1", "127.0.0.2"] {
        let r =
            g.ns.run(|| connect_from(ip("127.0.0.66"), am(to), NO_ANSWER));
        assert_eq!(
            r.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut),
            "127.0.0.66 → {to}:9093 must get no answer"
        );
    }
    let refused = g.events("api_peer_refused", Duration::from_secs(3));
    assert_eq!(
        refused.len(),
        1,
        "one line per peer (rate limit): {refused:?}"
    );
    let line = &refused[0];
    assert_eq!(line["peer_ip"], "127.0.0.66", "{line}");
    assert_eq!(line["port"], 9093, "{line}");
    assert!(line["peer_port"].as_u64().is_some_and(|p| p > 0), "{line}");
    assert!(
        line["target"]
            .as_str()
            .is_some_and(|t| t.contains(&g.cg.path_str())),
        "{line}"
    );

    // amtool from 127.0.0.1 works unchanged, and its POST is logged.
    let out =
        g.ns.command("amtool")
            .args([
                "--alertmanager.url=http://127.0.0.1:9093/",
                "silence",
                "add",
                "alertname=ApiGuardAmtool",
                "--comment=api guard test",
                "--author=test",
            ])
            .output()
            .expect("amtool (scripts/setup.sh installs prometheus-alertmanager)");
    assert!(
        out.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let posts = g.events("api_request", Duration::from_secs(3));
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["method"], "POST", "{}", posts[0]);
    assert_eq!(posts[0]["path"], "/api/v2/silences", "{}", posts[0]);
    assert_eq!(posts[0]["peer_ip"], "127.0.0.1", "{}", posts[0]);
    assert_eq!(posts[0]["peer_allowed"], true, "{}", posts[0]);

    // A caller that is still connected is named: pid, comm and cgroup of this test.
    let stream =
        g.ns.run(|| connect_from(ip("127.0.0.1"), am("127.0.0.1"), NO_ANSWER))
            .expect("127.0.0.1 is allowed");
    let held = stream.try_clone().unwrap();
    assert_eq!(
        request(stream, "POST", "/api/v2/silences?dry=1", SILENCE),
        200
    );
    let lines = g.events("api_request", Duration::from_secs(3));
    drop(held);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["path"], "/api/v2/silences", "query string cut: {l}");
    assert_eq!(l["peer_pid"], std::process::id(), "{l}");
    let my_comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(l["peer_comm"], my_comm.trim_end(), "{l}");
    let my_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(
        my_cgroup.contains(l["peer_cgroup"].as_str().unwrap()),
        "{l}"
    );

    // Read-only calls are answered and counted, never logged.
    let reads_before = g.metric("enforcer_api_requests_total{kind=\"read\"}");
    let (status, _) = g.ns.http_get("127.0.0.1:9093", "/api/v2/status").unwrap();
    assert_eq!(status, 200);
    assert!(
        g.events("api_request", Duration::from_millis(500))
            .is_empty()
    );
    wait_for(Duration::from_secs(3), "the read counted", || {
        (g.metric("enforcer_api_requests_total{kind=\"read\"}") > reads_before).then_some(())
    });

    // IPv6: ::1 is answered, fd00::66 (another address of this namespace) is not.
    let s = g.ns.run(|| connect_from(ip("::1"), am("::1"), NO_ANSWER));
    assert_eq!(
        request(s.expect("::1 is allowed"), "GET", "/api/v2/status", ""),
        200
    );
    let r =
        g.ns.run(|| connect_from(ip("fd00::66"), am("::1"), NO_ANSWER));
    assert_eq!(
        r.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::TimedOut)
    );
    let refused = g.events("api_peer_refused", Duration::from_secs(3));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["peer_ip"], "fd00::66", "{}", refused[0]);

    // A scan: 10,000 connections from 10,000 addresses. Every SYN is counted; the lines are
    // bounded by the per-second limit.
    let metric = "enforcer_api_connections_total{verdict=\"refused\"}";
    let before = g.metric(metric);
    let retrans_before = g.ns.run(syn_retransmits);
    let started = Instant::now();
    g.ns.run(|| {
        for batch in 0..20u32 {
            let socks: Vec<_> = (0..500u32)
                .map(|i| {
                    let n = batch * 500 + i;
                    let from = Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
                    start_connect(IpAddr::V4(from), am("127.0.0.1")).unwrap()
                })
                .collect();
            // Closed before the first retransmission (1 s) unless the machine is slow: one SYN
            // per connection, and the retransmissions are counted below.
            std::thread::sleep(Duration::from_millis(30));
            drop(socks);
        }
    });
    let scan_secs = started.elapsed().as_secs_f64();
    wait_for(Duration::from_secs(5), "10,000 refusals counted", || {
        (g.metric(metric) - before >= 10_000).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    // A batch that took over a second on a loaded machine (a VM's guest) had some SYNs sent
    // again by the kernel: each of those is a SYN too, and counted. The namespace's own
    // counter says how many.
    let again = g.ns.run(syn_retransmits) - retrans_before;
    assert_eq!(
        g.metric(metric) - before,
        10_000 + again,
        "every SYN counted once (10,000 first SYNs, {again} retransmitted)"
    );
    let lines = g.events("api_peer_refused", Duration::from_secs(2));
    let bound = 2.0 * 20.0 * (scan_secs + 1.0);
    eprintln!(
        "scan: 10,000 refused connections in {scan_secs:.2}s, {} lines",
        lines.len()
    );
    assert!(
        !lines.is_empty() && (lines.len() as f64) <= bound,
        "{} lines for 10,000 refused peers in {scan_secs:.2}s (bound {bound})",
        lines.len()
    );
    let suppressed = g.metric("enforcer_api_refusal_reports_suppressed_total");
    assert!(suppressed >= 10_000 - lines.len() as u64, "{suppressed}");
    g.am.assert_alive();
}

#[test]
fn audit_mode_answers_the_unknown_peer_and_logs_would_refuse() {
    if !privileged() {
        return;
    }
    let mut g = Guarded::start("enforcer-api-audit", &format!("  mode: audit\n{ALLOW}"));
    let s =
        g.ns.run(|| connect_from(ip("127.0.0.66"), am("127.0.0.1"), NO_ANSWER));
    assert_eq!(
        request(s.expect("audit mode answers"), "GET", "/api/v2/status", ""),
        200
    );
    let lines = g.events("would_refuse", Duration::from_secs(3));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["peer_ip"], "127.0.0.66", "{}", lines[0]);
    assert_eq!(lines[0]["mode"], "audit", "{}", lines[0]);
    // A write from the unexpected peer is logged as such.
    let s =
        g.ns.run(|| connect_from(ip("127.0.0.66"), am("127.0.0.1"), NO_ANSWER));
    assert_eq!(
        request(s.unwrap(), "POST", "/api/v2/silences", SILENCE),
        200
    );
    let writes = g.events("api_request", Duration::from_secs(3));
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["peer_allowed"], false, "{}", writes[0]);
    let series = "enforcer_api_logged_requests_total{method=\"POST\",path_class=\"silences\",peer_allowed=\"false\"}";
    wait_for(
        Duration::from_secs(3),
        "the unexpected write counted",
        || (g.metric(series) == 1).then_some(()),
    );
    assert!(g.metric("enforcer_api_connections_total{verdict=\"would_refuse\"}") >= 2);
    assert_eq!(
        g.metric("enforcer_api_connections_total{verdict=\"refused\"}"),
        0
    );
}

/// Scope mode with a `process:` target (as the DaemonSet runs): the agent finds the Alertmanager
/// process below the scope and guards the sockets of its cgroup.
#[test]
fn in_scope_mode_a_process_target_is_guarded() {
    if !privileged() {
        return;
    }
    let mut g = Guarded::start_in("enforcer-api-scope", ALLOW, true);
    wait_for(Duration::from_secs(5), "127.0.0.66 refused", || {
        let r =
            g.ns.run(|| connect_from(ip("127.0.0.66"), am("127.0.0.1"), NO_ANSWER));
        r.is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            .then_some(())
    });
    let refused = g.events("api_peer_refused", Duration::from_secs(3));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["peer_ip"], "127.0.0.66", "{}", refused[0]);
    let s =
        g.ns.run(|| connect_from(ip("127.0.0.1"), am("127.0.0.1"), NO_ANSWER));
    assert_eq!(
        request(
            s.expect("127.0.0.1 is allowed"),
            "POST",
            "/api/v2/silences",
            SILENCE
        ),
        200
    );
    let writes = g.events("api_request", Duration::from_secs(3));
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["path"], "/api/v2/silences", "{}", writes[0]);
    g.am.assert_alive();
}

/// The guard runs only while the policy has an `api:` section: without one nothing is on the
/// ingress path and any peer is answered; a reload that adds the section attaches the guard
/// (an unknown peer gets no answer), one that drops it detaches it again.
#[test]
fn the_guard_is_attached_only_while_the_policy_has_an_api_section() {
    if !privileged() {
        return;
    }
    let g = Guarded::start_with("enforcer-api-reload", "", false);
    let policy = g.tmp.path.join("policy.yaml");
    let ingress = || integration_tests::ingress_programs(&g.cg.path).unwrap();
    let answered = || {
        g.ns.run(|| connect_from(ip("127.0.0.66"), am("127.0.0.1"), NO_ANSWER))
            .is_ok()
    };
    let reloads = || {
        g.agent
            .stderr_text()
            .matches("\"message\":\"policy reloaded\"")
            .count()
    };
    let reload = |sections: &str| {
        let before = reloads();
        std::fs::write(&policy, Guarded::policy_text(sections, false)).unwrap();
        g.agent.signal(libc::SIGHUP);
        wait_for(Duration::from_secs(10), "policy reloaded", || {
            (reloads() > before).then_some(())
        });
    };
    assert_eq!(ingress(), Vec::<String>::new(), "no api section, no guard");
    assert!(answered(), "nothing guards the port");

    reload(&format!("api:\n{ALLOW}"));
    assert_eq!(
        ingress(),
        [
            "enforcer_api_cluster",
            "enforcer_api_cluster_udp",
            "enforcer_api_ingress",
            "enforcer_api_stream"
        ]
    );
    assert!(
        !answered(),
        "127.0.0.66 is refused once the section is live"
    );

    reload("");
    let gone =
        integration_tests::eventually(Duration::from_secs(5), Duration::from_millis(20), || {
            ingress().is_empty().then_some(())
        });
    assert!(gone.is_some(), "guard detached: {:?}", ingress());
    assert!(answered(), "answered again");
}

/// `TcpExt: TCPSynRetrans` of the calling thread's network namespace: the SYNs the kernel sent
/// again because no answer came.
fn syn_retransmits() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").expect("netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().expect("names"), lines.next().expect("values"));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPSynRetrans")
        .and_then(|(_, v)| v.parse().ok())
        .expect("TCPSynRetrans in /proc/net/netstat")
}
