//! Target identity in the kernel (scope mode), see `enforcer_common::identity`: four
//! tracepoints keep `TARGET_TASKS` (tgid → why) and its mirror `TARGET_TGIDS` (a byte per
//! tgid), and [`is_target`] — one array lookup the verifier inlines, no helper call — is all a
//! sock_addr program asks before it decides or leaves.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_MMAPABLE},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_loop,
        bpf_probe_read_kernel_str_bytes, generated::bpf_get_socket_cookie,
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, TracePointContext},
};
use enforcer_common::{
    identity::{
        EXE_NAME_LEN, ExeName, MAX_CGROUP_DEPTH, MAX_TARGET_CGROUPS, MAX_TARGET_NAMES,
        MAX_TARGET_SOCKETS, MAX_TARGET_TASKS, PATH_MAX_READ, PID_MAX_LIMIT, TGID_BLOCK, TgidBlock,
        why,
    },
    proto,
};

use crate::Caller;

#[map]
static TARGET_NAMES: HashMap<ExeName, u32> = HashMap::with_max_entries(MAX_TARGET_NAMES, 0);
#[map]
static TARGET_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGET_TASKS, 0);
/// Sized for `PID_MAX_LIMIT` here; the agent sets the real size from `pid_max` at load.
#[map]
static TARGET_TGIDS: Array<TgidBlock> =
    Array::with_max_entries(PID_MAX_LIMIT / TGID_BLOCK as u32, BPF_F_MMAPABLE as u32);
#[map]
static TARGET_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGET_CGROUPS, 0);
#[map]
pub(crate) static TARGET_SOCKETS: LruHashMap<u64, u32> =
    LruHashMap::with_max_entries(MAX_TARGET_SOCKETS, 0);
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);

const PATH_MASK: usize = PATH_MAX_READ - 1;

// Offsets of the tracepoint fields read, set by the agent from the `format` files at load
// (see `enforcer_common::identity::fields`).
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFF: u32 = 0;
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static FREE_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static ATTACH_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static ATTACH_DST_ID_OFF: u32 = 0;

#[inline(always)]
fn global(v: &'static u32) -> usize {
    // SAFETY: a read of a constant the loader wrote; volatile so the compiler keeps the load.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[repr(C)]
pub struct ExecScratch {
    path: [u8; PATH_MAX_READ],
    name: ExeName,
    /// Bytes of `path` (volatile: the verifier must see an unknown value in the callbacks).
    len: u64,
    /// Where the basename starts in `path` (volatile, like `len`).
    start: u64,
}

/// Whether the process `tgid` is a target: the one question a sock_addr program asks in scope
/// mode. Threads and io_uring workers carry their process's tgid.
///
/// Its byte in `TARGET_TGIDS` (an array lookup the verifier inlines: a bounds check and an
/// address computation). A tgid beyond the array (`pid_max` raised after load) is looked up in
/// `TARGET_TASKS`: never taken for a non-target because the array is too small.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match TARGET_TGIDS.get(tgid / TGID_BLOCK as u32) {
        Some(block) => block[tgid as usize % TGID_BLOCK] != 0,
        // SAFETY: read-only lookup; the value is not used.
        None => unsafe { TARGET_TASKS.get(&tgid) }.is_some(),
    }
}

/// Marks `task` a target for `why` (keeping the reasons it had, never the exit mark: the
/// caller knows the task lives): its `TARGET_TASKS` entry, then its byte. The byte is written
/// even when the full hash refuses the entry, so the decision (which reads the byte) still
/// holds it a target.
#[inline(always)]
fn add_task(task: u32, why: u32, keep: bool) {
    let old = if keep {
        // SAFETY: the value is a plain u32, copied out at once.
        unsafe { TARGET_TASKS.get(&task) }.copied().unwrap_or(0)
    } else {
        0
    };
    let _ = TARGET_TASKS.insert(&task, &((old & !why::EXITED) | why), BPF_ANY as u64);
    set_byte(task, 1);
}

/// Forgets `task`: its `TARGET_TASKS` entry, then its byte.
#[inline(always)]
fn remove_task(task: u32) {
    let _ = TARGET_TASKS.remove(&task);
    set_byte(task, 0);
}

/// Stores `value` in `task`'s byte of `TARGET_TGIDS` (nothing beyond the array, where
/// `TARGET_TASKS` alone decides). One byte store: concurrent writers of neighbouring tgids on
/// other CPUs (or the agent, through its mmap) keep their bytes.
#[inline(always)]
fn set_byte(task: u32, value: u8) {
    if let Some(block) = TARGET_TGIDS.get_ptr_mut(task / TGID_BLOCK as u32) {
        // SAFETY: `block` points at a live map value of TGID_BLOCK bytes; the offset is below
        // TGID_BLOCK.
        unsafe {
            core::ptr::write_volatile((block as *mut u8).add(task as usize % TGID_BLOCK), value)
        };
    }
}

