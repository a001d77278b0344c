//! Helpers over the maps shared by the loader and the FQDN part, and the verdict counters'
//! totals.
use aya::maps::{HashMap as AyaHashMap, LpmTrie, MapData, MapError};
use enforcer_common::{LpmValue, hook};

use super::error::{KernelError, map_err};

/// Makes the hash map `name` hold exactly `wanted`: every wanted entry is written before any
/// other key is removed, so a key that stays is never missing in between.
pub fn set_entries<K: aya::Pod + PartialEq, V: aya::Pod>(
    map: &mut AyaHashMap<&mut MapData, K, V>,
    name: &'static str,
    wanted: &[(K, V)],
) -> Result<(), KernelError> {
    for (key, value) in wanted {
        map.insert(key, value, 0).map_err(map_err(name))?;
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.iter().any(|(w, _)| w == k))
        .collect();
    for key in stale {
        map.remove(&key).map_err(map_err(name))?;
    }
    Ok(())
}

/// Totals of the per-CPU verdict counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub allowed: [u64; hook::COUNT],
    pub denied: [u64; hook::COUNT],
    pub would_deny: [u64; hook::COUNT],
    pub lost_events: u64,
}

/// Removes every key of an LPM trie (keys are collected first: deleting while walking with
/// get_next_key restarts the walk).
pub fn clear_trie<const N: usize>(
    trie: &mut LpmTrie<&mut MapData, [u8; N], LpmValue>,
) -> Result<(), MapError> {
    let keys = trie.keys().collect::<Result<Vec<_>, _>>()?;
    for key in keys {
        trie.remove(&key)?;
    }
    Ok(())
}
