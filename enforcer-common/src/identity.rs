//! Target identity held by the kernel (scope mode): which processes the programs decide.
//!
//! A process is a target when the kernel says so, not when its current name says so:
//!
//! - `TARGET_TASKS` (tgid → [`why`] bits) says which tasks are targets and why. The sock_addr
//!   programs read its mirror `TARGET_TGIDS` (one byte per tgid in an array map, see
//!   [`TGID_BLOCK`]), a lookup the verifier inlines; a call of a process whose byte is 0 leaves
//!   at once. A tgid beyond the array (`pid_max` raised after the agent loaded it) is looked up
//!   in `TARGET_TASKS` instead, so no tgid is ever taken for a non-target by mistake. Every
//!   writer of `TARGET_TASKS` writes the byte right after it (add: 1, remove: 0).
//! - The exec tracepoint adds the process when the executable it runs is named in
//!   `TARGET_NAMES` (the basename of the path given to exec, not the renamable comm), or when
//!   the process lives in a cgroup of `TARGET_CGROUPS` at any depth. Exec never removes: a
//!   target that re-executes itself (`/proc/self/exe`) or execs another binary stays one.
//! - The cgroup migration tracepoint adds a process moved into a target cgroup (or below one)
//!   without exec'ing afterwards.
//! - The fork tracepoint gives the child of a target (process or thread) an entry before the
//!   child runs. Threads, io_uring workers (`iou-wrk-*`, `iou-sqp-*`) and every other task of a
//!   target's thread group share its tgid, so they are targets with no entry of their own.
//! - The free tracepoint removes the entry of a task whose `task_struct` is freed; a thread
//!   group leader is freed only after every thread of the group, so a target stays one for as
//!   long as any of its threads lives. The kernel frees a `task_struct` an RCU grace period
//!   after the PID was released, so a new task may already hold that PID (and its entry) by
//!   then: the exit tracepoint marks the entry of each exiting task [`why::EXITED`], the fork
//!   and exec tracepoints write entries without it, and the free tracepoint removes only an
//!   entry so marked — never the entry of the PID's next task.
//! - The agent seeds the map from `/proc` for processes that were running before the programs
//!   were attached (after attaching, so no process falls between the two).
/// Map names.
pub mod map_names {
    /// `HashMap<ExeName, u32>`: executable names of `process:` targets.
    pub const TARGET_NAMES: &str = "TARGET_NAMES";
    /// `HashMap<u32, u32>`: tgid (or tid of a target's thread) → [`super::why`] bits.
    pub const TARGET_TASKS: &str = "TARGET_TASKS";
    /// `Array<[u8; TGID_BLOCK]>`, `BPF_F_MMAPABLE`: byte `tgid % TGID_BLOCK` of entry
    /// `tgid / TGID_BLOCK` is 1 when `tgid` is a key of `TARGET_TASKS`, else 0. Sized at load
    /// from `pid_max` ([`super::tgid_blocks`]). The agent writes single bytes through an
    /// mmap of the map (a whole-value update would overwrite its neighbours' bytes that the
    /// tracepoints wrote meanwhile); the tracepoints store single bytes.
    pub const TARGET_TGIDS: &str = "TARGET_TGIDS";
    /// `HashMap<u64, u32>`: cgroup ids whose processes (at any depth below) are targets.
    pub const TARGET_CGROUPS: &str = "TARGET_CGROUPS";
    /// `LruHashMap<u64, u32>`: socket cookie → tgid of the target that sent a DNS query on it.
    pub const TARGET_SOCKETS: &str = "TARGET_SOCKETS";
    /// `PerCpuArray` with one entry: the exec tracepoint's scratch buffer (no state; pinned
    /// with the rest so every map of the object is).
    pub const EXEC_SCRATCH: &str = "EXEC_SCRATCH";

    pub const ALL: [&str; 6] = [
        TARGET_NAMES,
        TARGET_TASKS,
        TARGET_TGIDS,
        TARGET_CGROUPS,
        TARGET_SOCKETS,
        EXEC_SCRATCH,
    ];
}

/// Program names (tracepoints `sched/<name>`).
pub mod prog_names {
    pub const EXEC: &str = "enforcer_exec";
    pub const FORK: &str = "enforcer_fork";
    pub const FREE: &str = "enforcer_free";
    pub const EXIT: &str = "enforcer_exit";
    pub const CGROUP_ATTACH: &str = "enforcer_cgroup_attach";
    /// (program, tracepoint category, tracepoint name), in attach order: fork, free and
    /// migration before exec, so no task that becomes a target misses its children; exit
    /// before free, so no entry a free may remove lacks its exit mark.
    pub const ALL: [(&str, &str, &str); 5] = [
        (FORK, "sched", "sched_process_fork"),
        (EXIT, "sched", "sched_process_exit"),
        (FREE, "sched", "sched_process_free"),
        (CGROUP_ATTACH, "cgroup", "cgroup_attach_task"),
        (EXEC, "sched", "sched_process_exec"),
    ];
}

