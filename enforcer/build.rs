//! Builds the kernel programs (`enforcer-ebpf`) with aya-build and leaves the object in OUT_DIR.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
