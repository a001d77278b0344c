//! Paths to the workspace's binaries under test (`enforcer`, `probe`), and running `enforcer`
//! to completion.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// Directory holding the workspace's binaries for the profile these tests were built with.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned()
}

/// The `probe` binary of this package.
pub fn probe_bin() -> PathBuf {
    std::env::var_os("PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("probe"))
}

/// The `enforcer` binary, built (once per test process) so a stale one is never used.
/// `ENFORCER_BIN` overrides (the VM runner has no cargo).
pub fn enforcer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ENFORCER_BIN") {
            return PathBuf::from(p);
        }
        let dir = bin_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "enforcer", "--bin", "enforcer"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build -p enforcer");
        assert!(status.success(), "cargo build -p enforcer failed");
        dir.join("enforcer")
    })
    .clone()
}

/// Runs the `enforcer` binary with `args` and waits for it: `(exit code, stdout, stderr)`, the
/// code -1 when a signal ended it.
pub fn run_enforcer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("running enforcer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
