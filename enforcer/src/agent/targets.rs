//! Turning the policy's `targets:` into what the kernel filters on: process names (comms) and
//! cgroup ids, found under the cgroup v2 mount and by scanning `/proc`.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::policy::Target;

/// What the scope-mode programs should treat as targets right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSet {
    /// Executable names of `process:` targets.
    pub comms: Vec<String>,
    /// Target cgroups by id, with a label naming the target they come from.
    pub cgroups: BTreeMap<u64, TargetCgroup>,
    /// Targets configured in the policy.
    pub configured: usize,
    /// Configured targets that matched nothing (yet), by label.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCgroup {
    pub label: String,
    pub path: PathBuf,
}

impl TargetSet {
    pub fn cgroup_ids(&self) -> Vec<u64> {
        self.cgroups.keys().copied().collect()
    }
}

fn cgroup_id(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    m.is_dir().then(|| m.ino())
}

/// Resolves `targets` against the cgroup v2 hierarchy mounted at `mount` and the processes
/// under `proc_root` (normally `/proc`).
pub fn resolve(targets: &[Target], mount: &Path, proc_root: &Path) -> TargetSet {
    let mut set = TargetSet {
        configured: targets.len(),
        ..TargetSet::default()
    };
    for t in targets {
        match t {
            Target::Cgroup { path, .. } => {
                let label = format!("cgroup:{path}");
                match crate::policy::targets::cgroup_on_host(path, mount) {
                    Ok(full) => add_cgroup(&mut set, label, full),
                    Err(why) => {
                        tracing::warn!(target = %label, "{why}");
                        set.missing.push(label);
                    }
                }
            }
            Target::SystemdUnit { name, .. } => {
                let label = format!("systemd_unit:{name}");
                match find_unit(mount, name) {
                    Some(p) => add_cgroup(&mut set, label, p),
                    None => set.missing.push(label),
                }
            }
            Target::Process { names, .. } => {
                set.comms.extend(names.iter().cloned());
                let found = scan_processes(proc_root, names);
                if found.is_empty() {
                    set.missing.push(format!("process:{}", names.join(",")));
                }
                for (name, rel) in found {
                    let label = format!("process:{name}");
                    add_cgroup(&mut set, label, mount.join(rel.trim_start_matches('/')));
                }
            }
        }
    }
    set.comms.sort();
    set.comms.dedup();
    set
}

fn add_cgroup(set: &mut TargetSet, label: String, path: PathBuf) {
    match cgroup_id(&path) {
        Some(id) => {
            set.cgroups
                .entry(id)
                .or_insert(TargetCgroup { label, path });
        }
        None => set.missing.push(label),
    }
}

/// The cgroup of a systemd unit: `system.slice/<unit>` normally; otherwise the first directory
/// of that name within four levels (user slices, custom slices).
fn find_unit(mount: &Path, unit: &str) -> Option<PathBuf> {
    let direct = mount.join("system.slice").join(unit);
    if direct.is_dir() {
        return Some(direct);
    }
    let mut frontier = vec![mount.to_owned()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in frontier {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if e.file_name() == unit {
                    return Some(p);
                }
                next.push(p);
            }
        }
        frontier = next;
    }
    None
}

/// Processes whose executable name is one of `names`, with the cgroup that becomes a target
/// with them: (name, cgroup v2 path relative to the mount). On Kubernetes that is the pod's
/// cgroup (the ancestor whose name carries `pod<uid>`), so every container of the pod — and a
/// restarted one — is covered; for a systemd service, the service's cgroup. A process in any
/// other cgroup (a login session, say) is matched by its name alone: enforcing its whole cgroup
/// could catch unrelated processes.
pub fn scan_processes(proc_root: &Path, names: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = proc_root.join(pid.to_string());
        let Some(exe) = exe_name(&dir) else { continue };
        let Some(name) = names.iter().find(|n| **n == exe) else {
            continue;
        };
        let Some(cg) = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            })
        else {
            continue;
        };
        let cgroup = match pod_ancestor(&cg) {
            Some(pod) => pod,
            None if cg.ends_with(".service") => cg,
            None => continue, // covered by the name (comm) filter alone
        };
        out.push((name.clone(), cgroup));
    }
    out.sort();
    out.dedup();
    out
}

