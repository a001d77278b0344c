//! A running `enforcer run` agent: its event lines (stdout, JSON) and its log (stderr).
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{TestCgroup, enforcer_bin, eventually};

/// A running `enforcer run`, ended with SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    events: Receiver<String>,
    seen: Vec<serde_json::Value>,
    stderr: std::sync::Arc<Mutex<Vec<String>>>,
    /// Bytes the agent wrote to stdout so far (newlines included).
    stdout_bytes: Arc<AtomicU64>,
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
        Self::start_bin(&enforcer_bin(), policy, args)
    }

    /// Like [`Agent::start_args`], with the agent binary `bin` (an earlier release).
    pub fn start_bin(bin: &Path, policy: Option<&Path>, args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("run");
        if !args.contains(&"--metrics-address") && !args.contains(&"--web.listen-address") {
            cmd.args(["--web.listen-address", "none"]);
        }
        cmd.args(args);
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, events) = channel();
        let stdout_bytes = Arc::new(AtomicU64::new(0));
        let counted = stdout_bytes.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                counted.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
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
            stdout_bytes,
        };
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(()) => Ok(agent),
            Err(_) => {
                agent.stop();
                bail!("agent never became ready; stderr:\n{}", agent.stderr_text())
            }
        }
    }

    /// Bytes the agent wrote to stdout so far (those its lines were read from).
    pub fn stdout_bytes(&self) -> u64 {
        self.stdout_bytes.load(Ordering::Relaxed)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits (up to 10 s, 30 s under emulation) until the agent's stderr contains `needle`;
    /// panics, showing the stderr, when it does not.
    pub fn wait_for_stderr(&self, needle: &str) {
        let limit = Duration::from_secs(if crate::emulated() { 30 } else { 10 });
        let found = eventually(limit, Duration::from_millis(20), || {
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

    /// Every event line that arrives within `window` (and those already seen), however many
    /// keep coming: bounded in time, unlike [`Agent::take_events`].
    pub fn events_within(&mut self, window: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.receive(left) {
                break;
            }
        }
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

/// The denied calls `lines` account for: the sum of `count` over the `connect_denied` lines
/// `pick` keeps.
pub fn denied_calls(lines: &[serde_json::Value], pick: impl Fn(&serde_json::Value) -> bool) -> u64 {
    lines
        .iter()
        .filter(|l| l["event"] == "connect_denied" && pick(l))
        .map(|l| {
            l["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("no count: {l}"))
        })
        .sum()
}

/// The lost events the `events_lost` lines among `lines` report.
pub fn lost_events(lines: &[serde_json::Value]) -> u64 {
    lines
        .iter()
        .filter(|l| l["event"] == "events_lost")
        .map(|l| {
            l["lost"]
                .as_u64()
                .unwrap_or_else(|| panic!("no lost count: {l}"))
        })
        .sum()
}
