//! A minimal io_uring client on raw syscalls (no liburing), for the probe: one connect or
//! sendmsg submitted either forced onto an io-wq worker (`IOSQE_ASYNC`, a thread named
//! `iou-wrk-N`) or through a kernel submission thread (`IORING_SETUP_SQPOLL`, `iou-sqp-N`).
//! Both threads belong to the submitting process, and neither carries its comm.
use std::{net::SocketAddr, ptr};

const IORING_SETUP_SQPOLL: u32 = 1 << 1;
const IOSQE_ASYNC: u8 = 1 << 4;
const IORING_OP_SENDMSG: u8 = 9;
const IORING_OP_CONNECT: u8 = 16;
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_SQ_WAKEUP: u32 = 1 << 1;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// How the operation reaches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `IOSQE_ASYNC`: executed by an io-wq worker thread.
    Async,
    /// `IORING_SETUP_SQPOLL`: submitted by the ring's kernel SQ thread.
    SqPoll,
}

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// TCP connect().
    Connect,
    /// One UDP datagram by sendmsg() on an unconnected socket.
    SendMsg,
}

/// Runs `op` to `dst` through a fresh ring; `Ok(())` or the errno the completion carried.
pub fn run(op: Op, mode: Mode, dst: SocketAddr) -> Result<(), i32> {
    let (ss, len) = sockaddr(dst);
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = match op {
        Op::Connect => libc::SOCK_STREAM,
        Op::SendMsg => libc::SOCK_DGRAM,
    };
    // SAFETY: raw io_uring and socket syscalls on memory this function owns: the rings are
    // mapped with the sizes the kernel reported, every index is masked by the ring mask, and
    // the sockaddr, iovec and msghdr outlive the wait for the completion.
    unsafe {
        let sock = libc::socket(family, ty | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(errno());
        }
        let mut p = Params {
            flags: if mode == Mode::SqPoll {
                IORING_SETUP_SQPOLL
            } else {
                0
            },
            sq_thread_idle: 1000,
            ..Params::default()
        };
        let fd = libc::syscall(libc::SYS_io_uring_setup, 4u32, &raw mut p) as i32;
        if fd < 0 {
            let e = errno();
            libc::close(sock);
            return Err(e);
        }
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<Cqe>();
        let sqes_len = p.sq_entries as usize * size_of::<Sqe>();
        let map = |len: usize, off: i64| {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            )
        };
        let sq = map(sq_len, IORING_OFF_SQ_RING);
        let cq = map(cq_len, IORING_OFF_CQ_RING);
        let sqes = map(sqes_len, IORING_OFF_SQES);
        if sq == libc::MAP_FAILED || cq == libc::MAP_FAILED || sqes == libc::MAP_FAILED {
            return Err(errno());
        }
        let payload = *b"probe";
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut _,
            iov_len: payload.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&raw const ss) as *mut _;
        msg.msg_namelen = len;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        let sqe = match op {
            Op::Connect => Sqe {
                opcode: IORING_OP_CONNECT,
                fd: sock,
                addr: (&raw const ss) as u64,
                off: u64::from(len),
                ..Sqe::default()
            },
            Op::SendMsg => Sqe {
                opcode: IORING_OP_SENDMSG,
                fd: sock,
                addr: (&raw const msg) as u64,
                len: 1,
                ..Sqe::default()
            },
        };
        let sqe = Sqe {
            flags: if mode == Mode::Async { IOSQE_ASYNC } else { 0 },
            user_data: 7,
            ..sqe
        };
        let mask = *at::<u32>(sq, p.sq_off.ring_mask);
        let tail_ptr = at::<u32>(sq, p.sq_off.tail);
        let tail = ptr::read_volatile(tail_ptr);
        let idx = tail & mask;
        sqes.cast::<Sqe>().add(idx as usize).write(sqe);
        at::<u32>(sq, p.sq_off.array).add(idx as usize).write(idx);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        ptr::write_volatile(tail_ptr, tail.wrapping_add(1));
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let r = libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS | IORING_ENTER_SQ_WAKEUP,
            ptr::null::<libc::c_void>(),
            0usize,
        );
        let result = if r < 0 {
            Err(errno())
        } else {
            let head = ptr::read_volatile(at::<u32>(cq, p.cq_off.head));
            let cmask = *at::<u32>(cq, p.cq_off.ring_mask);
            let cqe = at::<Cqe>(cq, p.cq_off.cqes)
                .add((head & cmask) as usize)
                .read_volatile();
            ptr::write_volatile(at::<u32>(cq, p.cq_off.head), head.wrapping_add(1));
            match cqe.res {
                0.. => Ok(()),
                e => Err(-e),
            }
        };
        libc::munmap(sq, sq_len);
        libc::munmap(cq, cq_len);
        libc::munmap(sqes, sqes_len);
        libc::close(fd);
        libc::close(sock);
        result
    }
}

/// The field at byte offset `off` of a ring mapping (the kernel reports offsets aligned for
/// their fields; the mapping is page-aligned).
fn at<T>(base: *mut libc::c_void, off: u32) -> *mut T {
    base.cast::<T>().wrapping_byte_add(off as usize)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn sockaddr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_storage is valid; the family-specific view written fits in it.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        match sa {
            SocketAddr::V4(a) => {
                let sin = (&raw mut ss).cast::<libc::sockaddr_in>();
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_port = a.port().to_be();
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (ss, size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(a) => {
                let sin6 = (&raw mut ss).cast::<libc::sockaddr_in6>();
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_port = a.port().to_be();
                (*sin6).sin6_addr.s6_addr = a.ip().octets();
                (ss, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }
}
