//! The FQDN part of the kernel object: the FQDN maps (the DNS-learning program is loaded and
//! attached with the others, see `super::progs`).
use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, RingBuf},
};
use enforcer_common::{
    ACTIVE_SETS,
    fqdn::{FqdnEntry, FqdnSettings, NameKey, PortKey, counter, map_names},
};

use super::{
    error::{KernelError, map_err},
    maps::set_entries,
};
use crate::fqdn::FqdnTables;

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, KernelError> {
    ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })
}

/// Writes the port tables of rule set `set` (read by the verdict only after `ACTIVE` flips to
/// it), then the allowlisted names and the learning settings. Names are added before stale ones
/// are removed, so a name in both policies is never missing.
pub fn install(
    ebpf: &mut Ebpf,
    tables: &FqdnTables,
    set: u32,
    scoped: bool,
) -> Result<(), KernelError> {
    let set = set % ACTIVE_SETS;
    {
        let name = map_names::ANY_PORT;
        let mut any: Array<&mut MapData, u64> =
            Array::try_from(map(ebpf, name)?).map_err(map_err(name))?;
        for (c, mask) in tables.any_port.iter().enumerate() {
            any.set(set * 3 + c as u32, mask, 0)
                .map_err(map_err(name))?;
        }
    }
    {
        let name = map_names::PORTS;
        let mut ports: HashMap<&mut MapData, PortKey, u64> =
            HashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
        let stale: Vec<PortKey> = ports
            .keys()
            .filter_map(Result::ok)
            .filter(|k| u32::from(k.set) == set && !tables.ports.contains_key(&(k.class, k.port)))
            .collect();
        for key in stale {
            ports.remove(&key).map_err(map_err(name))?;
        }
        for (&(class, port), mask) in &tables.ports {
            let key = PortKey {
                set: set as u8,
                class,
                port,
            };
            ports.insert(key, mask, 0).map_err(map_err(name))?;
        }
    }
    for (name, wanted) in [
        (map_names::EXACT, &tables.exact),
        (map_names::WILDCARD, &tables.wildcard),
    ] {
        let mut names: HashMap<&mut MapData, NameKey, u64> =
            HashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
        let wanted: Vec<(NameKey, u64)> = wanted.iter().map(|(k, m)| (*k, *m)).collect();
        set_entries(&mut names, name, &wanted)?;
    }
    let name = map_names::SETTINGS;
    let mut settings: Array<&mut MapData, FqdnSettings> =
        Array::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    let mut value = tables.settings;
    if scoped {
        // Only a target's DNS socket teaches (see `enforcer_common::identity`).
        value.flags |= enforcer_common::fqdn::flags::REQUIRE_TARGET_SOCKET;
    }
    settings.set(0, value, 0).map_err(map_err(name))
}

/// The address maps of one family.
pub struct AddressMaps<const N: usize> {
    pub learned: HashMap<MapData, [u8; N], FqdnEntry>,
    pub resolved: HashMap<MapData, [u8; N], FqdnEntry>,
}

/// The FQDN maps the agent works with, taken out of the object.
pub struct FqdnMaps {
    pub v4: AddressMaps<4>,
    pub v6: AddressMaps<16>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Taken by the agent's task, which polls it.
    pub events: Option<RingBuf<MapData>>,
}

impl FqdnMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, KernelError> {
        fn take_hash<const N: usize>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<HashMap<MapData, [u8; N], FqdnEntry>, KernelError> {
            let m = ebpf
                .take_map(name)
                .ok_or(KernelError::MissingMap { name })?;
            HashMap::try_from(m).map_err(map_err(name))
        }
        let counters = {
            let name = map_names::COUNTERS;
            let m = ebpf
                .take_map(name)
                .ok_or(KernelError::MissingMap { name })?;
            PerCpuArray::try_from(m).map_err(map_err(name))?
        };
        let events = {
            let name = map_names::EVENTS;
            let m = ebpf
                .take_map(name)
                .ok_or(KernelError::MissingMap { name })?;
            RingBuf::try_from(m).map_err(map_err(name))?
        };
        Ok(Self {
            v4: AddressMaps {
                learned: take_hash(ebpf, map_names::LEARNED_V4)?,
                resolved: take_hash(ebpf, map_names::RESOLVED_V4)?,
            },
            v6: AddressMaps {
                learned: take_hash(ebpf, map_names::LEARNED_V6)?,
                resolved: take_hash(ebpf, map_names::RESOLVED_V6)?,
            },
            counters,
            events: Some(events),
        })
    }

    /// Writes (or with `None`, removes) the agent's entry for `ip` (normalised).
    pub fn set_resolved(&mut self, ip: IpAddr, entry: Option<FqdnEntry>) -> Result<(), MapError> {
        let r = match (ip, entry) {
            (IpAddr::V4(a), Some(e)) => self.v4.resolved.insert(a.octets(), e, 0),
            (IpAddr::V6(a), Some(e)) => self.v6.resolved.insert(a.octets(), e, 0),
            (IpAddr::V4(a), None) => self.v4.resolved.remove(&a.octets()),
            (IpAddr::V6(a), None) => self.v6.resolved.remove(&a.octets()),
        };
        match r {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    }

    /// The kernel's learned entry for `ip`.
    pub fn learned(&self, ip: IpAddr) -> Option<FqdnEntry> {
        match ip {
            IpAddr::V4(a) => self.v4.learned.get(&a.octets(), 0).ok(),
            IpAddr::V6(a) => self.v6.learned.get(&a.octets(), 0).ok(),
        }
    }

    /// Removes the learned entry for `ip` if it still equals `seen` (the kernel did not refresh
    /// it since). The check and the removal are two syscalls: a refresh landing between them is
    /// lost, and that address is denied until the process resolves it again (fail closed).
    pub fn remove_learned_if(&mut self, ip: IpAddr, seen: FqdnEntry) -> bool {
        if self.learned(ip) != Some(seen) {
            return false;
        }
        match ip {
            IpAddr::V4(a) => self.v4.learned.remove(&a.octets()).is_ok(),
            IpAddr::V6(a) => self.v6.learned.remove(&a.octets()).is_ok(),
        }
    }

    /// Every learned address with its entry.
    pub fn learned_entries(&self) -> Vec<(IpAddr, FqdnEntry)> {
        let v4 = self
            .v4
            .learned
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (IpAddr::from(k), v));
        let v6 = self
            .v6
            .learned
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (IpAddr::from(k), v));
        v4.chain(v6).collect()
    }

    /// The learning program's counters, summed over CPUs.
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }
}
