//! Reading policy files.

use super::*;

#[test]
fn load_policy_reads_files() {
    let dir = std::env::temp_dir().join(format!("enforcer-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, "default: deny\n").unwrap();
    let p = load_policy(&good).unwrap();
    assert_eq!(p.source, good.display().to_string());
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, b"default: deny\nmode: \xff\n").unwrap();
    let e = load_policy(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:7: policy is not UTF-8 text", bad.display())
    );
    let missing = dir.join("missing.yaml");
    let e = load_policy(&missing).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    // The OS error once, in the chain (not in the message and again as the source).
    assert_eq!(
        e.to_string(),
        format!("{}: cannot read the policy", missing.display())
    );
    let source = std::error::Error::source(&e).unwrap();
    assert_eq!(source.to_string(), "No such file or directory (os error 2)");
    assert!(source.source().is_none());
    // Issue 11 case 3: a FIFO (the agent used to block on it) and a symlink to /dev/zero
    // (the agent used to grow until killed) are refused at once.
    let fifo = dir.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = load_policy(&fifo).unwrap_err();
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "is a FIFO, not a regular file"
    );
    let zero = dir.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = load_policy(&zero).unwrap_err();
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "is a character device, not a regular file"
    );
    let big = dir.join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_POLICY_BYTES + 1).unwrap();
    let e = load_policy(&big).unwrap_err();
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "is larger than 32 MiB, the most a policy file may be"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
