//! The agent's side of the integrity watchdog ([`crate::integrity`]): which processes it
//! watches — the Alertmanager processes among the targets, in direct and in scope mode, each
//! named by the target it belongs to.
use std::path::{Path, PathBuf};

use super::{Agent, auto, targets};
use crate::cgroup::cgroup2_mount;
use crate::integrity::WatchedProcess;

impl Agent {
    /// The processes the programs enforce as targets: in scope mode the Alertmanager processes
    /// that are targets, below the scope; in direct mode every process in the `--cgroup`s.
    pub(super) fn target_pids(&self) -> Vec<u32> {
        let proc_root = Path::new("/proc");
        if !self.scoped {
            return auto::cgroup_pids(&self.opts.cgroups);
        }
        match cgroup2_mount() {
            Ok(mount) => {
                let mount = mount.canonicalize().unwrap_or(mount);
                let scope = self.opts.scope.clone().unwrap_or_else(|| mount.clone());
                let scope = scope.canonicalize().unwrap_or(scope);
                auto::scope_pids(proc_root, &mount, &scope, &self.targets)
            }
            Err(_) => Vec::new(),
        }
    }

    /// Tells the watchdog which Alertmanager processes run among the targets now.
    pub(super) fn refresh_watchdog(&self) {
        let Some(watchdog) = &self.watchdog else {
            return;
        };
        let proc_root = Path::new("/proc");
        let mount = cgroup2_mount().ok();
        let procs = self
            .target_pids()
            .into_iter()
            .filter(|pid| auto::is_alertmanager(&proc_root.join(pid.to_string())))
            .map(|pid| WatchedProcess {
                pid,
                target: self.label_of(pid, mount.as_deref()),
            })
            .collect();
        watchdog.set_targets(procs);
    }

    /// The target a process belongs to, as deny events name it: the `--cgroup` or target
    /// cgroup it runs in (at any depth), else its `process:` name.
    fn label_of(&self, pid: u32, mount: Option<&Path>) -> String {
        let dir = Path::new("/proc").join(pid.to_string());
        let cgroup: Option<PathBuf> = mount.and_then(|m| {
            let text = std::fs::read_to_string(dir.join("cgroup")).ok()?;
            let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            Some(m.join(rel.trim_start_matches('/')))
        });
        if !self.scoped {
            let inside = self
                .opts
                .cgroups
                .iter()
                .find(|c| cgroup.as_ref().is_some_and(|p| p.starts_with(c)));
            return match (inside, self.opts.cgroups.as_slice()) {
                (Some(c), _) | (None, [c]) => format!("cgroup:{}", c.display()),
                _ => "cgroup".to_owned(),
            };
        }
        if let Some(p) = &cgroup
            && let Some(t) = self
                .targets
                .cgroups
                .values()
                .find(|t| p.starts_with(&t.path))
        {
            return t.label.clone();
        }
        let name = targets::exe_name(&dir).unwrap_or_default();
        format!("process:{name}")
    }
}
