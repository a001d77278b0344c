//! DNS names as the kernel matches them ([`NameKey`]), and the same matching in userspace.
use enforcer_common::fqdn::{NAME_KEY_LEN, NameKey};

/// The key of a validated, lower-case name without trailing dot (see [`NameKey`]).
/// `None` when the wire form does not fit (the policy parser already rejects such names).
pub fn name_key(name: &str) -> Option<NameKey> {
    let mut wire = Vec::with_capacity(name.len() + 1);
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|&l| (1..=63).contains(&l))?;
        wire.push(len);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    // The root label is left out; a full name of 255 bytes has 254 bytes of labels.
    if wire.len() > NAME_KEY_LEN - 2 {
        return None;
    }
    let mut key = [0u8; NAME_KEY_LEN];
    key[NAME_KEY_LEN - wire.len()..].copy_from_slice(&wire);
    Some(key)
}

/// The dotted name a [`NameKey`] holds (bytes outside printable ASCII are escaped as `\ddd`).
pub fn key_name(key: &NameKey) -> String {
    let start = key.iter().position(|&b| b != 0).unwrap_or(NAME_KEY_LEN);
    let mut out = String::new();
    let mut i = start;
    while i < NAME_KEY_LEN {
        let len = key[i] as usize;
        let end = (i + 1 + len).min(NAME_KEY_LEN);
        if !out.is_empty() {
            out.push('.');
        }
        for &b in &key[i + 1..end] {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_right_aligned_wire_labels_and_suffixes_are_keys() {
        let key = name_key("Hooks.Slack.com").unwrap();
        let wire = b"\x05hooks\x05slack\x03com";
        assert_eq!(&key[NAME_KEY_LEN - wire.len()..], wire);
        assert!(key[..NAME_KEY_LEN - wire.len()].iter().all(|&b| b == 0));
        // Zeroing the first label gives the parent's key: what the kernel does for wildcards.
        let mut parent = key;
        parent[NAME_KEY_LEN - wire.len()..NAME_KEY_LEN - wire.len() + 6].fill(0);
        assert_eq!(parent, name_key("slack.com").unwrap());
        assert_eq!(key_name(&key), "hooks.slack.com");
        assert!(name_key(&"a".repeat(64)).is_none());
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert!(name_key(&long[..253]).is_some());
    }
}
