//! The API guard's part of the kernel object (its cgroup_skb/ingress program is loaded and
//! attached with the others, see `super::progs`): its configuration per rule set, counters and event ring. Its rules are the ingress entries of
//! the shared rule tries, written by [`super::Kernel::install`].
use aya::{
    Ebpf,
    maps::{Array, HashMap as AyaHashMap, Map, MapData, PerCpuArray, RingBuf},
};
use enforcer_common::api::{ApiConfig, counter, map_names};

use super::{KernelError, map_err, maps::set_entries};
use crate::compile::CompiledApi;
use crate::policy::api::ALERTMANAGER_DEFAULT_PORT;

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, KernelError> {
    ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })
}

/// The ports the guard watches: the section's own, else the targets' listening ports
/// (`listen_ports`), else Alertmanager's default.
pub fn guarded_ports(api: &CompiledApi, listen_ports: &[u16]) -> Vec<u16> {
    if !api.ports.is_empty() {
        api.ports.clone()
    } else if !listen_ports.is_empty() {
        listen_ports.to_vec()
    } else {
        vec![ALERTMANAGER_DEFAULT_PORT]
    }
}

/// Writes the guard's configuration of rule set `set` (off without an `api:` section).
pub fn install(
    ebpf: &mut Ebpf,
    api: Option<&CompiledApi>,
    listen_ports: &[u16],
    generation: u32,
    set: u32,
) -> Result<(), KernelError> {
    let value = match api {
        Some(api) => api.config(&guarded_ports(api, listen_ports), generation),
        None => ApiConfig {
            generation,
            ..ApiConfig::default()
        },
    };
    let name = map_names::API_CONFIG;
    let mut config: Array<&mut MapData, ApiConfig> =
        Array::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    config.set(set, value, 0).map_err(map_err(name))
}

/// Totals of the guard's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiCounters {
    pub accepted: u64,
    pub refused: u64,
    pub would_refuse: u64,
    pub reports_suppressed: u64,
    pub writes: u64,
    pub reads: u64,
    pub lost_events: u64,
}

pub fn counters(ebpf: &Ebpf) -> Result<ApiCounters, KernelError> {
    let name = map_names::API_COUNTERS;
    let map = ebpf.map(name).ok_or(KernelError::MissingMap { name })?;
    let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err(name))?;
    let total = |i: u32| -> Result<u64, KernelError> {
        Ok(counters.get(&i, 0).map_err(map_err(name))?.iter().sum())
    };
    Ok(ApiCounters {
        accepted: total(counter::ACCEPTED)?,
        refused: total(counter::REFUSED)?,
        would_refuse: total(counter::WOULD_REFUSE)?,
        reports_suppressed: total(counter::REPORTS_SUPPRESSED)?,
        writes: total(counter::WRITES)?,
        reads: total(counter::READS)?,
        lost_events: total(counter::LOST_EVENTS)?,
    })
}

/// Takes the guard's event ring out of the object (once).
pub fn take_events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, KernelError> {
    let name = map_names::API_EVENTS;
    let map = ebpf
        .take_map(name)
        .ok_or(KernelError::MissingMap { name })?;
    RingBuf::try_from(map).map_err(map_err(name))
}

/// Scope mode: the cgroup ids the target Alertmanager processes run in, whose sockets the guard
/// decides (new ids are added before stale ones go).
pub fn set_cgroups(ebpf: &mut Ebpf, ids: &[u64]) -> Result<(), KernelError> {
    let name = map_names::API_CGROUPS;
    let mut map: AyaHashMap<&mut MapData, u64, u32> =
        AyaHashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    let want: Vec<(u64, u32)> = ids.iter().map(|&id| (id, 1)).collect();
    set_entries(&mut map, name, &want)
}