/// A target's DNS query (UDP to port 53): marks its socket, whose answers may then teach the
/// learning program (`fqdn::learn`).
#[inline(always)]
pub fn mark_dns_socket(ctx: &SockAddrContext, port: u16, proto_class: u8, caller: &mut Caller) {
    if port == DNS_PORT && proto_class == proto::UDP {
        let tgid = caller.tgid();
        // SAFETY: the helper reads the socket of this program's context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        let _ = TARGET_SOCKETS.insert(&cookie, &tgid, 0);
    }
}

const DNS_PORT: u16 = 53;

/// `sched_process_exec`: the process becomes a target when the executable's name is a target
/// name or when it lives in a target cgroup. Never removes: re-exec keeps a target a target.
#[tracepoint]
pub fn enforcer_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mut bits = 0;
    if name_is_target(&ctx) {
        bits |= why::EXEC_NAME;
    }
    if in_target_cgroup() {
        bits |= why::CGROUP;
    }
    if bits != 0 {
        add_task(tgid, bits, true);
    } else if is_target(tgid) {
        // A target exec'ing from a thread other than its leader: the old leader's exit marked
        // the tgid's entry, which this task now carries alive.
        add_task(tgid, 0, true);
    }
    0
}

/// `sched_process_exit` (in the exiting task, each thread): marks the task's entry
/// [`why::EXITED`], so the free tracepoint, an RCU grace period later, removes this entry and
/// not the one a new task with the same PID may have got meanwhile.
#[tracepoint]
pub fn enforcer_exit(_ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(v) = TARGET_TASKS.get_ptr_mut(&tid) {
        // SAFETY: a live value of the map; a u32 store (a concurrent writer of this entry can
        // only add a reason, which no longer matters for an exiting task).
        unsafe { *v |= why::EXITED };
    }
    0
}

/// `sched_process_fork` (processes and threads; runs in the parent before the child runs):
/// the child of a target is a target. Any other child's pid loses a stale entry.
#[tracepoint]
pub fn enforcer_fork(ctx: TracePointContext) -> u32 {
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: reads a field of this tracepoint's record (offset from the `format` file).
    let Ok(child) = (unsafe { ctx.read_at::<i32>(global(&FORK_CHILD_PID_OFF)) }) else {
        return 0;
    };
    let child = child as u32;
    if is_target(parent) {
        add_task(child, why::INHERITED, false);
    } else {
        remove_task(child);
    }
    0
}

/// `sched_process_free`: a task's `task_struct` is freed (a group leader's only after all its
/// threads): its entry goes — if it is the entry of an exited task. The PID was released an
/// RCU grace period ago, and a task forked since may hold it: its entry (written by fork or
/// exec, without the exit mark) stays.
#[tracepoint]
pub fn enforcer_free(ctx: TracePointContext) -> u32 {
    // SAFETY: reads a field of this tracepoint's record (offset from the `format` file).
    if let Ok(pid) = unsafe { ctx.read_at::<i32>(global(&FREE_PID_OFF)) } {
        let pid = pid as u32;
        // SAFETY: the value is a plain u32, copied out at once.
        match unsafe { TARGET_TASKS.get(&pid) }.copied() {
            Some(bits) if bits & why::EXITED == 0 => {}
            _ => remove_task(pid),
        }
    }
    0
}

/// `cgroup_attach_task` (after a process moved to another cgroup): a process moved into a
/// target cgroup, or below one, becomes a target. When the process moved itself, its new
/// ancestry is walked; when another task moved it, the destination itself is checked (the
/// exec that normally follows such a move walks the ancestry; so does the agent's scan).
#[tracepoint]
pub fn enforcer_cgroup_attach(ctx: TracePointContext) -> u32 {
    // SAFETY: reads fields of this tracepoint's record (offsets from the `format` file).
    let (Ok(pid), Ok(dst)) = (
        unsafe { ctx.read_at::<i32>(global(&ATTACH_PID_OFF)) },
        unsafe { ctx.read_at::<u64>(global(&ATTACH_DST_ID_OFF)) },
    ) else {
        return 0;
    };
    let pid = pid as u32;
    let me = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: read-only lookup; the value is not used.
    let hit = unsafe { TARGET_CGROUPS.get(&dst) }.is_some() || (pid == me && in_target_cgroup());
    if hit {
        add_task(pid, why::CGROUP, true);
    }
    0
}

