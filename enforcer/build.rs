//! Builds the kernel programs (`enforcer-ebpf`) with aya-build and leaves the object in OUT_DIR.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

#[path = "src/civil.rs"]
mod civil;

fn main() -> anyhow::Result<()> {
    build_info();
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
    // The enforcer's programs, and the benchmark's floor program (`cargo xtask bench`).
    let objects = ["enforcer-ebpf", "floor"].map(|bin| std::path::Path::new(&out_dir).join(bin));
    // AYA_BUILD_SKIP=1 builds the agent without kernel programs (for work on pure userspace
    // modules); loading then fails with a clear error instead of running anything.
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1") {
        println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
        for object in &objects {
            if !object.exists() {
                std::fs::write(object, []).context("writing empty eBPF placeholder")?;
            }
        }
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "enforcer-ebpf")
        .ok_or_else(|| anyhow!("enforcer-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("enforcer-ebpf manifest has no parent"))?;
    // Build the kernel programs with the toolchain building us (stable + RUSTC_BOOTSTRAP=1 from
    // .cargo/config.toml, which makes aya-build add -Z build-std=core).
    println!("cargo::rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

/// `ENFORCER_REVISION` and `ENFORCER_BUILD_DATE` for `--version` and `enforcer_build_info`: the
/// git commit being built (`unknown` outside a git checkout; the variable of the same name
/// overrides, for builds from a source archive) and the build's UTC date (SOURCE_DATE_EPOCH
/// when set, for reproducible builds).
fn build_info() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    println!("cargo::rerun-if-env-changed=ENFORCER_REVISION");
    println!("cargo::rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout changes HEAD (a branch name) or the ref it names.
    for file in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    if let Some(path) =
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r]))
    {
        println!("cargo::rerun-if-changed={path}");
    }
    let revision = std::env::var("ENFORCER_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo::rustc-env=ENFORCER_REVISION={revision}");
    println!("cargo::rustc-env=ENFORCER_BUILD_DATE={}", utc_date(epoch));
}

/// `YYYY-MM-DD` of a Unix time (UTC).
fn utc_date(epoch: u64) -> String {
    let (year, month, day) = civil::civil_from_days((epoch / 86_400) as i64);
    format!("{year:04}-{month:02}-{day:02}")
}
