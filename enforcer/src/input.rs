//! Reading the files the agent and `enforcer check` are given (the policy, an
//! alertmanager.yml, the `*_file` fields it names): regular files only, opened without
//! blocking (a FIFO or a device never stalls the single-threaded agent), and never more than a
//! stated number of bytes (a symlink to `/dev/zero` is refused before a byte is read).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was not read. The OS error is the `source` (printed once, by the chain).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("is larger than {}, the most {what} may be", size_in_words(*cap))]
    TooLarge { what: &'static str, cap: u64 },
}

/// `bytes` in words: `16 MiB`, `64 KiB`, `100 bytes`.
pub fn size_in_words(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Reads at most `cap` bytes of the regular file at `path`; `what` names the file in the
/// size message ("a policy file").
pub fn read_capped(path: &Path, cap: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(kind) = kind {
        return Err(ReadError::NotRegular { kind });
    }
    if meta.len() > cap {
        return Err(ReadError::TooLarge { what, cap });
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // The file may grow between fstat and read: never read past the cap.
    (&file as &File).take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(ReadError::TooLarge { what, cap });
    }
    Ok(out)
}

/// The 1-based line and column (in characters) of byte offset `at` of `bytes`, whose prefix up
/// to `at` is valid UTF-8.
pub fn position(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = std::str::from_utf8(&bytes[..at.min(bytes.len())]).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `value` quoted for a message, cut to about [`QUOTE_MAX`] characters (a 10 MB value is not
/// echoed whole to stderr or a log line).
pub fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(QUOTE_MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => {
            let total = value.chars().count();
            format!("{:?}… ({total} characters)", &value[..cut])
        }
    }
}

/// `value` cut to [`QUOTE_MAX`] characters (with `…` when cut), for a message that quotes it
/// itself.
pub fn cut(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(QUOTE_MAX) {
        None => value.into(),
        Some((end, _)) => format!("{}…", &value[..end]).into(),
    }
}

/// Characters of a value kept by [`quote`] and [`cut`].
pub const QUOTE_MAX: usize = 100;

/// `262144` as `262,144`.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_words() {
        assert_eq!(size_in_words(16 << 20), "16 MiB");
        assert_eq!(size_in_words(64 << 10), "64 KiB");
        assert_eq!(size_in_words(1000), "1000 bytes");
    }

    #[test]
    fn quotes_are_cut() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let long = "x".repeat(10_000_000);
        let q = quote(&long);
        assert!(q.len() < 140, "{q}");
        assert!(q.ends_with("… (10000000 characters)"), "{q}");
        assert_eq!(quote(&"é".repeat(100)), format!("{:?}", "é".repeat(100)));
    }

    #[test]
    fn only_regular_files_within_the_cap() {
        let dir = std::env::temp_dir().join(format!("enforcer-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read_capped(&file, 5, "a test file").unwrap(), b"12345");
        let e = read_capped(&file, 4, "a test file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "is larger than 4 bytes, the most a test file may be"
        );
        let e = read_capped(&dir, 4, "x").unwrap_err();
        assert_eq!(e.to_string(), "is a directory, not a regular file");
        // A symlink to /dev/zero: refused before anything is read.
        let link = dir.join("zero");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read_capped(&link, 1 << 20, "x").unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        // A FIFO with no writer: open does not block, and it is refused.
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_capped(&fifo, 1 << 20, "x").unwrap_err();
        assert_eq!(e.to_string(), "is a FIFO, not a regular file");
        // The OS error once: as the message, with no source repeating it.
        let e = read_capped(&dir.join("missing"), 1, "x").unwrap_err();
        assert_eq!(e.to_string(), "No such file or directory (os error 2)");
        assert!(std::error::Error::source(&e).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
