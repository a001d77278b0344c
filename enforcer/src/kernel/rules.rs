//! Writing one rule set's entries: full-length entries that fit an [`ExactValue`] into the
//! family's exact hash map, every other entry into its LPM trie ([`enforcer_common::is_exact`],
//! the rule [`crate::compile::Capacity`] counts by), egress and ingress alike.
use aya::{
    Ebpf,
    maps::{HashMap as AyaHashMap, LpmTrie, MapData, lpm_trie::Key},
};
use enforcer_common::{
    ExactValue, LpmValue, V4_KEY_LEN, V6_KEY_LEN, direction, is_exact, map_names,
    rules::{key_prefix_len, v4_key, v6_key},
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{KernelError, clear_trie, map_err};
use crate::compile::{Compiled, Entries};

/// Clears rule set `set` (trie and exact map of both families) and writes `compiled` into it.
pub(super) fn write(ebpf: &mut Ebpf, compiled: &Compiled, set: usize) -> Result<(), KernelError> {
    let api = compiled.api.as_ref();
    let v4: [(u8, Option<&Entries<Ipv4Net>>); 2] = [
        (direction::EGRESS, Some(&compiled.v4)),
        (direction::INGRESS, api.map(|a| &a.v4)),
    ];
    write_family(
        ebpf,
        (map_names::V4_RULES[set], map_names::V4_EXACT[set]),
        32,
        &v4,
        |dir, net: Ipv4Net| (net.prefix_len(), v4_key(dir, net.network().octets())),
    )?;
    let v6: [(u8, Option<&Entries<Ipv6Net>>); 2] = [
        (direction::EGRESS, Some(&compiled.v6)),
        (direction::INGRESS, api.map(|a| &a.v6)),
    ];
    write_family(
        ebpf,
        (map_names::V6_RULES[set], map_names::V6_EXACT[set]),
        128,
        &v6,
        |dir, net: Ipv6Net| (net.prefix_len(), v6_key(dir, net.network().octets())),
    )
}

/// Empties rule set `set` (trie and exact map of both families); programs must no longer read
/// it.
pub(super) fn clear(ebpf: &mut Ebpf, set: usize) -> Result<(), KernelError> {
    clear_family::<{ V4_KEY_LEN }>(ebpf, (map_names::V4_RULES[set], map_names::V4_EXACT[set]))?;
    clear_family::<{ V6_KEY_LEN }>(ebpf, (map_names::V6_RULES[set], map_names::V6_EXACT[set]))
}

fn clear_family<const K: usize>(
    ebpf: &mut Ebpf,
    (trie_name, exact_name): (&'static str, &'static str),
) -> Result<(), KernelError> {
    let map = ebpf
        .map_mut(exact_name)
        .ok_or(KernelError::MissingMap { name: exact_name })?;
    let mut exact: AyaHashMap<&mut MapData, [u8; K], ExactValue> =
        AyaHashMap::try_from(map).map_err(map_err(exact_name))?;
    let stale = exact
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(exact_name))?;
    for k in stale {
        exact.remove(&k).map_err(map_err(exact_name))?;
    }
    let map = ebpf
        .map_mut(trie_name)
        .ok_or(KernelError::MissingMap { name: trie_name })?;
    let mut trie: LpmTrie<&mut MapData, [u8; K], LpmValue> =
        LpmTrie::try_from(map).map_err(map_err(trie_name))?;
    clear_trie(&mut trie).map_err(map_err(trie_name))
}

/// One family: clear both maps, then write each direction's entries where they belong.
fn write_family<N: Copy, const K: usize>(
    ebpf: &mut Ebpf,
    (trie_name, exact_name): (&'static str, &'static str),
    full_len: u8,
    entries: &[(u8, Option<&Entries<N>>)],
    key: impl Fn(u8, N) -> (u8, [u8; K]),
) -> Result<(), KernelError> {
    clear_family::<K>(ebpf, (trie_name, exact_name))?;
    {
        let map = ebpf
            .map_mut(exact_name)
            .ok_or(KernelError::MissingMap { name: exact_name })?;
        let mut exact: AyaHashMap<&mut MapData, [u8; K], ExactValue> =
            AyaHashMap::try_from(map).map_err(map_err(exact_name))?;
        for (dir, e) in entries {
            let Some(e) = e else { continue };
            for i in 0..e.len() {
                let (len, data) = key(*dir, e.net(i));
                let clauses = e.clauses(i);
                if is_exact(len, full_len, clauses.len()) {
                    exact
                        .insert(data, ExactValue::of(clauses), 0)
                        .map_err(map_err(exact_name))?;
                }
            }
        }
    }
    let map = ebpf
        .map_mut(trie_name)
        .ok_or(KernelError::MissingMap { name: trie_name })?;
    let mut trie: LpmTrie<&mut MapData, [u8; K], LpmValue> =
        LpmTrie::try_from(map).map_err(map_err(trie_name))?;
    for (dir, e) in entries {
        let Some(e) = e else { continue };
        for i in 0..e.len() {
            let (len, data) = key(*dir, e.net(i));
            let clauses = e.clauses(i);
            if !is_exact(len, full_len, clauses.len()) {
                let key = Key::new(key_prefix_len(u32::from(len)), data);
                trie.insert(&key, LpmValue::of(clauses), 0)
                    .map_err(map_err(trie_name))?;
            }
        }
    }
    Ok(())
}
