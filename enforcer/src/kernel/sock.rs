//! The `cgroup/sock_create` program: refuses UDP-Lite sockets to targets, because no connect
//! hook runs for them (see `enforcer-ebpf/src/main.rs`, `enforcer_sock_create`).
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSock, cgroup_sock::CgroupSockLinkId},
};
use enforcer_common::prog_names::SOCK_CREATE;

use super::{
    error::KernelError,
    pin::{LinkPins, Pins},
};
use crate::cgroup::Cgroup;

fn program(ebpf: &mut Ebpf) -> Result<&mut CgroupSock, KernelError> {
    let name = SOCK_CREATE;
    ebpf.program_mut(name)
        .ok_or(KernelError::MissingProgram { name })?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })
}

/// Loads the program; with pinning, pins it for inspection like the connect programs.
pub fn load(ebpf: &mut Ebpf, pins: Option<&Pins>) -> Result<(), KernelError> {
    let name = SOCK_CREATE;
    let prog = program(ebpf)?;
    prog.load()
        .map_err(|source| KernelError::Program { name, source })?;
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

/// Attaches the program to the cgroup with a bpf_link: pinned with `link_pins` when given,
/// otherwise held by the program object and its id returned.
pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: &Cgroup,
    link_pins: Option<&mut LinkPins>,
) -> Result<Option<CgroupSockLinkId>, KernelError> {
    let name = SOCK_CREATE;
    let prog = program(ebpf)?;
    let link_id = prog
        .attach(&cgroup.dir, CgroupAttachMode::Single)
        .map_err(|source| KernelError::Attach {
            name,
            cgroup: cgroup.path.display().to_string(),
            source,
        })?;
    let Some(pins) = link_pins else {
        return Ok(Some(link_id));
    };
    let link = prog
        .take_link(link_id)
        .map_err(|source| KernelError::Program { name, source })?;
    pins.pin(name, &cgroup.path, link)?;
    Ok(None)
}

/// Detaches a link [`attach`] held.
pub fn detach(ebpf: &mut Ebpf, link_id: CgroupSockLinkId) -> Result<(), KernelError> {
    let name = SOCK_CREATE;
    program(ebpf)?
        .detach(link_id)
        .map_err(|source| KernelError::Program { name, source })
}
