//! Alertmanager (Debian's 0.25) in a test's network namespace, driven through its API and
//! amtool, and the agent's integrity findings collected (tests/integrity*.rs).
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Agent, ChildGuard, HttpSink, NetNs, TempDir, TestCgroup, http_get, wait_for};

/// Where the tests' Alertmanager listens, inside its namespace.
pub const AM_ADDR: &str = "127.0.0.1:9093";
/// How long a finding may take after the change (one 1 s interval, plus the read itself and
/// the line's way through a pipe).
pub const WITHIN: Duration = Duration::from_secs(3);

/// One HTTP/1.1 request to Alertmanager inside the namespace: (status, body).
pub fn am_api(ns: &NetNs, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {AM_ADDR}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = ns
        .run(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(AM_ADDR)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Alertmanager answers small bodies chunked: keep the JSON part.
    let json = body.find(['{', '[']).map_or(body, |i| {
        &body[i..body.rfind(['}', ']']).map_or(body.len(), |j| j + 1)]
    });
    (status, json.to_owned())
}

/// `amtool silence add ...` inside the namespace; the new silence's id.
pub fn amtool_silence(ns: &NetNs, matcher: &str, duration: &str) -> String {
    let out = ns
        .output(&[
            "amtool",
            &format!("--alertmanager.url=http://{AM_ADDR}"),
            "silence",
            "add",
            matcher,
            &format!("--duration={duration}"),
            "--comment=integrity test",
            "--author=mallory",
        ])
        .expect("amtool (scripts/setup.sh installs Debian's prometheus-alertmanager)");
    assert!(
        out.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts Alertmanager in `cg` inside `ns` (joined before exec) and waits until it is ready.
pub fn start_alertmanager(ns: &NetNs, cg: &TestCgroup, tmp: &TempDir, config: &Path) -> ChildGuard {
    let mut cmd = ns.command_in_cgroup(cg, "prometheus-alertmanager");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            tmp.path.join("data").display()
        ))
        .arg(format!("--web.listen-address={AM_ADDR}"))
        .arg("--cluster.listen-address=");
    let log = tmp.path.join("alertmanager.log");
    let mut am = ChildGuard::spawn_logged("prometheus-alertmanager", &mut cmd, &log)
        .expect("prometheus-alertmanager (scripts/setup.sh installs it)");
    wait_for(Duration::from_secs(30), "Alertmanager's /-/ready", || {
        am.assert_alive();
        matches!(ns.http_get(AM_ADDR, "/-/ready"), Ok((200, _))).then_some(())
    });
    am
}

/// The value of one series of the agent's /metrics.
pub fn agent_metric(addr: &str, series: &str) -> Option<f64> {
    let response = http_get(addr, "/metrics").ok()?;
    response.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The agent's integrity lines, collected across calls.
pub struct Findings<'a> {
    pub agent: &'a mut Agent,
    pub seen: Vec<Value>,
}

impl Findings<'_> {
    pub fn collect(&mut self) {
        for v in self.agent.take_events(0, Duration::from_millis(10)) {
            if v["event"] == "integrity" {
                self.seen.push(v);
            }
        }
    }

    /// Waits up to [`WITHIN`] for a finding of `kind` that `pred` accepts; panics with every
    /// finding seen when none comes.
    pub fn expect(&mut self, kind: &str, since: Instant, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            self.collect();
            if let Some(f) = self.seen.iter().find(|f| f["finding"] == kind && pred(f)) {
                eprintln!("{kind} after {:?}", since.elapsed());
                return f.clone();
            }
            assert!(
                since.elapsed() < WITHIN,
                "no {kind} finding within {WITHIN:?}; findings:\n{:#?}\nagent stderr:\n{}",
                self.seen,
                self.agent.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kinds(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|f| f["finding"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

/// Alertmanager in a namespace and cgroup of its own, the agent attached to that cgroup
/// (`--cgroup`, direct mode) with a metrics endpoint, and a notify sink on the host's loopback.
pub struct Watched {
    pub ns: NetNs,
    pub cg: TestCgroup,
    pub tmp: TempDir,
    pub sink: HttpSink,
    pub agent: Agent,
    pub am: ChildGuard,
    /// The agent's metrics address.
    pub metrics: String,
    /// Alertmanager's configuration file.
    pub config: std::path::PathBuf,
}

impl Watched {
    /// `policy` is given the notify sink's port; waits until the watchdog watches.
    pub fn start(ns_name: &str, policy: impl Fn(u16) -> String, config: &str) -> Self {
        let ns = NetNs::new(ns_name).unwrap();
        let cg = TestCgroup::new().unwrap();
        let tmp = TempDir::new().unwrap();
        let sink_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let notify_port = sink_listener.local_addr().unwrap().port();
        let sink = HttpSink::start(sink_listener).unwrap();
        let policy_path = tmp.write("policy.yaml", &policy(notify_port)).unwrap();
        let config = tmp.write("alertmanager.yml", config).unwrap();
        let metrics_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let metrics = format!("127.0.0.1:{metrics_port}");
        let cg_path = cg.path_str();
        let args = ["--cgroup", &cg_path, "--metrics-address", &metrics];
        let agent = Agent::start_args(Some(&policy_path), &args).unwrap();
        let am = start_alertmanager(&ns, &cg, &tmp, &config);
        agent.wait_for_stderr("integrity watchdog: watching");
        Self {
            ns,
            cg,
            tmp,
            sink,
            agent,
            am,
            metrics,
            config,
        }
    }
}
