//! Library target so the agent can list this crate as a build-dependency (cargo then rebuilds
//! the agent when the kernel programs change). The programs are in `main.rs`.
#![no_std]
