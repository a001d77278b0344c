//! podman for the container test (`tests/tests/container.rs`): runc as the runtime, a
//! containers.conf of the test's, and guards that remove containers, images and the cgroups
//! podman creates, also when the test fails.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

/// How to install what the container test needs.
pub const INSTALL: &str =
    "scripts/setup.sh installs podman, runc, kubectl and prometheus-alertmanager";

/// stdout then stderr of a finished command.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// podman with runc (crun refuses hybrid cgroup hosts) and a containers.conf without default
/// ulimits (setrlimit is not permitted on these machines).
pub struct Podman {
    conf: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path) -> Self {
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
        Self { conf }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .args(["--runtime", "runc"])
            .args(args);
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("podman: {e}; {INSTALL}"))
    }

    /// Runs podman; panics with its output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// stdout and stderr of a container so far.
    pub fn logs(&self, name: &str) -> String {
        text(&self.output(&["logs", name]))
    }

    /// Whether the container `name` is running.
    pub fn running(&self, name: &str) -> bool {
        self.ok(&["inspect", "--format", "{{.State.Running}}", name]) == "true"
    }

    /// The host PID of the container's first process.
    pub fn pid(&self, name: &str) -> u32 {
        self.ok(&["inspect", "--format", "{{.State.Pid}}", name])
            .parse()
            .unwrap()
    }
}

/// Removes a container (or an image) on drop.
pub struct Remove<'a> {
    podman: &'a Podman,
    args: &'static [&'static str],
    name: String,
}

impl Remove<'_> {
    pub fn container<'a>(podman: &'a Podman, name: &str) -> Remove<'a> {
        Remove {
            podman,
            args: &["rm", "--force", "--time=0"],
            name: name.to_owned(),
        }
    }

    pub fn image<'a>(podman: &'a Podman, name: &str) -> Remove<'a> {
        Remove {
            podman,
            args: &["rmi", "--force"],
            name: name.to_owned(),
        }
    }
}

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd(self.args)
            .arg(&self.name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The cgroups podman creates for `--cgroup-parent` under the test's cgroup, in every
/// hierarchy (the v1 controllers of a hybrid host too), removed deepest first on drop.
pub struct PodmanCgroups(pub String);

impl Drop for PodmanCgroups {
    fn drop(&mut self) {
        fn remove(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            for _ in 0..100 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => return,
                }
            }
            eprintln!("warning: could not remove cgroup {}", dir.display());
        }
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            // cpu and cpuacct are often symlinks to one hierarchy: remove it once.
            if h.file_type().is_ok_and(|t| t.is_dir()) {
                let dir = h.path().join(&self.0);
                if dir.exists() {
                    remove(&dir);
                }
            }
        }
    }
}

/// Prints both containers' logs when the test fails.
pub struct LogsOnFailure<'a>(pub &'a Podman, pub Vec<String>);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in &self.1 {
                let logs = self.0.logs(name);
                let tail: Vec<&str> = logs.lines().rev().take(25).collect();
                eprintln!("--- podman logs {name} (last lines)");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
