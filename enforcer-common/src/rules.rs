//! The rule key: one LPM trie per family holds the rules of both directions, each key tagged
//! with its [`direction`] in its first byte (the way cilium's policy key carries the traffic
//! direction), so egress (connect, sendmsg) and ingress (the API guard) decide through one
//! lookup over one kind of key.
//!
//! Key layout (`#[repr(C, packed)] { prefix_len: u32 host order, data }`): `data[0..4]` is the
//! direction tag (`[dir, 0, 0, 0]`), the rest the address in network byte order; `prefix_len`
//! counts the tag's [`DIRECTION_BITS`] plus the address prefix, so an entry never matches the
//! other direction. The tag is four bytes, not one, so that the IPv4 key is eight bytes: the
//! kernel's trie compares keys in 8-, 4-, 2- and 1-byte steps, and a five-byte key would take
//! an extra step at every node of every egress lookup. `cargo xtask bench` measured the egress
//! paths with this key equal to the untagged key, within run-to-run noise.

/// Which way a verdict looks: the first byte of every rule key.
pub mod direction {
    /// Calls a target makes (connect4/6, sendmsg4/6): the address is the destination.
    pub const EGRESS: u8 = 0;
    /// Connections to a target's guarded port: the address is the peer's.
    pub const INGRESS: u8 = 1;

    pub fn name(dir: u8) -> Option<&'static str> {
        match dir {
            EGRESS => Some("egress"),
            INGRESS => Some("ingress"),
            _ => None,
        }
    }
}

/// Bytes of the direction tag at the front of every key.
const TAG_LEN: usize = 4;
/// Bits of the direction tag at the front of every key.
pub const DIRECTION_BITS: u32 = 8 * TAG_LEN as u32;

/// Key data of the IPv4 trie: direction tag, then the address.
pub const V4_KEY_LEN: usize = TAG_LEN + 4;
/// Key data of the IPv6 trie: direction tag, then the address.
pub const V6_KEY_LEN: usize = TAG_LEN + 16;

/// The LPM `prefix_len` of an entry for an address prefix of `addr_bits` bits.
#[inline(always)]
pub const fn key_prefix_len(addr_bits: u32) -> u32 {
    DIRECTION_BITS + addr_bits
}

/// Key data for an IPv4 address (network order) in direction `dir`.
#[inline(always)]
pub fn v4_key(dir: u8, a: [u8; 4]) -> [u8; V4_KEY_LEN] {
    [dir, 0, 0, 0, a[0], a[1], a[2], a[3]]
}

/// Key of the IPv4 block map: direction tag, then the address's /24 block (its first three
/// octets).
#[inline(always)]
pub fn v4_block_key(dir: u8, a: [u8; 4]) -> [u8; 4] {
    [dir, a[0], a[1], a[2]]
}

/// Key data for an IPv6 address (network order) in direction `dir`.
#[inline(always)]
pub fn v6_key(dir: u8, a: [u8; 16]) -> [u8; V6_KEY_LEN] {
    let mut k = [0u8; V6_KEY_LEN];
    k[0] = dir;
    let mut i = 0;
    while i < 16 {
        k[TAG_LEN + i] = a[i];
        i += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_direction_first() {
        assert_eq!(
            v4_key(direction::INGRESS, [127, 0, 0, 1]),
            [1, 0, 0, 0, 127, 0, 0, 1]
        );
        let k = v6_key(direction::EGRESS, [0xfd; 16]);
        assert_eq!(k[..4], [0, 0, 0, 0]);
        assert_eq!(k[4..], [0xfd; 16]);
        assert_eq!(key_prefix_len(32), 64);
        assert_eq!(
            v4_block_key(direction::INGRESS, [192, 0, 2, 7]),
            [1, 192, 0, 2]
        );
        assert_eq!(key_prefix_len(0), DIRECTION_BITS);
    }
}
