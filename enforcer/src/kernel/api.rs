//! The API guard's part of the kernel object (its cgroup_skb/ingress program is loaded and
//! attached with the others, see `super::progs`): its configuration per rule set, counters,
//! event ring, the targets' own cluster peers and the watchdog's socket marks. Its rules are
//! the ingress entries of the shared rule tries, written by [`super::Kernel::install`].
use std::{os::fd::AsRawFd, sync::Mutex};

use aya::{
    Ebpf,
    maps::{Array, HashMap as AyaHashMap, Map, MapData, PerCpuArray, RingBuf, SkStorage},
};
use enforcer_common::api::{ApiConfig, ClusterPeerKey, counter, map_names};

use super::{KernelError, map_err, maps::set_entries};
use crate::compile::CompiledApi;
use crate::policy::api::{ALERTMANAGER_DEFAULT_CLUSTER_PORT, ALERTMANAGER_DEFAULT_PORT};

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

/// The gossip ports the guard watches: the section's own, else the targets' cluster ports
/// (`cluster_listen_ports`: each `--cluster.listen-address`, none where it is empty), else
/// Alertmanager's default when no target was read yet.
pub fn guarded_cluster_ports(api: &CompiledApi, cluster_listen_ports: Option<&[u16]>) -> Vec<u16> {
    if api.cluster_ports.is_empty() {
        match cluster_listen_ports {
            Some(ports) => ports.to_vec(),
            None => vec![ALERTMANAGER_DEFAULT_CLUSTER_PORT],
        }
    } else {
        api.cluster_ports.clone()
    }
}

/// The targets' listening ports, the guard's defaults where the section names none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenPorts {
    /// `--web.listen-address` ports.
    pub web: Vec<u16>,
    /// `--cluster.listen-address` ports; `None` until the targets were read.
    pub cluster: Option<Vec<u16>>,
}

/// Writes the guard's configuration of rule set `set` (off without an `api:` section).
pub fn install(
    ebpf: &mut Ebpf,
    api: Option<&CompiledApi>,
    listen: &ListenPorts,
    generation: u32,
    set: u32,
) -> Result<(), KernelError> {
    let value = match api {
        Some(api) => api.config(
            &guarded_ports(api, &listen.web),
            &guarded_cluster_ports(api, listen.cluster.as_deref()),
            generation,
        ),
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
    /// Web port segments with a payload queued for the stream reassembly.
    pub stream_segments: u64,
    /// ... whose tail was longer than the kernel queues.
    pub stream_cut: u64,
    pub lost_events: u64,
    pub cluster_tcp_accepted: u64,
    pub cluster_tcp_refused: u64,
    pub cluster_tcp_would_refuse: u64,
    pub cluster_udp_accepted: u64,
    pub cluster_udp_refused: u64,
    pub cluster_udp_would_refuse: u64,
    pub watchdog_accepted: u64,
    pub cluster_joins: u64,
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
        stream_segments: total(counter::STREAM_SEGMENTS)?,
        stream_cut: total(counter::STREAM_CUT)?,
        lost_events: total(counter::LOST_EVENTS)?,
        cluster_tcp_accepted: total(counter::CLUSTER_TCP_ACCEPTED)?,
        cluster_tcp_refused: total(counter::CLUSTER_TCP_REFUSED)?,
        cluster_tcp_would_refuse: total(counter::CLUSTER_TCP_WOULD_REFUSE)?,
        cluster_udp_accepted: total(counter::CLUSTER_UDP_ACCEPTED)?,
        cluster_udp_refused: total(counter::CLUSTER_UDP_REFUSED)?,
        cluster_udp_would_refuse: total(counter::CLUSTER_UDP_WOULD_REFUSE)?,
        watchdog_accepted: total(counter::WATCHDOG_ACCEPTED)?,
        cluster_joins: total(counter::CLUSTER_JOINS)?,
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

/// Makes `API_CLUSTER_PEERS` hold exactly `keys`: each target's own literal `--cluster.peer`
/// addresses (new entries are written before stale ones go).
pub fn set_cluster_peers(ebpf: &mut Ebpf, keys: &[ClusterPeerKey]) -> Result<(), KernelError> {
    let name = map_names::API_CLUSTER_PEERS;
    let mut map: AyaHashMap<&mut MapData, ClusterPeerKey, u32> =
        AyaHashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    let want: Vec<(ClusterPeerKey, u32)> = keys.iter().map(|&k| (k, 1)).collect();
    set_entries(&mut map, name, &want)
}

/// Marks the agent's own watchdog sockets for the guard (`API_WATCHDOG_SOCKETS`): a socket
/// marked before it connects is let in on a web port whatever its address.
pub struct WatchdogMarks {
    map: Mutex<SkStorage<MapData, u32>>,
}

impl WatchdogMarks {
    /// Takes the map out of the object (once).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, KernelError> {
        let name = map_names::API_WATCHDOG_SOCKETS;
        let map = ebpf
            .take_map(name)
            .ok_or(KernelError::MissingMap { name })?;
        Ok(Self {
            map: Mutex::new(SkStorage::try_from(map).map_err(map_err(name))?),
        })
    }

    /// Marks `socket` (a TCP socket of this process, not yet connected).
    pub fn mark(&self, socket: &impl AsRawFd) -> std::io::Result<()> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| std::io::Error::other("watchdog mark map poisoned"))?;
        map.insert(socket, 1u32, 0).map_err(std::io::Error::other)
    }
}
