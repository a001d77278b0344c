//! What a `targets:` entry may name, checked while parsing (no file system access: a policy is
//! checked in CI on another machine); where a cgroup path is on this machine is
//! [`cgroup_on_host`]'s, for `enforcer check` and the agent.

use std::path::{Path, PathBuf};

/// The longest file name the kernel keeps (NAME_MAX): an executable name beyond it cannot exist.
pub const MAX_EXECUTABLE_NAME: usize = 255;

/// Bytes of an executable name the kernel keeps in a task's comm (TASK_COMM_LEN - 1): the
/// programs match a `process:` target's exec by this prefix.
pub const COMM_BYTES: usize = 15;

/// Unit types that hold processes (and so a cgroup of their own).
pub const UNIT_SUFFIXES: [&str; 3] = [".service", ".scope", ".slice"];

/// Why `name` is not an executable name (`None` when it is one).
pub fn process_problem(name: &str) -> Option<String> {
    if name.contains('/') {
        let base = name.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
        return Some(format!(
            "a process target is an executable's file name, not a path (did you mean \"{}\"?)",
            crate::input::cut(base)
        ));
    }
    if name != name.trim() {
        return Some("an executable name has no leading or trailing spaces".to_owned());
    }
    if name == "." || name == ".." {
        return Some("not an executable name".to_owned());
    }
    if name.len() > MAX_EXECUTABLE_NAME {
        return Some(format!(
            "{} bytes, longer than a file name may be ({MAX_EXECUTABLE_NAME} bytes)",
            name.len()
        ));
    }
    None
}

/// Why `name` is not a systemd unit with processes (`None` when it is one).
pub fn unit_problem(name: &str) -> Option<String> {
    if name.contains('/') {
        return Some("a unit name has no `/`; name the unit, not its file or cgroup".to_owned());
    }
    if UNIT_SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
    {
        return None;
    }
    Some(format!(
        "a unit name ends with {} (did you mean \"{}.service\"?)",
        UNIT_SUFFIXES.join(", "),
        crate::input::cut(name)
    ))
}

/// Why `path` cannot name a cgroup inside the cgroup2 mount (`None` when it can): `.` and `..`
/// components would leave it (`../../..`), so they are refused outright.
pub fn cgroup_problem(path: &str) -> Option<String> {
    // By text: `Path::components` drops inner `.` components.
    if path.split('/').any(|c| c == "." || c == "..") {
        return Some(
            "`.` and `..` are not allowed in a cgroup path (it must stay inside the cgroup2 \
             mount)"
                .to_owned(),
        );
    }
    None
}

/// Where a cgroup target's `path` is on this machine, given the cgroup2 `mount` (from
/// /proc/self/mountinfo): relative paths are inside the mount; an absolute path must be.
pub fn cgroup_on_host(path: &str, mount: &Path) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Ok(mount.join(p));
    }
    if p.starts_with(mount) {
        Ok(p.to_owned())
    } else {
        Err(format!(
            "{} is outside the cgroup2 mount {} of this machine (a path relative to the mount \
             works on every machine)",
            crate::input::quote(path),
            mount.display()
        ))
    }
}

/// `enforcer check`'s listing of the policy's targets.
pub fn render(out: &mut String, policy: &super::Policy) {
    use std::fmt::Write as _;

    use super::Target;
    if policy.targets.is_empty() {
        let _ = writeln!(
            out,
            "\ntargets: none (run needs --cgroup PATH, or a `targets:` list for scope mode)"
        );
        return;
    }
    let _ = writeln!(out, "\ntargets ({}):", policy.targets.len());
    for t in &policy.targets {
        match t {
            Target::Cgroup { path, location } => {
                let _ = writeln!(out, "  cgroup {path}  ({location})");
            }
            Target::SystemdUnit { name, location } => {
                let _ = writeln!(out, "  systemd_unit {name}  ({location})");
            }
            Target::Process { names, location } => {
                let _ = writeln!(out, "  process {}  ({location})", names.join(", "));
                for n in names.iter().filter(|n| n.len() > COMM_BYTES) {
                    let kept = String::from_utf8_lossy(&n.as_bytes()[..COMM_BYTES]);
                    let _ = writeln!(
                        out,
                        "        {n}: the kernel keeps {COMM_BYTES} bytes of an executable's \
                         name; execs are matched by \"{kept}\""
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_host() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            cgroup_on_host("kubepods.slice", mount).unwrap(),
            mount.join("kubepods.slice")
        );
        assert!(cgroup_on_host("/sys/fs/cgroup/unified/a", mount).is_ok());
        let e = cgroup_on_host("/sys/fs/cgroup/unifiedx", mount).unwrap_err();
        assert!(e.contains("outside the cgroup2 mount"), "{e}");
    }
}
