//! The cluster (gossip) port: who the receiving target is, its own `--cluster.peer`s, and the
//! join lines of allowed peers.
//!
//! The receiving target is the process that created the listening or UDP socket: its socket
//! mark (`sock_create` records the creator in the socket itself, [`crate::sock::mark_of`]),
//! never anything the packet says. A socket created before the agent attached has no mark; its
//! cgroup stands in ([`owner::CGROUP`]), whose entries are the peers of the Alertmanager
//! targets in that cgroup.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_skb_cgroup_id},
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::SkBuffContext,
};
use enforcer_common::{
    api::{
        CLUSTER_REJOIN_NS, CLUSTER_SEEN_REFRESH_NS, ClusterPeerKey, MAX_CLUSTER_PEERS,
        MAX_CLUSTER_SEEN, counter, event_kind, owner as owner_kind,
    },
    proto::IPPROTO_UDP,
};

use super::{ApiConfig, Meta, Segment, count, emit, within_rate};
use crate::{Dst, sock, words_to_bytes};

#[map]
static API_CLUSTER_PEERS: HashMap<ClusterPeerKey, u32> =
    HashMap::with_max_entries(MAX_CLUSTER_PEERS, 0);
#[map]
static API_CLUSTER_SEEN: LruHashMap<[u8; 20], u64> =
    LruHashMap::with_max_entries(MAX_CLUSTER_SEEN, 0);

/// The tgid that created the packet's socket, 0 when it carries no mark.
#[inline(always)]
pub(super) fn owner(ctx: &SkBuffContext) -> u32 {
    // SAFETY: the kernel hands every cgroup_skb program a valid `__sk_buff`.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is the packet's socket (`__sk_buff.sk`, checked non-null above).
    unsafe { sock::mark_of(sk) }.map_or(0, |m| m.tgid)
}

/// Whether `peer` is one of the receiving target's own literal `--cluster.peer` addresses.
#[inline(always)]
pub(super) fn own_peer(ctx: &SkBuffContext, owner_tgid: u32, peer: &Dst) -> bool {
    let (owner, kind) = if owner_tgid != 0 {
        (u64::from(owner_tgid), owner_kind::PROCESS)
    } else {
        // SAFETY: plain helper call on the program's own skb.
        (
            unsafe { bpf_skb_cgroup_id(ctx.skb.skb) },
            owner_kind::CGROUP,
        )
    };
    let (v4, addr) = match peer {
        Dst::V4(a) => (1, words_to_bytes([u32::from_ne_bytes(*a), 0, 0, 0])),
        Dst::V6(a) => (0, *a),
    };
    let key = ClusterPeerKey {
        owner,
        kind,
        v4,
        addr,
    };
    // SAFETY: read-only lookup; the value is not used.
    unsafe { API_CLUSTER_PEERS.get(&key) }.is_some()
}

/// An allowed peer on a cluster port: a TCP connection (a push/pull or reliable-message
/// session) is a join line; a datagram is one when its peer was not seen for
/// [`CLUSTER_REJOIN_NS`] on that port. Lines share the per-second report limit.
#[inline(always)]
pub(super) fn joined(ctx: &SkBuffContext, api: &ApiConfig, seg: &Segment, owner_tgid: u32) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if seg.protocol == IPPROTO_UDP {
        let mut key = [0u8; 20];
        key[..16].copy_from_slice(&seg.peer);
        key[16] = seg.family as u8;
        key[18..].copy_from_slice(&seg.local_port.to_be_bytes());
        // SAFETY: the value is a plain u64, copied out at once.
        let last = unsafe { API_CLUSTER_SEEN.get(&key) }.copied();
        let age = last.map(|t| now.wrapping_sub(t));
        if age.is_none_or(|a| a >= CLUSTER_SEEN_REFRESH_NS) {
            // A full LRU forgets its least recently seen peer (a line when it comes back).
            let _ = API_CLUSTER_SEEN.insert(&key, &now, 0);
        }
        if age.is_some_and(|a| a < CLUSTER_REJOIN_NS) {
            return;
        }
    }
    if !within_rate(now) {
        return;
    }
    count(counter::CLUSTER_JOINS);
    let meta = Meta::report(0, owner_tgid);
    emit(ctx, event_kind::CLUSTER_JOIN, api, seg, &meta);
}
