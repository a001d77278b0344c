//! Harness of the integration tests: a child cgroup that is always removed, the `probe`
//! workload (in that cgroup, in an empty network namespace), and the `enforcer run` agent.
//!
//! Tests here touch kernel state; they must run one at a time (`.config/nextest.toml` puts
//! them in a serial group) and need root.
use std::{
    ffi::OsStr,
    fs::File,
    io::{BufRead, BufReader, Read as _, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub mod dns;

pub const EPERM: i32 = libc::EPERM;
pub const ENETUNREACH: i32 = libc::ENETUNREACH;
pub const ECONNREFUSED: i32 = libc::ECONNREFUSED;

/// Returns false (and says why) when the test cannot run here.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root (cgroups, network namespaces, BPF)");
        return false;
    }
    true
}

/// Directory holding the workspace's binaries for the profile these tests were built with.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned()
}

/// The `probe` binary of this package.
pub fn probe_bin() -> PathBuf {
    std::env::var_os("PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("probe"))
}

/// The `enforcer` binary, built (once per test process) so a stale one is never used.
/// `ENFORCER_BIN` overrides (the VM runner has no cargo).
pub fn enforcer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ENFORCER_BIN") {
            return PathBuf::from(p);
        }
        let dir = bin_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "enforcer", "--bin", "enforcer"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build -p enforcer");
        assert!(status.success(), "cargo build -p enforcer failed");
        dir.join("enforcer")
    })
    .clone()
}

/// Runs the `enforcer` binary with `args` and waits for it: `(exit code, stdout, stderr)`, the
/// code -1 when a signal ended it.
pub fn run_enforcer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("running enforcer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A unique name for this test process's kernel objects.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child cgroup created for one test, removed on drop (after the processes the test put
/// there have been ended).
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> anyhow::Result<Self> {
        let mount = enforcer::cgroup::cgroup2_mount()?;
        let path = mount.join(unique("enforcer-test"));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// A child cgroup of this one (removed on drop, before its parent).
    pub fn child(&self, name: &str) -> anyhow::Result<TestCgroup> {
        let path = self.path.join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TestCgroup { path })
    }

    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0)
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes exit asynchronously after kill/wait; retry the rmdir for a moment.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(unique("enforcer-test"));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Outcome of one probe call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Errno(i32),
}

impl Outcome {
    pub fn denied(self) -> bool {
        self == Outcome::Errno(EPERM)
    }
}

/// A process the test started, killed (SIGKILL, by its PID) and reaped on drop, also when the
/// test panics. Nothing but that one PID is ever signalled, and not once it has been reaped.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Guards `child`; `name` is what [`ChildGuard::assert_alive`] calls it.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child,
        }
    }

    /// Starts `cmd` with stdin from /dev/null and stdout and stderr both written to the file
    /// `log` (created, or truncated).
    pub fn spawn_logged(
        name: impl Into<String>,
        cmd: &mut Command,
        log: &Path,
    ) -> std::io::Result<Self> {
        let log = File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self::new(name, child))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Panics when the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}", self.name);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workload: lives in the test cgroup and in its own empty network namespace.
pub struct Probe {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    child: ChildGuard,
}

impl Probe {
    pub fn spawn(cgroup: &TestCgroup) -> anyhow::Result<Self> {
        Self::spawn_exe(&probe_bin(), cgroup)
    }

    /// Like [`Probe::spawn`], running the probe from `exe` (a copy under another name gives
    /// the process another comm).
    pub fn spawn_exe(exe: &Path, cgroup: &TestCgroup) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .arg("--cgroup")
            .arg(&cgroup.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning probe")?;
        let stdin = child.stdin.take().context("probe stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("probe stdout")?);
        let mut probe = Self {
            stdin,
            stdout,
            child: ChildGuard::new("probe", child),
        };
        let first = probe.read_line()?;
        if first != "ready" {
            bail!("probe did not start: {first:?}");
        }
        Ok(probe)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("probe exited");
        }
        Ok(line.trim_end().to_owned())
    }

    /// Sends one command line and returns the probe's reply line.
    pub fn command_line(&mut self, cmd: &str) -> anyhow::Result<String> {
        self.command(cmd)
    }

    fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.read_line()
    }

    fn outcome(reply: &str) -> anyhow::Result<Outcome> {
        if reply == "ok" {
            return Ok(Outcome::Ok);
        }
        match reply.strip_prefix("errno ").and_then(|n| n.parse().ok()) {
            Some(n) => Ok(Outcome::Errno(n)),
            None => bail!("unexpected probe reply {reply:?}"),
        }
    }

    /// connect() with a `proto` ("tcp" | "udp") socket of the address's family.
    pub fn connect(&mut self, proto: &str, addr: &str, port: u16) -> anyhow::Result<Outcome> {
        let reply = self.command(&format!("connect {proto} {addr} {port}"))?;
        Self::outcome(&reply)
    }

    /// Unconnected UDP sendto().
    pub fn sendto(&mut self, addr: &str, port: u16) -> anyhow::Result<Outcome> {
        let reply = self.command(&format!("sendto udp {addr} {port}"))?;
        Self::outcome(&reply)
    }

    /// `n` connects in a tight loop inside the probe; returns (EPERM count, other outcomes).
    pub fn flood(
        &mut self,
        proto: &str,
        addr: &str,
        port: u16,
        n: u64,
    ) -> anyhow::Result<(u64, u64)> {
        let reply = self.command(&format!("flood {proto} {addr} {port} {n}"))?;
        let mut it = reply
            .strip_prefix("ok ")
            .context("flood failed")?
            .split(' ');
        let mut next = || {
            it.next()
                .and_then(|x| x.parse().ok())
                .with_context(|| format!("bad reply {reply}"))
        };
        Ok((next()?, next()?))
    }

    /// Connects (UDP) to `a1`, `a2`, `a1`, ... for `ms` milliseconds; returns
    /// [EPERM at a1, other at a1, EPERM at a2, other at a2].
    pub fn alternate(
        &mut self,
        a1: &str,
        a2: &str,
        port: u16,
        ms: u64,
    ) -> anyhow::Result<[u64; 4]> {
        let reply = self.command(&format!("alternate udp {a1} {a2} {port} {ms}"))?;
        let v: Vec<u64> = reply
            .strip_prefix("ok ")
            .with_context(|| format!("alternate failed: {reply}"))?
            .split(' ')
            .map(|x| x.parse())
            .collect::<Result<_, _>>()?;
        v.try_into()
            .map_err(|_| anyhow::anyhow!("bad reply {reply}"))
    }

    /// A TCP listener inside the probe's namespace; returns its port.
    pub fn listen(&mut self, addr: &str) -> anyhow::Result<u16> {
        let reply = self.command(&format!("listen tcp {addr} 0"))?;
        reply
            .strip_prefix("ok ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("listen failed: {reply}"))
    }
}

