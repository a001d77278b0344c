//! Debian kernel packages: resolved from the meta package, downloaded with `apt-get download`
//! and unpacked (boot image and the 9p modules only) into a cache folder; nothing is installed
//! on the host. A complete cache entry has a `ready` file and is reused without any download.
//!
//! Cache entry `<cache>/<package>/`:
//! - `root/` — `./boot/*` and the module directories the guest needs, from the package;
//! - `vmlinux` — the ELF kernel decompressed from `vmlinuz` (QEMU boots it through its PVH
//!   entry, a few seconds faster under TCG than the bzImage), when that worked;
//! - `modules/` — the modules to load, decompressed, in the load order `modprobe` gives;
//! - `ready` — `key` (what was unpacked; a different one means the entry is stale),
//!   `release`, `image` and `module` lines.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};

use super::{KernelSpec, host_command, log};

/// Modules (with their dependencies) the guest needs: 9p shares, and an overlay (tmpfs over
/// the read-only host root) so tests can write anywhere without touching the host.
const ROOT_MODULES: &[&str] = &["9p", "9pnet_virtio", "virtio_pci", "overlay"];

/// A kernel ready to boot.
pub struct Kernel {
    /// `uname -r` of the guest.
    pub release: String,
    /// `vmlinux` or `vmlinuz`.
    pub image: PathBuf,
    /// Uncompressed `.ko` files, in load order.
    pub modules: Vec<PathBuf>,
}

pub fn prepare(spec: &KernelSpec, cache: &Path) -> anyhow::Result<Kernel> {
    let package = resolve(spec, cache)?;
    let dir = cache.join(&package);
    if let Some(kernel) = read_ready(&dir, &cache_key(spec))? {
        log(format!("{package}: cached in {}", dir.display()));
        return Ok(kernel);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing incomplete {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kernel = unpack(spec, &package, &dir)
        .with_context(|| format!("preparing {package} in {}", dir.display()));
    if kernel.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    kernel
}

/// The concrete image package the meta package depends on right now, e.g.
/// `linux-image-6.1.0-56-amd64`. Runs `apt-get update` once if the lists do not know the meta
/// package; offline, falls back to the newest complete cache entry.
fn resolve(spec: &KernelSpec, cache: &Path) -> anyhow::Result<String> {
    let depends = || -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["depends", spec.meta_package])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends: ")?.trim();
            dep.starts_with(spec.package_prefix).then(|| dep.to_owned())
        })
    };
    if let Some(p) = depends() {
        return Ok(p);
    }
    log(format!(
        "apt-cache does not resolve {}; running apt-get update",
        spec.meta_package
    ));
    let updated = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .is_ok_and(|s| s.success());
    if updated && let Some(p) = depends() {
        return Ok(p);
    }
    let mut cached: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("ready").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(spec.package_prefix))
        .collect();
    cached.sort_by(|a, b| version_cmp(a, b));
    match cached.pop() {
        Some(p) => {
            log(format!(
                "could not resolve {} with apt; using the cached {p}",
                spec.meta_package
            ));
            Ok(p)
        }
        None => bail!(
            "cannot resolve {} with apt-cache (no apt lists or no network?)",
            spec.meta_package
        ),
    }
}

/// Compares package names with embedded numbers numerically (`6.1.0-9` < `6.1.0-56`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<Result<u64, String>> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let (head, tail) = if digits > 0 {
                rest.split_at(digits)
            } else {
                rest.split_at(
                    rest.find(|c: char| c.is_ascii_digit())
                        .unwrap_or(rest.len()),
                )
            };
            out.push(head.parse().map_err(|_| head.to_owned()));
            rest = tail;
        }
        out
    }
    parts(a).cmp(&parts(b))
}

/// What an entry holds; changes when the module set does.
fn cache_key(spec: &KernelSpec) -> String {
    format!(
        "{} in {}",
        ROOT_MODULES.join(","),
        spec.module_dirs.join(",")
    )
}

fn read_ready(dir: &Path, key: &str) -> anyhow::Result<Option<Kernel>> {
    let Ok(text) = std::fs::read_to_string(dir.join("ready")) else {
        return Ok(None);
    };
    if !text.lines().any(|l| l.strip_prefix("key ") == Some(key)) {
        return Ok(None);
    }
    let (mut release, mut image, mut modules) = (None, None, Vec::new());
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("release", v)) => release = Some(v.to_owned()),
            Some(("image", v)) => image = Some(dir.join(v)),
            Some(("module", v)) => modules.push(dir.join(v)),
            _ => {}
        }
    }
    match (release, image) {
        (Some(release), Some(image)) if image.is_file() && modules.iter().all(|m| m.is_file()) => {
            Ok(Some(Kernel {
                release,
                image,
                modules,
            }))
        }
        _ => Ok(None),
    }
}

