//! The event ring: its size, when a program wakes the agent, and the records it carries.

/// Size of the event ring buffer in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Programs skip the userspace wakeup until about this much is queued; the agent also drains
/// the ring on a short timer. A wakeup per event costs ~2.6 µs per denied call, no wakeup
/// ~170 ns. A power of two. The deny programs wake the agent on every [`wake_every`]-th record
/// a CPU queues, which bounds the records queued without a wakeup by this many bytes.
pub const EVENTS_WAKEUP_BYTES: u64 = (EVENTS_BYTES as u64) / 4;

/// Bytes a record of `size` bytes takes in a BPF ring buffer: the ring's 8-byte header, the
/// whole rounded up to 8.
pub const fn ring_record_bytes(size: usize) -> u64 {
    (size as u64 + 8).div_ceil(8) * 8
}

/// Bytes one [`DenyEvent`] takes in the ring.
pub const DENY_RECORD_BYTES: u64 = ring_record_bytes(core::mem::size_of::<DenyEvent>());

/// The global (a constant the agent writes when it loads the object, like [`crate::SCOPED_GLOBAL`])
/// holding [`wake_every`] for this machine's possible CPUs.
pub const WAKE_EVERY_GLOBAL: &str = "WAKE_EVERY";

/// How many deny records one CPU queues per wakeup of the agent: the largest power of two `k`
/// with `cpus × k × record ≤ step` (at least 1). Every CPU wakes the agent on its `k`-th,
/// `2k`-th, … record, so the records that have not caused a wakeup are fewer than `k` per CPU:
/// less than `step` bytes in all, as a count of the ring's queued bytes would give, without the
/// kernel call that asks the ring for it (one of the deny path's costs, issue 17).
pub const fn wake_every(cpus: u32, record: u64, step: u64) -> u32 {
    let cpus = if cpus == 0 { 1 } else { cpus as u64 };
    let record = if record == 0 { 1 } else { record };
    let most = step / (cpus * record);
    if most <= 1 {
        1
    } else {
        // Largest power of two ≤ most, and never above 2^31.
        let k = 1u64 << most.ilog2();
        if k > 1 << 31 { 1 << 31 } else { k as u32 }
    }
}

/// Whether the `queued`-th record a CPU queued (counting from 1) wakes the agent, with
/// `every` from [`wake_every`] (a power of two).
#[inline(always)]
pub fn wakes(queued: u64, every: u32) -> bool {
    queued & (u64::from(every) - 1) == 0
}

/// Whether queuing a record of `record` bytes, after which `avail` bytes are queued, crossed a
/// multiple of `step` (a power of two): the one record of each such step that wakes the
/// consumer. Waking on every record past a threshold instead costs a wakeup per record during
/// a flood, until the consumer has drained (measured on the deny path: ~350 ns per denial
/// instead of ~270 ns).
#[inline(always)]
pub fn wakeup_crossed(avail: u64, record: u64, step: u64) -> bool {
    avail / step != avail.saturating_sub(record) / step
}

/// Length of a task's comm (TASK_COMM_LEN), as events carry it.
pub const COMM_LEN: usize = 16;

/// Event kinds in [`EventHeader::kind`].
pub mod event_kind {
    /// A call was denied (enforce mode).
    pub const DENIED: u16 = 1;
    /// A call would have been denied (audit mode); it was allowed.
    pub const WOULD_DENY: u16 = 2;
}

/// Version of the event layout; bump when [`DenyEvent`] changes.
pub const EVENT_VERSION: u16 = 1;

/// Fixed header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u16,
    pub version: u16,
    /// Size of the whole record in bytes.
    pub len: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); 0 in a [`DenyEvent`], which the deny path does
    /// not stamp (the agent's line carries the time it drained the record).
    pub ts_ns: u64,
    pub cgroup_id: u64,
}

/// A denied (or would-be-denied) call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyEvent {
    pub header: EventHeader,
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Rule that decided, or [`crate::rule_id::DEFAULT`].
    pub rule_id: u32,
    /// [`crate::Config::generation`] of the rule set that decided.
    pub generation: u32,
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// [`crate::hook`] code.
    pub hook: u8,
    /// IP protocol number of the socket (6 tcp, 17 udp, ...).
    pub protocol: u8,
    /// Address family the caller used (2 AF_INET, 10 AF_INET6).
    pub family: u16,
    pub _pad: u16,
    /// Destination as the caller passed it: IPv4 in the first 4 bytes, IPv6 in all 16,
    /// network byte order.
    pub dst_addr: [u8; 16],
    pub comm: [u8; 16],
}
