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

use crate::{TestCgroup, http_get, left_by_dead_test, status_and_body, unique};

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
        sweep_dead_tests();
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

/// Deletes, once per test process, the namespaces (and their `/etc/netns` directories) that
/// test processes killed by a signal left ([`left_by_dead_test`]).
fn sweep_dead_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(dir) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for name in dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
        {
            if left_by_dead_test(&name) {
                match ip(&["netns", "del", &name]) {
                    Ok(()) => eprintln!("removed network namespace {name} left by a killed test"),
                    Err(e) => eprintln!("warning: {e}"),
                }
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&name));
            }
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The PID of a process that has exited (reaped), so no `/proc/PID`.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn only_names_of_dead_test_processes_are_leftovers() {
        let dead = dead_pid();
        let me = std::process::id();
        assert!(left_by_dead_test(&format!("enforcer-api-reload-{dead}-0")));
        assert!(!left_by_dead_test(&format!("enforcer-api-reload-{me}-0")));
        assert!(!left_by_dead_test(&format!("other-{dead}-0")));
        assert!(!left_by_dead_test(&format!("enforcer-x-{dead}")));
        assert!(!left_by_dead_test("enforcer-"));
    }

    /// A namespace a killed test left is deleted by the next test process's first
    /// [`NetNs::new`]; its own namespace is not.
    #[test]
    fn the_first_namespace_of_a_test_process_sweeps_what_killed_tests_left() {
        if !crate::privileged() {
            return;
        }
        let stale = format!("enforcer-sweep-{}-0", dead_pid());
        ip(&["netns", "add", &stale]).unwrap();
        let ns = NetNs::new("enforcer-sweep").unwrap();
        let listed = std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        if listed.contains(&stale) {
            let _ = ip(&["netns", "del", &stale]);
            panic!("{stale} was not swept");
        }
        assert!(listed.contains(&ns.name), "{listed:?}");
    }
}
