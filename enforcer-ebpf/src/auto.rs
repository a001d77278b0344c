//! Automatic rules (a target's own name servers on port 53, its literal `--cluster.peer`s on
//! their ports), held per process: an entry opens one address and port for the one process
//! (tgid) it was read from, as an explicit allow of that process (decision step 2). No other
//! process, target or not, gains anything from it.
use aya_ebpf::{macros::map, maps::HashMap};
use enforcer_common::{AutoKey, MAX_AUTO_RULES};

use crate::Dst;

#[map]
static AUTO_ALLOW: HashMap<AutoKey, u32> = HashMap::with_max_entries(MAX_AUTO_RULES, 0);

/// Whether an automatic rule read from process `tgid` opens `dst`:`port` for `proto_class`.
#[inline(always)]
pub fn allows(tgid: u32, dst: &Dst, port: u16, proto_class: u8) -> bool {
    let mut key = AutoKey {
        tgid,
        port,
        ..AutoKey::default()
    };
    match dst {
        Dst::V4(a) => {
            key.v4 = 1;
            key.addr[0..4].copy_from_slice(a);
        }
        Dst::V6(a) => key.addr = *a,
    }
    // SAFETY: the value is a plain u32 mask, copied out at once.
    let mask = unsafe { AUTO_ALLOW.get(&key) }.copied().unwrap_or(0);
    mask as u8 & proto_class != 0
}