/// The basename of the path given to exec (the tracepoint's `filename`), looked up in
/// `TARGET_NAMES`.
#[inline(always)]
fn name_is_target(ctx: &TracePointContext) -> bool {
    // SAFETY: reads a field of this tracepoint's record (offset from the `format` file).
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(global(&EXEC_FILENAME_OFF)) }) else {
        return false;
    };
    let Some(p) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch value (a tracepoint program does not nest on one CPU); this
    // reference ends before the callbacks, which make their own, run.
    let s = unsafe { &mut *p };
    // `__data_loc`: the string's offset from the record in the low 16 bits.
    // SAFETY: the record holds the NUL-terminated path at that offset; the helper bounds the
    // read by the buffer.
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    let Ok(path) = (unsafe { bpf_probe_read_kernel_str_bytes(src, &mut s.path) }) else {
        return false;
    };
    let len = path.len();
    put(&mut s.len, len);
    put(&mut s.start, 0);
    s.name[EXE_NAME_LEN - 1] = 0;
    // The basename: after the last '/' (`slash_step`), copied into the key (`name_step`).
    // `bpf_loop` callbacks are verified once, where a plain loop over unknown bounds is walked
    // iteration by iteration.
    // SAFETY: the callbacks have the signature bpf_loop expects; they take no context.
    unsafe {
        bpf_loop(
            PATH_MAX_READ as u32,
            slash_step as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
        bpf_loop(
            (EXE_NAME_LEN - 1) as u32,
            name_step as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: the callbacks' references to the scratch ended with `bpf_loop`.
    let s = unsafe { &*p };
    // SAFETY: read-only lookup; the value is not used.
    unsafe { TARGET_NAMES.get(&s.name) }.is_some()
}

/// One byte of the path (a `bpf_loop` callback): remembers where the name after a '/' starts.
#[inline(never)]
extern "C" fn slash_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; the caller holds no reference to it during bpf_loop.
    let s = unsafe { &mut *p };
    let i = index as usize;
    if i >= get(&s.len) {
        return 1;
    }
    if s.path[opaque(i) & PATH_MASK] == b'/' {
        put(&mut s.start, i + 1);
    }
    0
}

/// One byte of the name key (a `bpf_loop` callback): the basename's byte, or 0 past its end.
#[inline(never)]
extern "C" fn name_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; the caller holds no reference to it during bpf_loop.
    let s = unsafe { &mut *p };
    let j = index as usize;
    if j >= EXE_NAME_LEN - 1 {
        return 1;
    }
    let at = get(&s.start) + j;
    let b = if at < get(&s.len) {
        s.path[opaque(at) & PATH_MASK]
    } else {
        0
    };
    s.name[opaque(j) & (EXE_NAME_LEN - 1)] = b;
    0
}

#[inline(always)]
fn get(v: &u64) -> usize {
    // SAFETY: a plain load of a field of our per-CPU scratch value.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[inline(always)]
fn put(v: &mut u64, x: usize) {
    // SAFETY: a plain store to a field of our per-CPU scratch value.
    unsafe { core::ptr::write_volatile(v, x as u64) }
}

/// `x`, with every fact LLVM knew about it forgotten (see `fqdn::parse::opaque`).
#[inline(always)]
fn opaque(x: usize) -> usize {
    let mut v = 0usize;
    // SAFETY: volatile accesses of a local.
    unsafe {
        core::ptr::write_volatile(&mut v, x);
        core::ptr::read_volatile(&v)
    }
}

use aya_ebpf::EbpfContext as _;

/// Whether the current task's cgroup or any ancestor of it is a target cgroup: a `bpf_loop`
/// over the levels, ending at the task's own depth.
#[inline(always)]
fn in_target_cgroup() -> bool {
    let mut found: u64 = 0;
    // SAFETY: `cgroup_step` has the callback signature bpf_loop expects; its context is
    // `found`, a stack slot that outlives the call.
    unsafe {
        bpf_loop(
            MAX_CGROUP_DEPTH,
            cgroup_step as *const () as *mut core::ffi::c_void,
            (&mut found as *mut u64).cast(),
            0,
        )
    };
    found != 0
}

#[inline(never)]
extern "C" fn cgroup_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // Level 0 is the root cgroup, never a target.
    // SAFETY: plain helper call.
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(index as i32 + 1) };
    if id == 0 {
        return 1;
    }
    // SAFETY: read-only lookup; the value is not used.
    if unsafe { TARGET_CGROUPS.get(&id) }.is_some() {
        // SAFETY: `ctx` is the `found` slot `in_target_cgroup` passed.
        unsafe { *(ctx as *mut u64) = 1 };
        return 1;
    }
    0
}
