//! Where pinned objects live in bpffs, and mounting bpffs when it is missing.
//!
//! ```text
//! <root>/v<layout>/maps/<MAP>                      maps (rules, config, counters, events)
//! <root>/v<layout>/progs/<program>                 the programs last loaded
//! <root>/v<layout>/links/cg-<cgroup id>/<program>-<nonce>   one bpf_link per hook and target
//! ```
//! The layout version changes whenever a map's key or value layout changes, so an agent never
//! adopts maps it cannot read; an agent takes over from any other (earlier) layout it finds
//! under the root, and refuses to start over a newer one (see [`super::layouts`]). The agents
//! running on one root hold an exclusive `flock` on it ([`super::layouts::Lock`]).
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use aya::programs::links::FdLink;
use enforcer_common::PIN_LAYOUT_VERSION;

use super::error::KernelError;

/// Default bpffs directory of the agent.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/enforcer";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn io(path: &Path) -> impl Fn(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How long a starting agent waits for the agent holding the root's lock to exit, by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// The pin directories of one agent installation.
#[derive(Debug, Clone)]
pub struct Pins {
    root: PathBuf,
    /// How long [`super::Kernel::load_with`] waits for another agent's lock on the root.
    lock_wait: Duration,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }

    /// The same directories, waiting up to `wait` for another agent's lock.
    #[must_use]
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    pub fn lock_wait(&self) -> Duration {
        self.lock_wait
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether any layout is pinned under the root (`detach` refuses otherwise).
    pub fn exists(&self) -> bool {
        super::layouts::find(&self.root).is_ok_and(|l| !l.is_empty())
    }

    /// This release's layout directory, `<root>/v<PIN_LAYOUT_VERSION>`.
    pub fn layout_dir(&self) -> PathBuf {
        self.versioned()
    }

    fn versioned(&self) -> PathBuf {
        self.root.join(format!("v{PIN_LAYOUT_VERSION}"))
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.versioned().join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.versioned().join("progs")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.versioned().join("links")
    }

    /// Links of the target cgroup with inode number `cgroup_id`.
    pub fn target_links(&self, cgroup_id: u64) -> PathBuf {
        self.links_dir().join(format!("cg-{cgroup_id}"))
    }

    /// Makes sure the root exists on a bpf filesystem, mounting bpffs at the closest missing
    /// mount point (`/sys/fs/bpf` normally) when needed.
    pub fn prepare_root(&self) -> Result<(), KernelError> {
        ensure_bpffs(&self.root)?;
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))
    }

    /// [`Pins::prepare_root`], and this layout's directories.
    pub fn prepare(&self) -> Result<(), KernelError> {
        self.prepare_root()?;
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }
}

/// Distinguishes the link pins of successive attaches to the same cgroup.
static ATTACH_SEQ: AtomicU64 = AtomicU64::new(0);

/// The bpf_links one attach pins for a target cgroup, in its directory
/// ([`Pins::target_links`]), and the removal of the pins that attach replaces.
///
/// Fail closed: every new link is pinned under a fresh name first ([`LinkPins::pin`]), and
/// only then does [`LinkPins::remove_older`] unlink the pins an earlier attach or an earlier
/// agent left in the directory. Until its pin exists a link lives only in this process; a crash
/// before the old pins go leaves the old set (and perhaps some new links too) attached, never
/// none: at every moment at least one complete set is attached. The fresh name is
/// `<program>-<pid>-<n>` because bpffs refuses names with dots (EPERM).
pub struct LinkPins {
    dir: PathBuf,
    seq: String,
    pinned: Vec<PathBuf>,
}

