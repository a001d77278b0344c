//! One QEMU run: no network device, console on the first serial port (streamed to stdout and
//! a log file), the guest's exit code on the second, a hard timeout.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Read-write share, `/run/vm-test` in the guest (holds `run.sh`).
    pub share: &'a Path,
    /// Receives the second serial port.
    pub rc_file: &'a Path,
    pub console_log: &'a Path,
    pub timeout: Duration,
    pub smp: u32,
}

pub struct End {
    /// The exit code the guest wrote to its second serial port.
    pub guest_rc: Option<i32>,
    pub timed_out: bool,
    /// QEMU's own status (None when it was killed at the timeout).
    pub status: Option<ExitStatus>,
    pub console: Vec<String>,
}

/// KVM only when `/dev/kvm` opens and a hardware KVM module is loaded: these machines have a
/// `/dev/kvm` from a nested software scheme on which QEMU aborts or crawls
/// (docs/building.md).
pub(super) fn accel() -> [&'static str; 4] {
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let hw =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    if kvm_opens && hw {
        ["-accel", "kvm", "-cpu", "host"]
    } else {
        ["-accel", "tcg,thread=multi", "-cpu", "max"]
    }
}

/// QEMU separates options with commas; a literal comma is doubled.
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

pub fn boot(b: &Boot) -> anyhow::Result<End> {
    File::create(b.rc_file).with_context(|| format!("creating {}", b.rc_file.display()))?;
    let accel = accel();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
    ])
    .args(["-m", "1G", "-smp", &b.smp.to_string()])
    .args(accel)
    .arg("-kernel")
    .arg(b.kernel)
    .arg("-initrd")
    .arg(b.initrd)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .args(["-serial", "stdio", "-serial"])
    .arg(format!("file:{}", opt_path(b.rc_file)))
    .arg("-virtfs")
    .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
    .arg("-virtfs")
    .arg(format!(
        "local,path={},mount_tag=results,security_model=none,multidevs=remap",
        opt_path(b.share)
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    super::log(format!("qemu-system-x86_64 {} {}", accel[1], accel[3]));
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let mut log = File::create(b.console_log)
        .with_context(|| format!("creating {}", b.console_log.display()))?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut out = std::io::stdout();
        let mut buf = Vec::new();
        let mut stdout = BufReader::new(stdout);
        while stdout.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            let _ = writeln!(log, "{line}");
            lines.push(line);
            buf.clear();
        }
        lines
    });

    let deadline = Instant::now() + b.timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break (Some(status), false);
        }
        if Instant::now() >= deadline {
            // Our own child, by its PID.
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = reader.join().unwrap_or_default();
    let guest_rc = std::fs::read_to_string(b.rc_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Ok(End {
        guest_rc,
        timed_out,
        status,
        console,
    })
}
