//! An earlier release of the agent, for the upgrade tests (tests/tests/upgrade.rs): a git
//! revision of this repository with another pin layout, built once and cached under
//! `target/upgrade-from/<rev>/` (its source from `git archive` in `src/`, its own target
//! directory in `target/`). `scripts/test` builds it before nextest runs (the
//! `earlier-release` binary of this package), so no timed part of a test waits for it.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

/// The earlier release: main at pin layout v13, the last layout before this one. Any revision
/// with another layout will do (the hand-over finds earlier layouts by path, not by a list).
pub const EARLIER_RELEASE: &str = "975e2bd3cce06e996edb53ae73cc7d29eededd5d";

/// The revision to upgrade from: [`EARLIER_RELEASE`], or `ENFORCER_EARLIER_RELEASE` when set (to
/// try another one by hand, e.g. a release whose programs take a minute in the verifier).
pub fn earlier_release() -> String {
    std::env::var("ENFORCER_EARLIER_RELEASE").unwrap_or_else(|_| EARLIER_RELEASE.to_owned())
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(7)]
}

/// The workspace's root (this package is `tests/` in it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `target/upgrade-from/<rev>` (under `CARGO_TARGET_DIR` when set).
pub fn earlier_release_dir(rev: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("upgrade-from").join(short(rev))
}

/// The earlier release's `enforcer` binary, built first when missing (a few minutes on two
/// CPUs; nothing when cached). Returns the path and, when it was built now, the seconds the
/// build took.
pub fn earlier_release_bin(rev: &str) -> anyhow::Result<(PathBuf, Option<u64>)> {
    let dir = earlier_release_dir(rev);
    let bin = dir.join("target/debug/enforcer");
    if bin.exists() {
        return Ok((bin, None));
    }
    let started = Instant::now();
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    std::fs::create_dir_all(&src)?;
    let archive = Command::new("git")
        .current_dir(workspace())
        .args(["archive", "--format=tar", rev])
        .output()
        .context("git archive (the upgrade tests need this repository's history)")?;
    ensure!(
        archive.status.success(),
        "git archive {rev}: {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let mut tar = Command::new("tar")
        .current_dir(&src)
        .arg("-x")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("tar")?;
    std::io::Write::write_all(tar.stdin.as_mut().context("tar stdin")?, &archive.stdout)?;
    drop(tar.stdin.take());
    ensure!(tar.wait()?.success(), "tar -x of {rev}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&src)
        .args(["build", "--quiet", "-p", "enforcer", "--bin", "enforcer"])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("ENFORCER_REVISION", short(rev))
        .status()
        .context("cargo build of the earlier release")?;
    if !status.success() {
        bail!("building the earlier release {rev} failed");
    }
    ensure!(bin.exists(), "no {} after the build", bin.display());
    Ok((bin, Some(started.elapsed().as_secs())))
}

/// The pin layout version of the earlier release (read from its source).
pub fn earlier_release_layout(rev: &str) -> anyhow::Result<u32> {
    let path = earlier_release_dir(rev).join("src/enforcer-common/src/lib.rs");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const PIN_LAYOUT_VERSION: u32 = ")
        })
        .and_then(|v| v.trim_end_matches(';').parse().ok())
        .with_context(|| format!("no PIN_LAYOUT_VERSION in {}", path.display()))
}