impl LinkPins {
    /// Starts an attach's pins in `dir`, creating it when missing.
    pub fn new(dir: PathBuf) -> Result<Self, KernelError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let seq = format!(
            "{}-{}",
            std::process::id(),
            ATTACH_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self {
            dir,
            seq,
            pinned: Vec::new(),
        })
    }

    /// Pins `link`, the bpf_link of `program` just attached, under its fresh name.
    pub fn pin(&mut self, program: &'static str, link: FdLink) -> Result<(), KernelError> {
        let path = self.dir.join(format!("{program}-{}", self.seq));
        link.pin(&path).map_err(|source| KernelError::Pin {
            what: "link",
            path: path.clone(),
            source,
        })?;
        self.pinned.push(path);
        Ok(())
    }

    /// Pins the link descriptor `fd` of `program` under its fresh name (for links aya cannot
    /// hand over as an `FdLink`).
    pub fn pin_fd(
        &mut self,
        program: &'static str,
        fd: &std::os::fd::OwnedFd,
    ) -> Result<(), KernelError> {
        let path = self.dir.join(format!("{program}-{}", self.seq));
        obj_pin(fd, &path).map_err(io(&path))?;
        self.pinned.push(path);
        Ok(())
    }

    /// Unlinks every pin in the directory that [`LinkPins::pin`] did not make (this detaches
    /// the links they held).
    pub fn remove_older(self) -> Result<(), KernelError> {
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if !self.pinned.contains(&path) {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is a struct of integers, for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a live statfs the call writes.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}

/// `root` (or its existing ancestor chain) must be on bpffs; mount one at `/sys/fs/bpf` when
/// nothing is mounted there.
fn ensure_bpffs(root: &Path) -> Result<(), KernelError> {
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_bpffs(&probe) {
        return Ok(());
    }
    let mount_point = Path::new("/sys/fs/bpf");
    if root.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(io(mount_point))?;
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c"bpffs".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(KernelError::Io {
                path: mount_point.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        // In a container this mount is the container's own unless its propagation reaches the
        // node (a privileged pod's Bidirectional): the pins then end with the container.
        tracing::warn!(
            path = "/sys/fs/bpf",
            "mounted bpffs: none was mounted there; in a container, pins outlive it only when \
             the node has bpffs at /sys/fs/bpf"
        );
        return Ok(());
    }
    Err(KernelError::NotBpffs {
        path: root.to_owned(),
    })
}

/// Removes every pin under the installation, of every layout found there (links first: that
/// detaches the programs), then the directories. Returns the number of links removed.
pub fn remove_all(pins: &Pins) -> Result<usize, KernelError> {
    let mut links = 0;
    for layout in super::layouts::find(&pins.root)? {
        links += super::layouts::remove(&layout.dir)?;
    }
    // Remove the now empty root; leave a bpffs mount point alone.
    match std::fs::remove_dir(&pins.root) {
        Ok(()) => Ok(links),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(links),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(links),
        Err(e) => Err(KernelError::Io {
            path: pins.root.clone(),
            source: e,
        }),
    }
}

/// Unlinks the link pins of `program` in the target directory `dir` (the program is detached
/// from that target once no other reference holds its links); a missing directory has none.
pub fn remove_program_pins(dir: &Path, program: &str) -> Result<(), KernelError> {
    let prefix = format!("{program}-");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix))
        {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Unlinks every pin file in `dir`; returns how many.
pub fn remove_dir_pins(dir: &Path) -> Result<usize, KernelError> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        std::fs::remove_file(&path).map_err(io(&path))?;
        n += 1;
    }
    Ok(n)
}

/// `BPF_OBJ_PIN` of `fd` at `path` (on bpffs).
fn obj_pin(fd: &std::os::fd::OwnedFd, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_PIN: libc::c_long = 6;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr, obj_pin: pathname (u64), bpf_fd (u32), file_flags (u32), path_fd.
    let mut attr = [0u64; 4];
    attr[0] = c.as_ptr() as u64;
    attr[1] = u64::from(fd.as_raw_fd() as u32);
    // SAFETY: bpf(2) reads the attribute and the NUL-terminated path `c` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