/// A running `enforcer run`, ended with SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    events: Receiver<String>,
    seen: Vec<serde_json::Value>,
    stderr: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `enforcer run --policy <policy> --cgroup <cgroup>` and waits for its ready line.
    pub fn start(policy: Option<&Path>, cgroup: &TestCgroup) -> anyhow::Result<Self> {
        let cg = cgroup.path.to_string_lossy().into_owned();
        Self::start_args(policy, &["--cgroup", &cg])
    }

    /// Starts `enforcer run [--policy <policy>] <args>` (no metrics endpoint unless `args` asks
    /// for one) and waits for its ready line.
    pub fn start_args(policy: Option<&Path>, args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(enforcer_bin());
        cmd.arg("run");
        if !args.contains(&"--metrics-address") {
            cmd.args(["--metrics-address", "none"]);
        }
        cmd.args(args);
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (ready_tx, ready_rx) = channel();
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"message\":\"ready\"") {
                    let _ = ready_tx.send(());
                }
                log2.lock().expect("stderr log").push(line);
            }
        });
        let mut agent = Self {
            child: Some(child),
            events,
            seen: Vec::new(),
            stderr: log,
        };
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => Ok(agent),
            Err(_) => {
                agent.stop();
                bail!("agent never became ready; stderr:\n{}", agent.stderr_text())
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the agent's stderr contains `needle`; panics, showing the
    /// stderr, when it does not.
    pub fn wait_for_stderr(&self, needle: &str) {
        let found = eventually(Duration::from_secs(10), Duration::from_millis(20), || {
            self.stderr_text().contains(needle).then_some(())
        });
        assert!(found.is_some(), "no {needle:?} in:\n{}", self.stderr_text());
    }

    fn receive(&mut self, timeout: Duration) -> bool {
        match self.events.recv_timeout(timeout) {
            Ok(line) => {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                self.seen.push(v);
                true
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Waits until at least `n` event lines arrived (or `timeout`), then a little longer to
    /// catch extra lines, and returns all lines seen since the last call.
    pub fn take_events(&mut self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.receive(left) {
                break;
            }
        }
        // The agent drains on a 50 ms timer: anything else queued shows up within this.
        while self.receive(Duration::from_millis(300)) {}
        std::mem::take(&mut self.seen)
    }

    /// Sends `signal` to the agent (by its PID).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit status if it exited.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Number of connect/sendmsg programs attached to a cgroup, as `bpftool cgroup show` lists them.
pub fn attached_programs(cgroup: &Path) -> anyhow::Result<usize> {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("connect") || l.contains("sendmsg"))
        .count())
}

/// A bpffs directory for one test's pins, in a bpffs instance of the test's own: mounted on
/// a fresh directory under the temp dir, so the test never touches `/sys/fs/bpf` (whether it
/// was mounted, and by whom, is shared state that concurrent test runs would race on). On
/// drop, `enforcer detach` semantics: every pin under it is removed (which detaches pinned
/// links), then the instance is unmounted and its directory removed.
pub struct PinDir {
    pub path: PathBuf,
    /// Where the test's bpffs instance is mounted; `path` is a directory in it that the agent
    /// creates (and `enforcer detach` removes).
    mount: PathBuf,
}

impl PinDir {
    pub fn new() -> Self {
        let mount = std::env::temp_dir().join(unique("enforcer-test-bpffs"));
        std::fs::create_dir(&mount).unwrap_or_else(|e| panic!("creating {}: {e}", mount.display()));
        let target = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings and no data.
        let r = unsafe {
            libc::mount(
                c"bpffs".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&mount);
            panic!("mounting a bpffs instance on {}: {e}", mount.display());
        }
        Self {
            path: mount.join("enforcer"),
            mount,
        }
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists()
            && let Err(e) = enforcer::pin::remove_all(&enforcer::pin::Pins::new(&self.path))
        {
            eprintln!("warning: removing pins under {}: {e}", self.path.display());
        }
        let target = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 with a valid NUL-terminated path. MNT_DETACH: a process the test
        // could not end must not keep the mount (the instance goes when its last user does).
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "warning: unmounting {}: {}",
                self.mount.display(),
                std::io::Error::last_os_error()
            );
        } else if let Err(e) = std::fs::remove_dir(&self.mount) {
            eprintln!("warning: removing {}: {e}", self.mount.display());
        }
    }
}

/// Whether this kernel loads the DNS-learning program (its verifier accepts it); says why the
/// caller skips when not.
pub fn fqdn_learning_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match enforcer::ebpf::Enforcer::load() {
        Ok(e) if e.fqdn_learning() => true,
        Ok(_) => {
            eprintln!(
                "SKIP: the DNS-learning program (cgroup_skb/ingress, bpf_loop) is refused by the \
                 verifier of kernel {}: FQDN learning unavailable here",
                release.trim()
            );
            false
        }
        Err(e) => panic!("loading the programs: {e}"),
    }
}

/// Calls `f` every `every` until it gives a value; `None` once `timeout` has passed without one.
pub fn eventually<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` every 100 ms until it gives a value; panics, naming `what`, after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually(timeout, Duration::from_millis(100), f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// `GET http://{addr}{path}` with `Connection: close`, the whole request in one `write_all`;
/// reads (5 s timeout) until the server closes and returns the whole response.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    Ok(response)
}

/// The status code (0 when there is none) and the body of an HTTP response.
pub fn status_and_body(response: &str) -> (u16, &str) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

