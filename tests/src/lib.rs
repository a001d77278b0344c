//! Harness of the integration tests: a child cgroup that is always removed, the `probe`
//! workload (in that cgroup, in an empty network namespace), and the `enforcer run` agent.
//!
//! Tests here touch kernel state; they must run one at a time (`.config/nextest.toml` puts
//! them in a serial group) and need root.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
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

/// Kills (SIGKILL) and reaps a child we started, by its PID, on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workload: lives in the test cgroup and in its own empty network namespace.
pub struct Probe {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _child: Reaped,
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
            _child: Reaped(child),
        };
        let first = probe.read_line()?;
        if first != "ready" {
            bail!("probe did not start: {first:?}");
        }
        Ok(probe)
    }

    pub fn pid(&self) -> u32 {
        self._child.0.id()
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

/// A bpffs directory for one test's pins; on drop `enforcer detach` semantics: every pin under
/// it is removed (which detaches pinned links).
pub struct PinDir {
    pub path: PathBuf,
    /// Whether bpffs was mounted at /sys/fs/bpf before the test (the agent mounts it when
    /// missing; the guard then unmounts it again).
    mounted_before: bool,
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                l.split_whitespace().nth(4) == Some("/sys/fs/bpf") && l.contains(" - bpf ")
            })
        })
        .unwrap_or(false)
}

impl PinDir {
    pub fn new() -> Self {
        Self {
            path: Path::new("/sys/fs/bpf").join(unique("enforcer-test")),
            mounted_before: bpffs_mounted(),
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
        if !self.mounted_before && bpffs_mounted() {
            // Only the kernel's own *.debug iterators may remain; anything else is not ours.
            let ours_only = std::fs::read_dir("/sys/fs/bpf")
                .map(|d| {
                    d.flatten()
                        .all(|e| e.file_name().to_string_lossy().ends_with(".debug"))
                })
                .unwrap_or(false);
            // SAFETY: umount2 with a valid NUL-terminated path.
            if ours_only && unsafe { libc::umount2(c"/sys/fs/bpf".as_ptr(), 0) } != 0 {
                eprintln!(
                    "warning: unmounting /sys/fs/bpf: {}",
                    std::io::Error::last_os_error()
                );
            }
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