/// The tracepoint fields the programs read. Their offsets differ between kernels (Linux 6.10+
/// stores comms as `__data_loc` strings, which moves `child_pid` and `pid`), so the agent reads
/// them from the tracepoints' `format` files and sets them as the programs' globals.
pub mod fields {
    /// (global in the object, tracepoint category, tracepoint, field)
    pub const ALL: [(&str, &str, &str, &str); 5] = [
        (
            "EXEC_FILENAME_OFF",
            "sched",
            "sched_process_exec",
            "filename",
        ),
        (
            "FORK_CHILD_PID_OFF",
            "sched",
            "sched_process_fork",
            "child_pid",
        ),
        ("FREE_PID_OFF", "sched", "sched_process_free", "pid"),
        ("ATTACH_PID_OFF", "cgroup", "cgroup_attach_task", "pid"),
        (
            "ATTACH_DST_ID_OFF",
            "cgroup",
            "cgroup_attach_task",
            "dst_id",
        ),
    ];
}

/// Why a task is a target (`TARGET_TASKS` value bits; several may be set).
pub mod why {
    /// It exec'd an executable named in `TARGET_NAMES`.
    pub const EXEC_NAME: u32 = 1 << 0;
    /// It exec'd while in a target cgroup (or below one).
    pub const CGROUP: u32 = 1 << 1;
    /// Its parent was a target when it was forked.
    pub const INHERITED: u32 = 1 << 2;
    /// The agent found it in `/proc` (running before the programs were attached).
    pub const SCANNED: u32 = 1 << 3;
    /// Not a reason but a state: the task of this entry has exited (its `task_struct` is
    /// freed later); only an entry with this bit is removed by the free tracepoint.
    pub const EXITED: u32 = 1 << 4;
}

/// Bytes of an executable name key: the name, zero-padded. Longer names are compared by their
/// first `EXE_NAME_LEN - 1` bytes.
pub const EXE_NAME_LEN: usize = 64;
/// Key of `TARGET_NAMES`.
pub type ExeName = [u8; EXE_NAME_LEN];

/// The key of an executable name (cut to `EXE_NAME_LEN - 1` bytes).
pub fn exe_name_key(name: &[u8]) -> ExeName {
    let mut key = [0u8; EXE_NAME_LEN];
    let n = name.len().min(EXE_NAME_LEN - 1);
    key[..n].copy_from_slice(&name[..n]);
    key
}

/// Bytes of the exec'd path the exec program reads (longer paths: their first bytes).
pub const PATH_MAX_READ: usize = 256;
/// Capacity of `TARGET_NAMES`.
pub const MAX_TARGET_NAMES: u32 = 256;
/// Capacity of `TARGET_CGROUPS`.
pub const MAX_TARGET_CGROUPS: u32 = 4096;
/// Capacity of `TARGET_TASKS` (target processes and their threads).
pub const MAX_TARGET_TASKS: u32 = 65_536;
/// Tgids per `TARGET_TGIDS` entry (one byte each: a byte store is atomic, so two CPUs that
/// mark neighbouring tgids never lose each other's write, where a shared bitmap word would
/// need atomic read-modify-write).
pub const TGID_BLOCK: usize = 64;
/// `TARGET_TGIDS` value.
pub type TgidBlock = [u8; TGID_BLOCK];
/// The largest `pid_max` Linux allows on 64-bit (`PID_MAX_LIMIT`, 2^22): every pid is below it.
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;
/// `BPF_F_MMAPABLE` (map flag): the agent writes `TARGET_TGIDS` through an mmap.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Entries of `TARGET_TGIDS` for a system whose `pid_max` is `pid_max` (pids are below it):
/// enough blocks to hold every pid, at least one, at most `PID_MAX_LIMIT / TGID_BLOCK`.
pub const fn tgid_blocks(pid_max: u32) -> u32 {
    let max = if pid_max == 0 || pid_max > PID_MAX_LIMIT {
        PID_MAX_LIMIT
    } else {
        pid_max
    };
    max.div_ceil(TGID_BLOCK as u32)
}

/// Capacity of `TARGET_SOCKETS` (least recently used entries go first; only targets add).
pub const MAX_TARGET_SOCKETS: u32 = 16_384;
/// The exec program walks the cgroup ancestry up to this depth (cgroup v2 nests no deeper in
/// practice; the walk is a `bpf_loop` and ends at the task's real depth).
pub const MAX_CGROUP_DEPTH: u32 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_and_zero_padded() {
        let k = exe_name_key(b"alertmanager");
        assert_eq!(&k[..12], b"alertmanager");
        assert!(k[12..].iter().all(|&b| b == 0));
        let long = [b'a'; 100];
        let k = exe_name_key(&long);
        assert_eq!(k[EXE_NAME_LEN - 1], 0);
        assert_eq!(k[EXE_NAME_LEN - 2], b'a');
    }

    #[test]
    fn tgid_blocks_cover_every_pid_below_pid_max() {
        assert_eq!(tgid_blocks(32_768), 512);
        assert_eq!(tgid_blocks(32_769), 513);
        assert_eq!(tgid_blocks(PID_MAX_LIMIT), 65_536);
        assert_eq!(tgid_blocks(0), 65_536);
        assert_eq!(tgid_blocks(u32::MAX), 65_536);
        assert_eq!(tgid_blocks(1), 1);
        for pid_max in [301, 32_768, 99_999, PID_MAX_LIMIT] {
            let last = pid_max - 1;
            assert!(
                last / (TGID_BLOCK as u32) < tgid_blocks(pid_max),
                "{pid_max}"
            );
        }
    }
}
