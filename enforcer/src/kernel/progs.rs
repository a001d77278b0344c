//! Loading and attaching the object's programs, one way for all of them: [`load`] (verifier,
//! then a pin for inspection when pinning) and [`attach_cgroup`] (a bpf_link on a cgroup, taken
//! out of aya's bookkeeping as an [`FdLink`]: pinned with [`LinkPins`], or held by the caller
//! and detached when dropped).
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
};
use crate::cgroup::Cgroup;

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Program, KernelError> {
    ebpf.program_mut(name)
        .ok_or(KernelError::MissingProgram { name })
}

/// Loads program `name` (verifier included); with `pins`, pins it under `progs/` for
/// inspection (bpftool): the links keep programs alive, not these pins.
pub fn load(ebpf: &mut Ebpf, name: &'static str, pins: Option<&Pins>) -> Result<(), KernelError> {
    let prog = program(ebpf, name)?;
    let loaded = match prog {
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::CgroupSock(p) => p.load(),
        Program::TracePoint(p) => p.load(),
        _ => Err(ProgramError::UnexpectedProgramType),
    };
    loaded.map_err(|source| KernelError::Program { name, source })?;
    if let Some(p) = pins {
        let path = p.progs_dir().join(name);
        let _ = std::fs::remove_file(&path);
        prog.pin(&path).map_err(|source| KernelError::Pin {
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
/// program is attached to the ingress path. With `link_pins` the link is pinned there and
/// `None` returned; otherwise the link is returned and lives as long as the caller keeps it.
pub fn attach_cgroup(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &Cgroup,
    link_pins: Option<&mut LinkPins>,
) -> Result<Option<FdLink>, KernelError> {
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
            let id = p
                .attach(&cgroup.dir, CgroupSkbAttachType::Ingress, mode)
                .map_err(attach_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(link_err)?
        }
        Program::CgroupSock(p) => {
            let id = p.attach(&cgroup.dir, mode).map_err(attach_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(link_err)?
        }
        _ => return Err(prog_err(ProgramError::UnexpectedProgramType)),
    };
    match link_pins {
        Some(pins) => {
            pins.pin(name, link)?;
            Ok(None)
        }
        None => Ok(Some(link)),
    }
}