/// A thread running until dropped: `body` gets a flag it must check (in its loop) and return
/// when it is set; drop sets it and joins the thread.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    pub fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || body(&stopped));
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// An HTTP server on a thread, on a listener the caller bound (inside a [`NetNs`] with
/// [`NetNs::run`]): reads each request (its body by `Content-Length`), records it, answers 200
/// with an empty body and closes. Stopped and joined on drop.
pub struct HttpSink {
    received: Arc<Mutex<Vec<Request>>>,
    _thread: Background,
}

impl HttpSink {
    pub fn start(listener: TcpListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let thread = Background::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Ok(request) = Self::serve(stream) {
                            log.lock().expect("sink").push(request);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            received,
            _thread: thread,
        })
    }

    fn serve(stream: TcpStream) -> std::io::Result<Request> {
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
        Ok(Request {
            method: words.next().unwrap_or_default().to_owned(),
            path: words.next().unwrap_or_default().to_owned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().expect("sink").clone()
    }
}

/// Environment variables by which Go's and Python's HTTP clients would send non-loopback URLs
/// to a proxy; [`NetNs::command`] removes them.
pub const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Moves the calling thread (only it: the others, and the sockets they create, stay where they
/// are) into the network namespace of the file `ns` (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn enter_netns(ns: &Path) -> std::io::Result<()> {
    let ns = File::open(ns)?;
    // SAFETY: setns(2) on a namespace file descriptor we hold open; CLONE_NEWNET only changes
    // the calling thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `ip <args>`, which must succeed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A network namespace created for one test, with only `lo` up (no other interface, no route
/// out). On drop, also when the test panics, it is deleted, with the `/etc/netns/NAME` that
/// [`NetNs::resolv_conf`] wrote (and `/etc/netns` itself when that created it and it is empty).
pub struct NetNs {
    pub name: String,
    /// `/etc/netns/NAME` once written, and whether `/etc/netns` was created for it.
    etc: Option<(PathBuf, bool)>,
}

impl NetNs {
    /// `ip netns add <prefix>-<unique>`, then `lo` up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(prefix);
        ip(&["netns", "add", &name])?;
        let ns = Self { name, etc: None };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Writes the namespace's own resolv.conf, `/etc/netns/NAME/resolv.conf` (which
    /// `ip netns exec` bind-mounts over /etc/resolv.conf).
    pub fn resolv_conf(&mut self, text: &str) -> anyhow::Result<()> {
        let dir = Path::new("/etc/netns").join(&self.name);
        if self.etc.is_none() {
            let created_parent = !Path::new("/etc/netns").exists();
            self.etc = Some((dir.clone(), created_parent));
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("resolv.conf"), text)?;
        Ok(())
    }

    /// `ip netns exec NAME <program>`, without the [`PROXY_VARS`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Like [`NetNs::command`], but the process first joins `cgroup`: a shell writes its own
    /// PID to `cgroup.procs`, then execs `ip netns exec`, which execs `program`. One PID
    /// throughout, and every socket `program` creates belongs to the cgroup.
    pub fn command_in_cgroup(&self, cgroup: &TestCgroup, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#,
            "sh",
        ])
        .arg(&cgroup.path)
        .args(["ip", "netns", "exec", &self.name])
        .arg(program);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `ip netns exec NAME <args>` (without the [`PROXY_VARS`]), waited for.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let (program, rest) = args.split_first().context("no program")?;
        Ok(self.command(program).args(rest).output()?)
    }

    /// Moves the calling thread into the namespace (see [`enter_netns`]).
    pub fn enter(&self) -> std::io::Result<()> {
        enter_netns(&Path::new("/run/netns").join(&self.name))
    }

    /// Runs `f` on a thread inside the namespace (sockets it creates stay there); panics
    /// when the thread cannot enter it or `f` panics.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter().expect("setns into the test namespace");
                f()
            })
            .join()
            .expect("thread in the test namespace panicked")
        })
    }

    /// [`http_get`] from inside the namespace: `(status, body)`.
    pub fn http_get(&self, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        let response = self.run(|| http_get(addr, path))?;
        let (status, body) = status_and_body(&response);
        Ok((status, body.to_owned()))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
        if let Some((dir, created_parent)) = &self.etc {
            let _ = std::fs::remove_dir_all(dir);
            if *created_parent {
                let _ = std::fs::remove_dir("/etc/netns"); // only when empty
            }
        }
    }
}
