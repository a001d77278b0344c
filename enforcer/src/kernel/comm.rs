//! Task names (comms) as the kernel holds them: the key of the scope-mode target map and the
//! `comm` of an event.
use enforcer_common::COMM_LEN;

/// The kernel's comm of a process whose executable is `name`: the first 15 bytes, NUL padded.
pub fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// The text of a comm as the kernel holds it (a [`comm_key`], or the comm of an event): up to
/// the first NUL, with bytes that are not UTF-8 (a name cut inside a character) replaced.
pub fn comm_text(comm: &[u8]) -> String {
    let n = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{comm_key, comm_text};

    #[test]
    fn comm_text_of_a_key_is_the_name_the_kernel_shows() {
        assert_eq!(comm_text(&comm_key("curl")), "curl");
        // The kernel keeps 15 bytes of the executable's name.
        assert_eq!(
            comm_text(&comm_key("a-very-long-name-x")),
            "a-very-long-nam"
        );
        // Cut inside a character: the stray byte is replaced, as in a decoded event.
        assert_eq!(
            comm_text(&comm_key("abcdefghijklmné")),
            "abcdefghijklmn\u{fffd}"
        );
    }
}
