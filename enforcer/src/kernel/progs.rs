//! Loading and attaching the object's programs, one way for all of them: [`load`] (verifier,
//! then a pin for inspection when pinning) and [`attach_cgroup`] (a bpf_link on a cgroup, taken
//! out of aya's bookkeeping as an [`FdLink`]: pinned with [`LinkPins`], or held by the caller
//! and detached when dropped). aya 0.14 turns no `cgroup/setsockopt` link into an `FdLink`:
//! that one is created with `BPF_LINK_CREATE` here and held as a plain descriptor
//! ([`HeldLink::Raw`]).
use std::{
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Instant,
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkbAttachType, Program, ProgramError,
        links::{FdLink, LinkError},
    },
};

use super::{
    error::KernelError,
    pin::{LinkPins, Pins},
    verifier::LoadReport,
};
use crate::cgroup::Cgroup;

/// An unpinned cgroup link; dropping it detaches the program.
#[derive(Debug)]
#[expect(dead_code, reason = "held for its drop, which detaches the program")]
pub enum HeldLink {
    Fd(FdLink),
    Raw(OwnedFd),
}

/// `bpf_attach_type` of `cgroup/setsockopt` (uapi `BPF_CGROUP_SETSOCKOPT`).
const BPF_CGROUP_SETSOCKOPT: u32 = 22;
const BPF_LINK_CREATE: libc::c_long = 28;

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Program, KernelError> {
    ebpf.program_mut(name)
        .ok_or(KernelError::MissingProgram { name })
}

/// Loads program `name` (verifier included) and records what the verifier spent on it in
/// `report`; with `pins`, pins it under `progs/` for inspection (bpftool): the links keep
/// programs alive, not these pins.
pub fn load(
    ebpf: &mut Ebpf,
    name: &'static str,
    pins: Option<&Pins>,
    report: &mut LoadReport,
) -> Result<(), KernelError> {
    let started = Instant::now();
    let loaded = match program(ebpf, name)? {
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockopt(p) => p.load(),
        Program::TracePoint(p) => p.load(),
        _ => Err(ProgramError::UnexpectedProgramType),
    };
    report.record(ebpf, name, started.elapsed(), loaded.as_ref().copied());
    loaded.map_err(|source| KernelError::Program { name, source })?;
    if let Some(p) = pins {
        let path = p.progs_dir().join(name);
        let _ = std::fs::remove_file(&path);
        program(ebpf, name)?
            .pin(&path)
            .map_err(|source| KernelError::Pin {
                what: "program",
                path,
                source,
            })?;
    }
    Ok(())
}

/// Attaches cgroup program `name` to `cgroup` with a bpf_link (kernel >= 5.7; link
/// attachments always coexist with other programs of the cgroup, and the kernel rejects attach
/// flags on links, hence `CgroupAttachMode::Single`, which aya passes as 0). A `cgroup_skb`
/// program is attached to the ingress path, except the packet-layer backstop and the DNS query
/// recorder (egress). With
/// `link_pins` the link is pinned there and `None` returned; otherwise the link is returned and
/// lives as long as the caller keeps it.
pub fn attach_cgroup(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &Cgroup,
    link_pins: Option<&mut LinkPins>,
) -> Result<Option<HeldLink>, KernelError> {
    let attach_err = |source| KernelError::Attach {
        name,
        cgroup: cgroup.path.display().to_string(),
        source,
    };
    let prog_err = |source| KernelError::Program { name, source };
    let link_err = |source: LinkError| KernelError::Link {
        name,
        cgroup: cgroup.path.display().to_string(),
        source,
    };
    let mode = CgroupAttachMode::Single;
    let link = match program(ebpf, name)? {
        Program::CgroupSockAddr(p) => {
            let id = p.attach(&cgroup.dir, mode).map_err(attach_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(link_err)?
        }
        Program::CgroupSkb(p) => {
            let path = if name == enforcer_common::sockets::prog_names::PACKET_EGRESS
                || name == enforcer_common::fqdn::PROG_DNS_EGRESS
            {
                CgroupSkbAttachType::Egress
            } else {
                CgroupSkbAttachType::Ingress
            };
            let id = p.attach(&cgroup.dir, path, mode).map_err(attach_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(link_err)?
        }
        Program::CgroupSock(p) => {
            let id = p.attach(&cgroup.dir, mode).map_err(attach_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(link_err)?
        }
        Program::CgroupSockopt(p) => {
            let prog = p.fd().map_err(prog_err)?.as_fd().as_raw_fd();
            let raw = link_create(prog, cgroup.dir.as_raw_fd(), BPF_CGROUP_SETSOCKOPT)
                .map_err(|e| attach_err(ProgramError::IOError(e)))?;
            return match link_pins {
                Some(pins) => {
                    pins.pin_fd(name, &raw)?;
                    Ok(None)
                }
                None => Ok(Some(HeldLink::Raw(raw))),
            };
        }
        _ => return Err(prog_err(ProgramError::UnexpectedProgramType)),
    };
    match link_pins {
        Some(pins) => {
            pins.pin(name, link)?;
            Ok(None)
        }
        None => Ok(Some(HeldLink::Fd(link))),
    }
}

/// `BPF_LINK_CREATE` of program `prog` on cgroup `cgroup` (no flags: links always coexist).
fn link_create(prog: i32, cgroup: i32, attach_type: u32) -> std::io::Result<OwnedFd> {
    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags; the rest zero.
    let mut attr = [0u32; 16];
    attr[0] = prog as u32;
    attr[1] = cgroup as u32;
    attr[2] = attach_type;
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of the zero-filled attribute.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
