//! `cargo xtask image`: the agent's OCI image (Containerfile at the repository root), built
//! with podman from a static (musl) release build of the enforcer.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};

/// The musl target: a static binary runs on an empty (`FROM scratch`) base.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The Cargo profile of the image build (Cargo.toml: release without symbols).
pub const PROFILE: &str = "image";
/// The image's name without a tag; `kubectl kustomize deploy/kubernetes` renders it.
pub const NAME: &str = "localhost/alertmanager-egress-enforcer";

#[derive(clap::Args)]
pub struct Args {
    /// Image name and tag [default: localhost/alertmanager-egress-enforcer:<crate version>].
    /// Name your registry here, then `podman push` it.
    #[arg(long)]
    tag: Option<String>,
    /// The `org.opencontainers.image.source` label [default: the URL of git's `origin`].
    #[arg(long)]
    source: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    match build(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask image: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let version = env!("CARGO_PKG_VERSION");
    let tag = args
        .tag
        .clone()
        .unwrap_or_else(|| format!("{NAME}:{version}"));
    which("podman").context("podman not found (apt-get install podman; scripts/setup.sh)")?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args([
        "build",
        "--profile",
        PROFILE,
        "--target",
        TARGET,
        "-p",
        "enforcer",
        "--bin",
        "enforcer",
    ]);
    eprintln!("xtask image: {cmd:?}");
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build for {TARGET} failed (`rustup target add {TARGET}`; scripts/setup.sh)");
    }
    let binary = root
        .join("target")
        .join(TARGET)
        .join(PROFILE)
        .join("enforcer");
    if let Some(interp) = elf_interpreter(&binary)? {
        bail!(
            "{} is dynamically linked (interpreter {interp}); an empty base has no libc",
            binary.display()
        );
    }

    let revision = git(&root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty = git(&root, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let revision = if dirty {
        format!("{revision}-dirty")
    } else {
        revision
    };
    let source = args
        .source
        .clone()
        .or_else(|| git(&root, &["remote", "get-url", "origin"]).map(|u| without_userinfo(&u)))
        .unwrap_or_else(|| "unknown".to_owned());
    let mut cmd = Command::new("podman");
    cmd.current_dir(&root)
        .args([
            "build",
            "--layers=false",
            "--file",
            "Containerfile",
            "--tag",
            &tag,
        ])
        .arg(format!("--build-arg=VERSION={version}"))
        .arg(format!("--build-arg=REVISION={revision}"))
        .arg(format!("--build-arg=SOURCE={source}"))
        .arg(".")
        // Its progress goes to stderr: stdout carries only the tag.
        .stdout(std::io::stderr());
    eprintln!("xtask image: {cmd:?}");
    let status = cmd.status().context("running podman build")?;
    if !status.success() {
        bail!("podman build failed");
    }
    let size = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", &tag])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    match size {
        Some(bytes) => eprintln!(
            "xtask image: built {tag} ({:.1} MiB)",
            bytes as f64 / (1024.0 * 1024.0)
        ),
        None => eprintln!("xtask image: built {tag}"),
    }
    // The tag alone on stdout, for scripts (`podman push "$(cargo xtask image)"`).
    println!("{tag}");
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on PATH"))
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `https://user:token@host/x` → `https://host/x`: a label is public.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{scheme}://{host}/{path}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The program interpreter (`PT_INTERP`) of a 64-bit little-endian ELF file, if it has one.
fn elf_interpreter(path: &Path) -> anyhow::Result<Option<String>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if data.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{}: truncated ELF header", path.display());
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        let p_type = data
            .get(ph..ph + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        const PT_INTERP: u32 = 3;
        if p_type == Some(PT_INTERP) {
            let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
                bail!("{}: truncated program header", path.display());
            };
            let bytes = data
                .get(off as usize..(off + size) as usize)
                .context("PT_INTERP outside the file")?;
            return Ok(Some(
                String::from_utf8_lossy(bytes)
                    .trim_end_matches('\0')
                    .to_owned(),
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_reaches_the_label() {
        assert_eq!(
            without_userinfo("https://user:tok@git.example/org/repo.git"),
            "https://git.example/org/repo.git"
        );
        assert_eq!(without_userinfo("git@host:org/repo"), "git@host:org/repo");
    }

    #[test]
    fn a_dynamic_executable_names_its_interpreter() {
        // This test binary is linked against glibc (the host target).
        let me = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&me).unwrap();
        assert!(
            interp.as_deref().is_some_and(|i| i.contains("ld-linux")),
            "{interp:?}"
        );
    }
}
