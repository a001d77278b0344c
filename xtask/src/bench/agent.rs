//! The agent's own figures: resident memory of a running `enforcer run` (the release build,
//! as shipped), the kernel memory of the maps it holds, and how long it takes to apply a large
//! policy on reload.
//!
//! Each agent runs in direct mode on one of the benchmark's own (empty) cgroups, without a
//! metrics endpoint, and is stopped (SIGTERM, then SIGKILL, by its PID) when its guard drops.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{policy::Rng, sys};

/// How long an agent may take to start or to apply a policy before the benchmark gives up.
const WAIT: Duration = Duration::from_secs(300);
/// Time left after "ready" / a reload before RSS is read (lets freed memory settle).
const SETTLE: Duration = Duration::from_millis(500);

/// One measured agent state.
pub struct AgentRow {
    pub label: String,
    /// Blocked /32 prefixes of the user policy (`None`: the embedded default).
    pub prefixes: Option<usize>,
    pub rss_kib: u64,
    /// Peak RSS of the process so far (`VmHWM`).
    pub hwm_kib: u64,
    pub maps: MapMemory,
}

/// Kernel memory of the maps one process holds (`memlock` in `/proc/PID/fdinfo`).
#[derive(Default)]
pub struct MapMemory {
    pub total: u64,
    /// (map name, bytes), largest first.
    pub by_map: Vec<(String, u64)>,
}

pub struct AgentFigures {
    pub rows: Vec<AgentRow>,
    /// From writing the 100,000-prefix file (and SIGHUP) to the agent's "policy reloaded".
    pub reload: Duration,
    pub reload_prefixes: usize,
}

/// Builds the release agent and measures: idle with the embedded default; started with `small`
/// /32s, then reloaded to `large` /32s (the time to apply it); started with `large` /32s.
pub fn measure(
    cgroup: &Path,
    rng: &mut Rng,
    small: usize,
    large: usize,
) -> anyhow::Result<AgentFigures> {
    let exe = crate::vm::build::release_enforcer()?;
    let dir = TempDir::create()?;
    let policy = dir.0.join("policy.yaml");
    let small_yaml = blocklist(rng, small);
    let large_yaml = blocklist(rng, large);
    let mut rows = Vec::new();

    eprintln!("bench: agent with the embedded default policy");
    let mut agent = RunningAgent::start(&exe, None, cgroup)?;
    rows.push(agent.row("embedded default (idle)".to_owned(), None)?);
    agent.stop();

    eprintln!("bench: agent with {small} blocked /32s, then reloaded to {large}");
    write_atomically(&policy, &small_yaml)?;
    let mut agent = RunningAgent::start(&exe, Some(&policy), cgroup)?;
    rows.push(agent.row(format!("started with {small} /32s"), Some(small))?);
    let started = Instant::now();
    write_atomically(&policy, &large_yaml)?;
    agent.signal(libc::SIGHUP);
    agent.wait_for("\"message\":\"policy reloaded\"")?;
    let reload = started.elapsed();
    // The file change also triggers a reload on the agent's next slow tick (the SIGHUP one
    // does not record the file's stamp): wait for it, so the figure is after both.
    agent.wait_for("\"message\":\"policy reloaded\"")?;
    rows.push(agent.row(
        format!("reloaded from {small} to {large} /32s"),
        Some(large),
    )?);
    agent.stop();

    eprintln!("bench: agent started with {large} blocked /32s");
    let mut agent = RunningAgent::start(&exe, Some(&policy), cgroup)?;
    rows.push(agent.row(format!("started with {large} /32s"), Some(large))?);
    agent.stop();

    Ok(AgentFigures {
        rows,
        reload,
        reload_prefixes: large,
    })
}

/// `default: allow` and `n` distinct blocked /32s.
fn blocklist(rng: &mut Rng, n: usize) -> String {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut yaml = String::with_capacity(n * 30 + 64);
    yaml.push_str("mode: enforce\ndefault: allow\nblock:\n");
    while seen.len() < n {
        let a = rng.unicast();
        if seen.insert(a) {
            let _ = writeln!(yaml, "  - cidr: {}/32", Ipv4Addr::from(a));
        }
    }
    yaml
}

/// Writes `path` by renaming a complete temporary file over it (the agent never reads half a
/// policy).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// A directory for the policy files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("xtask-bench-agent-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `enforcer run`; its stderr (JSON log lines) arrives on a channel.
struct RunningAgent {
    child: Option<Child>,
    log: Receiver<String>,
}

impl RunningAgent {
    fn start(exe: &Path, policy: Option<&Path>, cgroup: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new(exe);
        cmd.args(["run", "--metrics-address", "none", "--cgroup"])
            .arg(cgroup);
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, log) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child: Some(child),
            log,
        };
        agent.wait_for("\"message\":\"ready\"")?;
        Ok(agent)
    }

    fn pid(&self) -> anyhow::Result<i32> {
        let child = self.child.as_ref().context("agent already stopped")?;
        i32::try_from(child.id()).context("agent PID")
    }

    /// Waits for the next log line containing `needle`; fails on an error line, exit or timeout.
    fn wait_for(&mut self, needle: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            sys::check_interrupted()?;
            match self.log.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(needle) => return Ok(()),
                Ok(line) if line.contains("\"level\":\"ERROR\"") => {
                    bail!("agent logged an error while waiting for {needle}: {line}")
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("agent exited before {needle}"),
            }
            if Instant::now() >= deadline {
                bail!("agent: no {needle} within {WAIT:?}");
            }
        }
    }

    fn signal(&self, signal: i32) {
        if let Ok(pid) = self.pid() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }

    fn row(&self, label: String, prefixes: Option<usize>) -> anyhow::Result<AgentRow> {
        std::thread::sleep(SETTLE);
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let kib = |key: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {key} in /proc/{pid}/status"))
        };
        Ok(AgentRow {
            label,
            prefixes,
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
            maps: map_memory(pid)?,
        })
    }

    /// SIGTERM, up to 10 s, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sums `memlock` over the BPF map descriptors of `pid`, named through `bpftool map show`
/// (ids only when bpftool is missing).
fn map_memory(pid: i32) -> anyhow::Result<MapMemory> {
    let mut by_id: BTreeMap<u64, u64> = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        if !text.lines().any(|l| l.starts_with("map_type:")) {
            continue;
        }
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) {
            by_id.insert(id, bytes);
        }
    }
    let names = map_names();
    let mut by_map: Vec<(String, u64)> = by_id
        .iter()
        .map(|(id, &bytes)| {
            let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
            (name, bytes)
        })
        .collect();
    by_map.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(MapMemory {
        total: by_id.values().sum(),
        by_map,
    })
}

/// Map id → name from `bpftool -j map show`; empty when bpftool is not there.
fn map_names() -> BTreeMap<u64, String> {
    let Ok(out) = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .stderr(Stdio::null())
        .output()
    else {
        return BTreeMap::new();
    };
    let Ok(serde_json::Value::Array(maps)) = serde_json::from_slice(&out.stdout) else {
        return BTreeMap::new();
    };
    maps.iter()
        .filter_map(|m| Some((m["id"].as_u64()?, m["name"].as_str()?.to_owned())))
        .collect()
}
