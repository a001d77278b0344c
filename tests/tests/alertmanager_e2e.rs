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
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use integration_tests::{Agent, ENETUNREACH, TempDir, TestCgroup, privileged, unique};

const METADATA_RULE: &str = "block preset:cloud-metadata 169.254.169.254/32";
const INJECTED_URL: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
/// As in tests/fixtures/e2e/alertmanager.yml and policy.yaml.
const SINK_ADDR: &str = "127.0.0.1:5001";
/// As in tests/fixtures/e2e/prometheus.yml.
const AM_ADDR: &str = "127.0.0.1:9093";
const PROM_ADDR: &str = "127.0.0.1:9090";
const FAILED_REQUESTS: &str =
    "alertmanager_notification_requests_failed_total{integration=\"webhook\"}";
/// Go's and Python's HTTP clients would send non-loopback URLs to a configured proxy.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/e2e")
        .join(name)
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace created for the test with only `lo` up (no other interface, no route
/// out), deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> Self {
        let name = unique("enforcer-e2e");
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]));
        ns
    }

    /// `ip netns exec NAME program args...` without the proxy variables.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Moves the calling thread into the namespace (only this thread: the others, and the
    /// sockets they create, stay where they are).
    fn enter(&self) -> std::io::Result<()> {
        let ns = File::open(Path::new("/run/netns").join(&self.name))?;
        // SAFETY: setns(2) on a namespace file descriptor we hold open; CLONE_NEWNET only
        // changes the calling thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter().expect("setns into the test namespace");
                f()
            })
            .join()
            .expect("thread in the test namespace panicked")
        })
    }

    /// `GET http://{addr}{path}` from inside the namespace: `(status, body)`.
    fn http_get(&self, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        self.run(|| {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut response = String::new();
            s.read_to_string(&mut response)?;
            let status = response
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = response
                .split_once("\r\n\r\n")
                .map_or("", |(_, b)| b)
                .to_owned();
            Ok((status, body))
        })
    }

    /// The value of one series on `addr`'s /metrics.
    fn metric(&self, addr: &str, series: &str) -> Option<f64> {
        let (status, body) = self.http_get(addr, "/metrics").ok()?;
        assert_eq!(status, 200, "GET http://{addr}/metrics");
        body.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            other => eprintln!("warning: ip netns del {}: {other:?}", self.name),
        }
    }
}

/// A process the test started, killed (by PID) and reaped on drop.
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Self {
        let log = File::create(log).expect("creating log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {name} ({e}); scripts/setup.sh installs Debian's package")
            });
        Self { name, child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}", self.name);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One POST the sink received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    body: String,
}

/// The legitimate webhook receiver: an HTTP server on a thread inside the namespace that
/// records every POST and answers 200. Stopped and joined on drop.
struct Sink {
    received: Arc<Mutex<Vec<Post>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start(ns: &NetNs, addr: &'static str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let ns_file = Path::new("/run/netns").join(&ns.name);
        let (received2, stop2) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let listener = File::open(&ns_file)
                .and_then(|f| {
                    // SAFETY: as in NetNs::enter.
                    match unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                })
                .and_then(|()| TcpListener::bind(addr))
                .and_then(|l| l.set_nonblocking(true).map(|()| l));
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Ok(post) = Self::serve(stream) {
                            received2.lock().expect("sink").push(post);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv()
            .expect("sink thread")
            .unwrap_or_else(|e| panic!("webhook sink on {addr} in the namespace: {e}"));
        Self {
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(stream: TcpStream) -> std::io::Result<Post> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut stream = stream;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut words = request_line.split_whitespace();
        if words.next() != Some("POST") {
            return Err(std::io::Error::other(format!("not a POST: {request_line}")));
        }
        Ok(Post {
            path: words.next().unwrap_or_default().to_owned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn received(&self) -> Vec<Post> {
        self.received.lock().expect("sink").clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// Polls `f` every 100 ms until it gives a value; panics after `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn alertmanager_notifies_the_sink_and_the_metadata_receiver_is_denied() {
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let ns = NetNs::new();
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

    let sink = Sink::start(&ns, SINK_ADDR);
    let mut agent = Agent::start(Some(&fixture("policy.yaml")), &cg).unwrap();

    // Alertmanager joins the enforced cgroup before exec (the shell writes its own PID, then
    // execs `ip netns exec`, which execs Alertmanager: one PID throughout).
    let cg_path = cg.path_str();
    let am_storage = tmp.path.join("alertmanager");
    let mut am_cmd = Command::new("sh");
    am_cmd.args([
        "-c",
        r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#,
        "sh",
        &cg_path,
        "ip",
        "netns",
        "exec",
        &ns.name,
        "prometheus-alertmanager",
    ]);
    am_cmd
        .arg(format!(
            "--config.file={}",
            fixture("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", am_storage.display()))
        .arg(format!("--web.listen-address={AM_ADDR}"))
        .arg(format!("--web.external-url=http://{AM_ADDR}/"))
        .arg("--cluster.listen-address=");
    for var in PROXY_VARS {
        am_cmd.env_remove(var);
    }
    let mut am = Daemon::spawn("prometheus-alertmanager", &mut am_cmd, &am_log);
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
    let failed_before = ns
        .metric(AM_ADDR, FAILED_REQUESTS)
        .unwrap_or_else(|| panic!("Alertmanager's /metrics has no {FAILED_REQUESTS}"));

    let prom_storage = tmp.path.join("prometheus");
    let mut prom = Daemon::spawn(
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
            sink.received().into_iter().next()
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

    // 3. The enforcer's JSON lines: one per attempt, each the metadata service, decided by the
    // cloud-metadata rule; nothing else Alertmanager did was denied.
    let events = agent.take_events(1, Duration::from_secs(10));
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
    let attempts = failure
        .split("notify retry canceled after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(attempts) = attempts {
        assert!(
            events.len() >= attempts,
            "{attempts} attempts but only {} deny lines",
            events.len()
        );
    }

    // 4. Alertmanager counted the failures; the delivery to the sink succeeded.
    let failed_after = ns.metric(AM_ADDR, FAILED_REQUESTS).unwrap();
    assert!(
        failed_after > failed_before,
        "{FAILED_REQUESTS} did not rise: {failed_before} -> {failed_after}"
    );
    let notifications_failed = ns
        .metric(
            AM_ADDR,
            "alertmanager_notifications_failed_total{integration=\"webhook\"}",
        )
        .unwrap();
    assert!(notifications_failed >= 1.0, "{notifications_failed}");
    let requests = ns
        .metric(
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
        sink.received().len(),
        events.len()
    );
}
