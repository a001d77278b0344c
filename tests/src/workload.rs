//! The `probe` workload (`src/bin/probe.rs`): a process in the test cgroup and in an empty
//! network namespace that makes the socket calls a test asks for, line by line.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{ChildGuard, EPERM, TestCgroup, probe_bin};

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
        let mut cmd = Command::new(exe);
        cmd.arg("--cgroup").arg(&cgroup.path);
        Self::spawn_command(cmd)
    }

    /// A probe started by `cmd` (which ends by exec'ing the probe, e.g. through `ip netns
    /// exec` or `unshare`), driven through its stdin and stdout.
    pub fn spawn_command(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
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

    /// `resolve NAME QTYPE SERVER 53` in the probe: the addresses of the answer its stub
    /// resolver accepted (an error when it accepted none).
    pub fn resolve(
        &mut self,
        name: &str,
        qtype: &str,
        server: &str,
    ) -> anyhow::Result<Vec<std::net::IpAddr>> {
        let reply = self.command_line(&format!("resolve {name} {qtype} {server} 53"))?;
        let Some(rest) = reply.strip_prefix("ok") else {
            bail!("resolve {name}: {reply}");
        };
        rest.split_whitespace()
            .map(|a| a.parse().with_context(|| format!("resolve {name}: {a:?}")))
            .collect()
    }

    /// Unconnected UDP sendto().
    pub fn sendto(&mut self, addr: &str, port: u16) -> anyhow::Result<Outcome> {
        self.sendto_proto("udp", addr, port)
    }

    /// Unconnected sendto() over a datagram socket of `proto` (`udp` or `udplite`).
    pub fn sendto_proto(&mut self, proto: &str, addr: &str, port: u16) -> anyhow::Result<Outcome> {
        let reply = self.command(&format!("sendto {proto} {addr} {port}"))?;
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
        self.flood_command(&format!("flood {proto} {addr} {port} {n}"))
    }

    /// Connects in a tight loop inside the probe for `time`; returns (EPERM count, other
    /// outcomes).
    pub fn flood_for(
        &mut self,
        proto: &str,
        addr: &str,
        port: u16,
        time: Duration,
    ) -> anyhow::Result<(u64, u64)> {
        let ms = time.as_millis();
        self.flood_command(&format!("flood-for {proto} {addr} {port} {ms}"))
    }

    fn flood_command(&mut self, cmd: &str) -> anyhow::Result<(u64, u64)> {
        let reply = self.command(cmd)?;
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

    /// Runs [`Probe::alternate`] (port 80) in 100 ms chunks on a thread until `done` is set;
    /// returns the summed counts `[a1 EPERM, a1 other, a2 EPERM, a2 other]`.
    pub fn hammer(
        mut self,
        a1: &'static str,
        a2: &'static str,
        done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<[u64; 4]> {
        std::thread::spawn(move || {
            let mut total = [0u64; 4];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let c = self.alternate(a1, a2, 80, 100).unwrap();
                for (t, c) in total.iter_mut().zip(c) {
                    *t += c;
                }
            }
            total
        })
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