fn unpack(spec: &KernelSpec, package: &str, dir: &Path) -> anyhow::Result<Kernel> {
    log(format!("apt-get download {package}"));
    host_command(
        Command::new("apt-get")
            // The cache folder is not readable by apt's sandbox user; downloading as root is fine.
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(dir),
    )?;
    let deb = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;

    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let mut patterns = vec![
        "./boot/*".to_owned(),
        "./lib/modules/*/modules.*".to_owned(),
    ];
    patterns.extend(
        spec.module_dirs
            .iter()
            .map(|d| format!("./lib/modules/*/kernel/{d}/*")),
    );
    log(format!(
        "extracting ./boot and {} module folders",
        spec.module_dirs.len()
    ));
    extract(&deb, &root, &patterns)?;
    std::fs::remove_file(&deb)?;

    let release = single_entry(&root.join("lib/modules"))?;
    host_command(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    let modules = load_order(&root, &release)?;

    let modules_dir = dir.join("modules");
    std::fs::create_dir_all(&modules_dir)?;
    let mut ready = format!("key {}\nrelease {release}\n", cache_key(spec));
    for (i, m) in modules.iter().enumerate() {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .context("module file name")?;
        let (stem, tool) = match name.rsplit_once('.') {
            Some((stem, "xz")) => (stem, Some("xz")),
            Some((stem, "zst")) => (stem, Some("zstd")),
            Some((stem, "gz")) => (stem, Some("gzip")),
            _ => (name, None),
        };
        let rel = format!("modules/{i:02}-{stem}");
        let data = match tool {
            Some(tool) => host_command(Command::new(tool).arg("-dc").arg(m))?,
            None => std::fs::read(m)?,
        };
        std::fs::write(dir.join(&rel), data)?;
        ready += &format!("module {rel}\n");
    }

    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let image = match extract_vmlinux(&std::fs::read(&vmlinuz)?) {
        Ok(elf) => {
            std::fs::write(dir.join("vmlinux"), elf)?;
            "vmlinux".to_owned()
        }
        Err(e) => {
            log(format!("booting the bzImage ({e:#})"));
            format!("root/boot/vmlinuz-{release}")
        }
    };
    ready += &format!("image {image}\n");
    std::fs::write(dir.join("ready"), ready)?;
    read_ready(dir, &cache_key(spec))?.context("cache entry incomplete right after unpacking")
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x --wildcards PATTERNS`.
fn extract(deb: &Path, root: &Path, patterns: &[String]) -> anyhow::Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(root)
        .args(patterns)
        .stdin(tar_in)
        .status()
        .context("running tar")?;
    let dpkg = dpkg.wait()?;
    ensure!(
        dpkg.success(),
        "dpkg-deb --fsys-tarfile {} failed ({dpkg})",
        deb.display()
    );
    ensure!(
        tar.success(),
        "tar -x {} failed ({tar})",
        patterns.join(" ")
    );
    Ok(())
}

fn single_entry(dir: &Path) -> anyhow::Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {names:?}",
            dir.display()
        ),
    }
}

/// The modules to insmod, in order, from `modprobe --show-depends` on the unpacked tree
/// (lines `insmod /path/x.ko` or `builtin x`).
fn load_order(root: &Path, release: &str) -> anyhow::Result<Vec<PathBuf>> {
    let out = host_command(
        Command::new("modprobe")
            .arg("-d")
            .arg(root)
            .args(["-S", release, "--show-depends", "-a"])
            .args(ROOT_MODULES),
    )?;
    let mut modules: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out).lines() {
        if let Some(path) = line.trim().strip_prefix("insmod ") {
            let path = PathBuf::from(path.trim());
            ensure!(
                path.starts_with(root),
                "modprobe named a module outside the unpacked tree: {}",
                path.display()
            );
            if !modules.contains(&path) {
                modules.push(path);
            }
        }
    }
    ensure!(
        !modules.is_empty(),
        "modprobe found none of {ROOT_MODULES:?} in {}",
        root.display()
    );
    Ok(modules)
}

/// The ELF `vmlinux` inside a bzImage, located with the boot protocol's payload fields
/// (Documentation/arch/x86/boot.rst) and checked against the size the build appended.
fn extract_vmlinux(bz: &[u8]) -> anyhow::Result<Vec<u8>> {
    let u16_at = |o: usize| bz.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        bz.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    ensure!(bz.get(0x202..0x206) == Some(b"HdrS"), "not a bzImage");
    ensure!(
        u16_at(0x206).context("short header")? >= 0x208,
        "boot protocol too old for payload fields"
    );
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let offset = (setup_sects + 1) * 512 + u32_at(0x248).context("short header")? as usize;
    let len = u32_at(0x24c).context("short header")? as usize;
    let payload = bz
        .get(offset..offset + len)
        .context("payload outside the file")?;
    ensure!(len > 4, "empty payload");
    let expected = u32::from_le_bytes(payload[len - 4..].try_into()?) as usize;
    let (tool, data) = if payload.starts_with(b"\xfd7zXZ\0") {
        ("xz", &payload[..len - 4])
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        ("zstd", &payload[..len - 4])
    } else if payload.starts_with(b"\x1f\x8b") {
        ("gzip", payload)
    } else {
        bail!("payload compression not handled");
    };
    let elf = pipe_through(Command::new(tool).args(["-dcq"]), data)?;
    ensure!(elf.starts_with(b"\x7fELF"), "{tool} output is not ELF");
    ensure!(
        elf.len() == expected,
        "{tool} gave {} bytes, the image says {expected}",
        elf.len()
    );
    Ok(elf)
}

fn pipe_through(cmd: &mut Command, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        child.wait_with_output()
    })?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::version_cmp;

    #[test]
    fn package_versions_compare_numerically() {
        assert!(version_cmp("linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64").is_lt());
        assert!(
            version_cmp(
                "linux-image-6.12.117+deb12-amd64",
                "linux-image-6.12.48+deb12-amd64"
            )
            .is_gt()
        );
    }
}
