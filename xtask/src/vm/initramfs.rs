//! The guest's initramfs: busybox-static, the 9p modules and `/init` (`xtask/vm/init.sh`),
//! written as a newc cpio archive directly (so `/dev/console` needs no root or mknod).
use std::path::Path;

use anyhow::{Context as _, ensure};

use super::kernel::Kernel;

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("../../vm/init.sh");

pub fn build(kernel: &Kernel) -> anyhow::Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (apt-get install busybox-static)"))?;
    ensure!(
        is_static_elf(&busybox),
        "{BUSYBOX} is not statically linked (apt-get install busybox-static)"
    );

    let mut cpio = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "run", "newroot", "results", "modules",
    ] {
        cpio.entry(dir, 0o040_755, (0, 0), &[]);
    }
    cpio.entry("dev/console", 0o020_600, (5, 1), &[]);
    cpio.entry("bin/busybox", 0o100_755, (0, 0), &busybox);
    cpio.entry("init", 0o100_755, (0, 0), INIT.as_bytes());
    let mut order = String::new();
    for m in &kernel.modules {
        let name = file_name(m)?;
        cpio.entry(
            &format!("modules/{name}"),
            0o100_644,
            (0, 0),
            &std::fs::read(m)?,
        );
        order += name;
        order += "\n";
    }
    cpio.entry("modules/order", 0o100_644, (0, 0), order.as_bytes());
    Ok(cpio.finish())
}

fn file_name(p: &Path) -> anyhow::Result<&str> {
    p.file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("module path {}", p.display()))
}

/// An ELF without a `PT_INTERP` program header.
fn is_static_elf(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
    };
    // ELF64 little endian only (the x86_64 busybox).
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| u32_at(phoff + i * phentsize).is_some_and(|t| t != 3))
}

/// A newc ("070701") archive being written.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, (rdev_major, rdev_minor): (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev_major,
            rdev_minor,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    #[test]
    fn newc_entries_are_aligned() {
        let mut c = Cpio::default();
        c.entry("init", 0o100_755, (0, 0), b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // header (110) + "init\0" padded to 116, then 10 bytes of data padded to 12
        assert_eq!(&out[128..134], b"070701");
    }
}
