//! Finding and validating cgroup v2 directories.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// Errors about the target cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2Mount,
    #[error("reading /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    #[error("cgroup {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cgroup v2 directory (it is not under the cgroup2 mount {mount})")]
    NotCgroup2 { path: PathBuf, mount: PathBuf },
    #[error(
        "{path} is the root cgroup: attaching there would enforce the policy on every process of \
         the host; give the cgroup of the workload instead"
    )]
    RootCgroup { path: PathBuf },
}

/// Mount point of the cgroup v2 hierarchy, read from /proc/self/mountinfo (it is
/// `/sys/fs/cgroup` on pure v2 hosts and `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    parse_cgroup2_mount(&info).ok_or(CgroupError::NoCgroup2Mount)
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mountpoint options [optional...] - fstype source ...
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|m| PathBuf::from(unescape_mount(m)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// In a container with a cgroup namespace of its own (containerd and CRI-O on cgroup v2),
/// `/proc/PID/cgroup` shows paths relative to that namespace, so processes of other pods
/// could not be mapped to the host's cgroup tree. With the host's PID namespace (`hostPID`),
/// `/proc/1` is the node's init: join its cgroup namespace. Call before any thread starts.
pub fn enter_host_cgroup_namespace() -> std::io::Result<bool> {
    use std::os::fd::AsRawFd as _;
    let ns_id = |p: &str| std::fs::read_link(p).ok();
    let (mine, init) = (ns_id("/proc/self/ns/cgroup"), ns_id("/proc/1/ns/cgroup"));
    if mine.is_none() || init.is_none() || mine == init {
        return Ok(false);
    }
    let f = File::open("/proc/1/ns/cgroup")?;
    // SAFETY: setns on a namespace fd we hold open.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWCGROUP) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// A validated, opened cgroup v2 directory that is not the root.
pub struct Cgroup {
    pub path: PathBuf,
    pub dir: File,
}

impl Cgroup {
    /// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's inode.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        self.dir.metadata().map(|m| m.ino()).unwrap_or(0)
    }

    /// Opens `path` and checks it is a non-root directory of the cgroup v2 hierarchy.
    pub fn open(path: &Path) -> Result<Self, CgroupError> {
        Self::open_checked(path, false)
    }

    /// Opens the scope of scope mode: any directory of the cgroup v2 hierarchy, the root
    /// included (the programs there decide only calls of target tasks).
    pub fn open_scope(path: &Path) -> Result<Self, CgroupError> {
        Self::open_checked(path, true)
    }

    fn open_checked(path: &Path, root_ok: bool) -> Result<Self, CgroupError> {
        let open_err = |source| CgroupError::Open {
            path: path.to_owned(),
            source,
        };
        let canonical = path.canonicalize().map_err(open_err)?;
        let mount = cgroup2_mount()?.canonicalize().map_err(open_err)?;
        if !canonical.starts_with(&mount) || !canonical.join("cgroup.procs").exists() {
            return Err(CgroupError::NotCgroup2 {
                path: path.to_owned(),
                mount,
            });
        }
        if canonical == mount && !root_ok {
            return Err(CgroupError::RootCgroup {
                path: path.to_owned(),
            });
        }
        let dir = File::open(&canonical).map_err(open_err)?;
        Ok(Self {
            path: canonical,
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }
}
