//! The agent's own integrity watchdog on a web port: let in by its identity, not by its
//! address.
//!
//! The agent writes an entry into [`API_WATCHDOG_SOCKETS`] (socket-local storage) through its
//! socket's descriptor before it connects; only a holder of the map (the agent, root) can
//! write one. A SYN the allow list refuses is looked up here: the sending socket is found by
//! the connection's four-tuple in the receiving network namespace (`bpf_sk_lookup_tcp`: the
//! watchdog connects from inside the target's namespace, so its connecting socket is in that
//! namespace's table) and its storage asked. A forged source address finds either no socket
//! or one the agent did not mark.
use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple},
    btf_maps::SkStorage,
    helpers::generated::{bpf_sk_lookup_tcp, bpf_sk_release, bpf_sk_storage_get},
    macros::btf_map,
    programs::SkBuffContext,
};

use super::Segment;

/// The watchdog's sockets (`enforcer_common::api::map_names::API_WATCHDOG_SOCKETS`).
#[btf_map]
static API_WATCHDOG_SOCKETS: SkStorage<u32> = SkStorage::new();

/// Bytes of `bpf_sock_tuple`'s IPv4 and IPv6 forms.
const TUPLE_V4: u32 = 12;
const TUPLE_V6: u32 = 36;

/// Whether the SYN `seg` comes from a socket of the agent's watchdog.
#[inline(always)]
pub(super) fn is_own(ctx: &SkBuffContext, seg: &Segment) -> bool {
    // The sending socket's own view: its local end is the SYN's source, its remote end the
    // SYN's destination. A lookup tuple is read as a packet arriving at the socket sought:
    // source = its remote end, destination = its local end.
    let word = |b: &[u8; 16], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let ports = u32::from(seg.local_port.to_be()) | (u32::from(seg.peer_port.to_be()) << 16);
    let mut t = [0u32; 9];
    let size = if seg.family == 2 {
        t[0] = word(&seg.local, 0);
        t[1] = word(&seg.peer, 0);
        t[2] = ports;
        TUPLE_V4
    } else {
        t[0] = word(&seg.local, 0);
        t[1] = word(&seg.local, 4);
        t[2] = word(&seg.local, 8);
        t[3] = word(&seg.local, 12);
        t[4] = word(&seg.peer, 0);
        t[5] = word(&seg.peer, 4);
        t[6] = word(&seg.peer, 8);
        t[7] = word(&seg.peer, 12);
        t[8] = ports;
        TUPLE_V6
    };
    // SAFETY: `t` is 36 initialised bytes of stack, at least `size`; the helper reads the
    // tuple and returns a referenced socket or null.
    let sk = unsafe {
        bpf_sk_lookup_tcp(
            ctx.skb.skb.cast(),
            ptr::from_mut(&mut t).cast::<bpf_sock_tuple>(),
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` is the full socket the lookup returned (a reference this program holds);
    // lookup without create; the reference is released right after.
    let marked = unsafe {
        let v = bpf_sk_storage_get(
            ptr::from_ref(&API_WATCHDOG_SOCKETS).cast_mut().cast(),
            sk.cast(),
            ptr::null_mut(),
            0,
        );
        bpf_sk_release(sk.cast());
        !v.is_null()
    };
    marked
}
