//! Every write on a guarded API port is attributed, however the client segments, pipelines or
//! keeps its connection (issue 29): the kernel queues each accepted connection's stream and
//! the agent parses the requests out of it. With the real Alertmanager from Debian under the
//! agent (`api: allow: [127.0.0.1/32, ::1/128]`), three silences written three ways each get
//! their `api_request` line, and each connection an `api_connection` open and close line with
//! its byte count.
mod api_guard_support;

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    time::Duration,
};

use api_guard_support::Guarded;
use integration_tests::privileged;

const ALLOW: &str = "  allow:\n    - cidr: 127.0.0.1/32\n    - cidr: ::1/128\n";

fn post(comment: &str) -> String {
    let body = format!(
        r#"{{"matchers":[{{"name":"alertname","value":"Stream{comment}","isRegex":false}}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"test","comment":"{comment}"}}"#
    );
    format!(
        "POST /api/v2/silences HTTP/1.1\r\nHost: am\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `parts` on one connection (TCP_NODELAY: each part its own segment), `pause`
/// between them; then ends the request stream and reads every answer. Returns the answers
/// and the connection's local port.
fn send(g: &Guarded, parts: &[String], pause: Duration) -> (String, u16) {
    g.ns.run(|| {
        let mut s = TcpStream::connect("127.0.0.1:9093").unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            s.write_all(p.as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        s.shutdown(Shutdown::Write).unwrap();
        let mut answers = String::new();
        let _ = s.read_to_string(&mut answers);
        (answers, s.local_addr().unwrap().port())
    })
}

fn lines_of(g: &mut Guarded, port: u16) -> Vec<serde_json::Value> {
    g.agent
        .take_events(1, Duration::from_secs(5))
        .into_iter()
        .filter(|l| l["peer_port"] == port)
        .collect()
}

#[test]
fn pipelined_keep_alive_and_split_writes_each_have_their_line() {
    if !privileged() {
        return;
    }
    let mut g = Guarded::start("enforcer-api-streams", ALLOW);
    // Pipelined: two silences in one write; keep-alive: two writes 300 ms apart; split: the
    // method itself cut across two segments.
    let pipelined = vec![format!("{}{}", post("pipelined-1"), post("pipelined-2"))];
    let keep_alive = vec![post("keepalive-1"), post("keepalive-2")];
    let whole = post("split");
    let split = vec![whole[..2].to_owned(), whole[2..].to_owned()];
    for (name, parts, writes) in [
        ("pipelined", pipelined, 2),
        ("keep-alive", keep_alive, 2),
        ("split", split, 1),
    ] {
        let (answers, port) = send(&g, &parts, Duration::from_millis(300));
        assert_eq!(
            answers.matches("HTTP/1.1 200").count(),
            writes,
            "{name}: Alertmanager answered every silence: {answers}"
        );
        let lines = lines_of(&mut g, port);
        let requests: Vec<_> = lines
            .iter()
            .filter(|l| l["event"] == "api_request")
            .collect();
        assert_eq!(requests.len(), writes, "{name}: {lines:#?}");
        for r in &requests {
            assert_eq!(r["method"], "POST", "{name}: {r}");
            assert_eq!(r["path"], "/api/v2/silences", "{name}: {r}");
            assert_eq!(r["peer_ip"], "127.0.0.1", "{name}: {r}");
        }
        let state = |s: &str| {
            lines
                .iter()
                .find(|l| l["event"] == "api_connection" && l["state"] == s)
                .cloned()
        };
        let opened = state("open").unwrap_or_else(|| panic!("{name}: no open line: {lines:#?}"));
        assert_eq!(opened["pid"], g.am.pid(), "{name}: {opened}");
        let closed = state("close").unwrap_or_else(|| panic!("{name}: no close line: {lines:#?}"));
        let sent: usize = parts.iter().map(String::len).sum();
        assert_eq!(closed["bytes"], sent, "{name}: {closed}");
        assert_eq!(closed["requests"], writes, "{name}: {closed}");
        assert!(
            !lines.iter().any(|l| l["event"] == "api_request_unparsed"),
            "{name}: {lines:#?}"
        );
    }
    g.am.assert_alive();
}
