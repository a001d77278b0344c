//! Child cgroups a test creates (and always removes), and what is attached to them.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;

use crate::unique;

/// A child cgroup created for one test, removed on drop (after the processes the test put
/// there have been ended).
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> anyhow::Result<Self> {
        let mount = enforcer::cgroup::cgroup2_mount()?;
        sweep_dead_tests(&mount);
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

/// Removes, once per test process, the empty cgroup trees below `mount` that test processes
/// killed by a signal left ([`crate::left_by_dead_test`]); a tree that still holds a process
/// stays.
fn sweep_dead_tests(mount: &Path) {
    fn remove_tree(dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
        std::fs::remove_dir(dir)
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(dir) = std::fs::read_dir(mount) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::left_by_dead_test(&name) && remove_tree(&entry.path()).is_ok() {
                eprintln!("removed cgroup {name} left by a killed test");
            }
        }
    });
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

/// Every program attached to `cgroup` as `bpftool cgroup show` prints it: `(attach type,
/// name)`, sorted (two releases' sets attached at once show as duplicates).
pub fn cgroup_programs(cgroup: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool cgroup show {}: {}",
        cgroup.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut programs: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // ID  AttachType  [AttachFlags]  Name; the header starts with "ID".
            (f.len() >= 3 && f[0].bytes().all(|b| b.is_ascii_digit()))
                .then(|| (f[1].to_owned(), f[f.len() - 1].to_owned()))
        })
        .collect();
    programs.sort();
    Ok(programs)
}

/// The programs attached to a cgroup's ingress path (the DNS-learning program and the API
/// guard), by the name `bpftool cgroup show` prints, sorted.
pub fn ingress_programs(cgroup: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool cgroup show {}: {}",
        cgroup.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ingress"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}
