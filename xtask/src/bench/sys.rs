//! Kernel plumbing of the benchmark: the bpf_stats sysctl guard, the bench cgroups guard,
//! signal handling, which program is attached to a cgroup, its run-time counters, and the
//! event consumer.
use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `sysctl kernel.bpf_stats_enabled=1` for as long as this value lives; the previous setting
/// comes back on drop (also when the benchmark fails or panics).
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }

    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "bench: could not restore {BPF_STATS_SYSCTL} to {}: {e}",
                self.previous
            );
        }
    }
}

/// The benchmark's own cgroup directory under the cgroup2 mount, with one child per setup;
/// removed on drop (children first), also on failure.
pub struct BenchCgroups {
    root: PathBuf,
    children: Vec<PathBuf>,
}

impl BenchCgroups {
    pub fn create() -> anyhow::Result<Self> {
        let mount = enforcer::cgroup::cgroup2_mount()?;
        let root = mount.join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir(&root)
            .with_context(|| format!("creating cgroup {}", root.display()))?;
        Ok(Self {
            root,
            children: Vec::new(),
        })
    }

    /// Creates `<root>/<name>` and opens it for attaching.
    pub fn child(&mut self, name: &str) -> anyhow::Result<enforcer::cgroup::Cgroup> {
        let path = self.root.join(name);
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        self.children.push(path.clone());
        Ok(enforcer::cgroup::Cgroup::open(&path)?)
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        for dir in self.children.iter().rev().chain([&self.root]) {
            // A cgroup is busy for a moment after its last (reaped) task; retry briefly.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!("bench: could not remove cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM/SIGHUP only set a flag, so the guards above still run: the benchmark stops
/// after the current step with an error.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

const BPF_PROG_QUERY: libc::c_long = 16;

/// The cgroup attach types the benchmark queries (`enum bpf_attach_type`).
pub mod attach_type {
    pub const INGRESS: u32 = 0;
    pub const EGRESS: u32 = 1;
    pub const CONNECT4: u32 = 10;
    pub const SENDMSG4: u32 = 14;
}

/// `bpf_attr` for BPF_PROG_QUERY (the kernel accepts a prefix of the union).
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// The ids of the programs attached directly to `cgroup` at `attach_type` (aya does not
/// expose a query for these attach points).
pub fn attached_prog_ids(cgroup: &File, attach_type: u32) -> anyhow::Result<Vec<u32>> {
    let mut ids = [0u32; 8];
    let mut attr = ProgQueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..ProgQueryAttr::default()
    };
    // SAFETY: `attr` and `ids` outlive the call; the kernel writes at most `prog_cnt` ids.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            std::mem::size_of::<ProgQueryAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .context("bpf(BPF_PROG_QUERY) on a bench cgroup");
    }
    Ok(ids[..attr.prog_cnt as usize].to_vec())
}

/// The id of the one connect4 program attached directly to `cgroup`.
pub fn connect4_prog_id(cgroup: &File) -> anyhow::Result<u32> {
    match attached_prog_ids(cgroup, attach_type::CONNECT4)?.as_slice() {
        [id] => Ok(*id),
        other => bail!("expected one connect4 program on the bench cgroup, found {other:?}"),
    }
}

/// The (kernel-truncated, 15-byte) name of program `prog_id`.
pub fn prog_name(prog_id: u32) -> anyhow::Result<String> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .with_context(|| format!("program id {prog_id} is not loaded"))?;
    Ok(info.name_as_str().unwrap_or_default().to_owned())
}

/// Accumulated run time and run count of a program (counted while bpf_stats is enabled).
#[derive(Clone, Copy, Debug)]
pub struct RunStats {
    pub time: Duration,
    pub count: u64,
}

impl RunStats {
    pub fn of(prog_id: u32) -> anyhow::Result<Self> {
        // Programs of other users may vanish while the list is walked; skip those errors.
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == prog_id)
            .with_context(|| format!("program id {prog_id} is not loaded any more"))?;
        Ok(Self {
            time: info.run_time(),
            count: info.run_count(),
        })
    }

    /// ns per call and calls between `self` (earlier) and `later`.
    pub fn per_call_since(self, later: Self) -> (f64, u64) {
        let calls = later.count.saturating_sub(self.count);
        let ns = later.time.saturating_sub(self.time).as_nanos() as f64;
        (
            if calls == 0 {
                f64::NAN
            } else {
                ns / calls as f64
            },
            calls,
        )
    }
}

/// Drains the event ring like the agent: on a wakeup (edge-triggered epoll) and otherwise every
/// `interval`, until `stop` is set; returns the number of records read.
pub fn consume_events(
    ring: &mut RingBuf<MapData>,
    stop: &AtomicBool,
    interval: Duration,
) -> anyhow::Result<u64> {
    // SAFETY: plain syscall; the returned descriptor is owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    // SAFETY: `ep` is a fresh descriptor nobody else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 0,
    };
    // SAFETY: valid descriptors and event struct.
    let r = unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            ring.as_fd().as_raw_fd(),
            &mut ev,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_ctl on the event ring");
    }
    let timeout = interval.as_millis().min(i32::MAX as u128) as i32;
    let mut records = 0u64;
    loop {
        let last = stop.load(Ordering::SeqCst);
        while ring.next().is_some() {
            records += 1;
        }
        if last {
            return Ok(records);
        }
        let mut out = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one event slot, valid descriptor; EINTR just means drain again.
        unsafe { libc::epoll_wait(ep.as_raw_fd(), &mut out, 1, timeout) };
    }
}

/// Moves this process into `cgroup` (before it creates any socket: a socket belongs to the
/// cgroup of the task that created it).
pub fn join_cgroup(cgroup: &std::path::Path) -> anyhow::Result<()> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("writing {}", procs.display()))
}
