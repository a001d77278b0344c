//! Network namespaces a test creates (only `lo` up, no route out), deleted on drop, and
//! moving a thread into one.
use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

use crate::{TestCgroup, http_get, status_and_body, unique};

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
