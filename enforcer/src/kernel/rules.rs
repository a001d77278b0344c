//! Writing one rule set's entries: full-length entries that fit an [`ExactValue`] into the
//! family's exact hash map, every other entry into its LPM trie ([`enforcer_common::is_exact`],
//! the rule [`crate::compile::Capacity`] counts by), and the IPv4 block entries the compiler
//! folded ([`crate::compile::blocks`]) into the block map, egress and ingress alike.
use aya::{
    Ebpf,
    maps::{HashMap as AyaHashMap, LpmTrie, MapData, lpm_trie::Key},
};
use enforcer_common::{
    BlockValue, ExactValue, LpmValue, V4_KEY_LEN, V6_KEY_LEN, direction, is_exact, map_names,
    rules::{key_prefix_len, v4_block_key, v4_key, v6_key},
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{KernelError, clear_trie, map_err};
use crate::compile::{Blocks, Compiled, Entries};

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
    let blocks: [(u8, Option<&Blocks>); 2] = [
        (direction::EGRESS, Some(&compiled.v4_blocks)),
        (direction::INGRESS, api.map(|a| &a.v4_blocks)),
    ];
    write_blocks(ebpf, map_names::V4_BLOCKS[set], &blocks)?;
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
    clear_hash::<4, BlockValue>(ebpf, map_names::V4_BLOCKS[set])?;
    clear_family::<{ V4_KEY_LEN }>(ebpf, (map_names::V4_RULES[set], map_names::V4_EXACT[set]))?;
    clear_family::<{ V6_KEY_LEN }>(ebpf, (map_names::V6_RULES[set], map_names::V6_EXACT[set]))
}

/// Empties the hash map `name`.
fn clear_hash<const K: usize, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<(), KernelError> {
    let map = ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?;
    let mut hash: AyaHashMap<&mut MapData, [u8; K], V> =
        AyaHashMap::try_from(map).map_err(map_err(name))?;
    let stale = hash
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(name))?;
    for k in stale {
        hash.remove(&k).map_err(map_err(name))?;
    }
    Ok(())
}

/// Clears the block map `name` and writes each direction's block entries into it.
fn write_blocks(
    ebpf: &mut Ebpf,
    name: &'static str,
    blocks: &[(u8, Option<&Blocks>)],
) -> Result<(), KernelError> {
    clear_hash::<4, BlockValue>(ebpf, name)?;
    let map = ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?;
    let mut hash: AyaHashMap<&mut MapData, [u8; 4], BlockValue> =
        AyaHashMap::try_from(map).map_err(map_err(name))?;
    for (dir, b) in blocks {
        let Some(b) = b else { continue };
        for i in 0..b.len() {
            let key = v4_block_key(*dir, b.net(i).network().octets());
            hash.insert(key, b.value(i), 0).map_err(map_err(name))?;
        }
    }
    Ok(())
}

fn clear_family<const K: usize>(
    ebpf: &mut Ebpf,
    (trie_name, exact_name): (&'static str, &'static str),
) -> Result<(), KernelError> {
    clear_hash::<K, ExactValue>(ebpf, exact_name)?;
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
