//! bpffs instances a test mounts for its pins, and unmounts on drop.
use std::path::PathBuf;

use crate::unique;

/// A bpffs directory for one test's pins, in a bpffs instance of the test's own: mounted on
/// a fresh directory under the temp dir, so the test never touches `/sys/fs/bpf` (whether it
/// was mounted, and by whom, is shared state that concurrent test runs would race on). On
/// drop, `enforcer detach` semantics: every pin under it is removed (which detaches pinned
/// links), then the instance is unmounted and its directory removed.
pub struct PinDir {
    pub path: PathBuf,
    /// Where the test's bpffs instance is mounted; `path` is a directory in it that the agent
    /// creates (and `enforcer detach` removes).
    mount: PathBuf,
}

impl PinDir {
    pub fn new() -> Self {
        let mount = std::env::temp_dir().join(unique("enforcer-test-bpffs"));
        std::fs::create_dir(&mount).unwrap_or_else(|e| panic!("creating {}: {e}", mount.display()));
        let target = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings and no data.
        let r = unsafe {
            libc::mount(
                c"bpffs".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&mount);
            panic!("mounting a bpffs instance on {}: {e}", mount.display());
        }
        Self {
            path: mount.join("enforcer"),
            mount,
        }
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists()
            && let Err(e) =
                enforcer::kernel::pin::remove_all(&enforcer::kernel::pin::Pins::new(&self.path))
        {
            eprintln!("warning: removing pins under {}: {e}", self.path.display());
        }
        let target = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 with a valid NUL-terminated path. MNT_DETACH: a process the test
        // could not end must not keep the mount (the instance goes when its last user does).
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "warning: unmounting {}: {}",
                self.mount.display(),
                std::io::Error::last_os_error()
            );
        } else if let Err(e) = std::fs::remove_dir(&self.mount) {
            eprintln!("warning: removing {}: {e}", self.mount.display());
        }
    }
}