/// The executable name of a process: the basename of `/proc/PID/exe`, else its comm.
pub fn exe_name(proc_dir: &Path) -> Option<String> {
    if let Ok(target) = std::fs::read_link(proc_dir.join("exe")) {
        let s = target.to_string_lossy();
        let s = s.strip_suffix(" (deleted)").unwrap_or(&s);
        if let Some(base) = Path::new(s).file_name() {
            return Some(base.to_string_lossy().into_owned());
        }
    }
    std::fs::read_to_string(proc_dir.join("comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-….scope`
/// → the path up to the pod segment; cgroupfs-driver layouts (`/kubepods/burstable/pod<uid>/…`)
/// too.
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "`.slice` is a systemd unit type, whose names are case-sensitive"
)]
pub fn pod_ancestor(cgroup: &str) -> Option<String> {
    let parts: Vec<&str> = cgroup.split('/').collect();
    let i = parts.iter().position(|p| {
        p.strip_prefix("pod").is_some_and(|rest| rest.len() >= 32)
            || p.contains("-pod") && p.ends_with(".slice")
    })?;
    (i + 1 < parts.len()).then(|| parts[..=i].join("/"))
}

/// The processes under `proc_root` that are targets by what they run or where they live:
/// executable (basename of `/proc/PID/exe`) in `names`, or cgroup at or below one of
/// `cgroups` (paths relative to the cgroup v2 mount, as `/proc/PID/cgroup` gives them) — and
/// every descendant of such a process (children inherit, whatever they exec'd since).
pub fn scan_tasks(proc_root: &Path, names: &[String], cgroups: &[String]) -> Vec<u32> {
    let mut parent = BTreeMap::new();
    let mut hit = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = proc_root.join(pid.to_string());
        if let Some(ppid) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| stat_ppid(&s))
        {
            parent.insert(pid, ppid);
        }
        let by_name = exe_name(&dir).is_some_and(|n| names.contains(&n));
        let by_cgroup = !cgroups.is_empty()
            && std::fs::read_to_string(dir.join("cgroup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
                })
                .is_some_and(|cg| cgroups.iter().any(|t| under(&cg, t)));
        if by_name || by_cgroup {
            hit.insert(pid);
        }
    }
    let mut out = Vec::new();
    for &pid in parent.keys() {
        let mut p = pid;
        // The parent chain ends at pid 1 (or 0); a bound guards against a cycle of reused pids.
        for _ in 0..4096 {
            if hit.contains(&p) {
                out.push(pid);
                break;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 && pp != p => p = pp,
                _ => break,
            }
        }
    }
    out
}

/// Whether cgroup path `cg` is `target` or below it.
fn under(cg: &str, target: &str) -> bool {
    let t = target.trim_end_matches('/');
    cg == t || cg.strip_prefix(t).is_some_and(|rest| rest.starts_with('/'))
}

/// The ppid field of `/proc/PID/stat` (after the parenthesised comm, which may hold spaces).
fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ppid_survives_odd_comms() {
        assert_eq!(stat_ppid("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(stat_ppid("1 (init) S 0 1 1"), Some(0));
    }

    #[test]
    fn cgroup_paths_are_below_only_at_a_separator() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a/"));
        assert!(!under("/ab", "/a"));
    }

    #[test]
    fn pod_cgroups_are_found_for_both_drivers() {
        let systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-abc.scope";
        assert_eq!(
            pod_ancestor(systemd).as_deref(),
            Some(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice"
            )
        );
        let cgroupfs =
            "/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/0123456789abcdef";
        assert_eq!(
            pod_ancestor(cgroupfs).as_deref(),
            Some("/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901")
        );
        assert_eq!(
            pod_ancestor("/system.slice/prometheus-alertmanager.service"),
            None
        );
    }

    #[test]
    fn processes_are_matched_by_executable_name() {
        let dir = std::env::temp_dir().join(format!("enforcer-proc-{}", std::process::id()));
        let p = dir.join("4242");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("comm"), "prometheus-aler\n").unwrap();
        std::os::unix::fs::symlink("/usr/bin/prometheus-alertmanager", p.join("exe")).unwrap();
        std::fs::write(
            p.join("cgroup"),
            "0::/system.slice/prometheus-alertmanager.service\n",
        )
        .unwrap();
        let q = dir.join("4343");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("comm"), "bash\n").unwrap();
        std::fs::write(q.join("cgroup"), "0::/user.slice\n").unwrap();
        let found = scan_processes(&dir, &["prometheus-alertmanager".to_owned()]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            vec![(
                "prometheus-alertmanager".to_owned(),
                "/system.slice/prometheus-alertmanager.service".to_owned()
            )]
        );
    }
}
