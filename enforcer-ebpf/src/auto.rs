//! Automatic rules (a target's own name servers on port 53, its literal `--cluster.peer`s on
//! their ports), held per process: an entry opens one address and port for the one process
//! (tgid) it was read from, as an explicit allow of that process (decision step 2). No other
//! process, target or not, gains anything from it.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use enforcer_common::{AUTO_PORT_WORDS, AutoKey, MAX_AUTO_RULES, auto_port_pos};

use crate::{Dst, words_to_bytes};

#[map]
static AUTO_ALLOW: HashMap<AutoKey, u32> = HashMap::with_max_entries(MAX_AUTO_RULES, 0);
/// One bit per port that some `AUTO_ALLOW` entry names (the agent sets it before the entry
/// and clears it after the last entry of the port is gone).
#[map]
static AUTO_PORTS: Array<u64> = Array::with_max_entries(AUTO_PORT_WORDS, 0);

/// Whether an automatic rule read from process `tgid()` opens `dst`:`port` for `proto_class`.
/// A port no rule names (the array lookup is inlined: no kernel call) is answered without
/// asking for the tgid (a helper call for the calling process: [`crate::Caller`]) or hashing
/// a key.
#[inline(always)]
pub fn allows(tgid: impl FnOnce() -> u32, dst: &Dst, port: u16, proto_class: u8) -> bool {
    let (word, bit) = auto_port_pos(port);
    if AUTO_PORTS.get(word).is_none_or(|w| *w & bit == 0) {
        return false;
    }
    // Every field written (no `..Default::default()`: the compiler would zero the key with a
    // `memset` subprogram call first).
    let (v4, addr) = match dst {
        Dst::V4(a) => (1, words_to_bytes([u32::from_ne_bytes(*a), 0, 0, 0])),
        Dst::V6(a) => (0, *a),
    };
    let key = AutoKey {
        tgid: tgid(),
        port,
        v4,
        _pad: 0,
        addr,
    };
    // SAFETY: the value is a plain u32 mask, copied out at once.
    let mask = unsafe { AUTO_ALLOW.get(&key) }.copied().unwrap_or(0);
    mask as u8 & proto_class != 0
}
