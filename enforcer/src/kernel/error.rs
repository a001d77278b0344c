//! The one error type of the kernel layer (loading, attaching, maps, pins).
use std::path::PathBuf;

use aya::{maps::MapError, programs::ProgramError};

/// What went wrong in the kernel layer. Each variant names what it was doing; the cause is its
/// [`source`](std::error::Error::source), printed once by [`crate::error_chain`].
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("this agent was built with AYA_BUILD_SKIP=1 and carries no kernel programs")]
    NoObject,
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {name} to {cgroup}")]
    Attach {
        name: &'static str,
        cgroup: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not on a bpf filesystem and no bpffs could be mounted there")]
    NotBpffs { path: PathBuf },
    #[error("pinning {what} at {path}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed")]
    Tracefs {
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason} (the identity programs read that layout)")]
    TracepointFormat { path: PathBuf, reason: String },
    #[error(
        "{dir}: a newer enforcer release pinned its programs here (pin layout v{found}; this \
         release uses v{ours}), and a release never runs beside or over a newer one: run the \
         newer release, or remove its pins first with `enforcer detach` (enforcement stops \
         until this release attaches)"
    )]
    NewerLayout { dir: PathBuf, found: u32, ours: u32 },
    #[error(
        "another enforcer agent still holds the lock on {dir} after {waited:?}: two agents never \
         share a bpffs directory; stop the other agent (this one takes over once it exits), or \
         give this one another --bpffs-dir"
    )]
    Locked {
        dir: PathBuf,
        waited: std::time::Duration,
    },
    #[error("converting the {name} link of {cgroup} to a bpf_link")]
    Link {
        name: &'static str,
        cgroup: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
}

/// Adds the map's name to an error of one of its operations.
pub fn map_err(name: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}
