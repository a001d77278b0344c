//! Processes and threads a test starts, ended on drop (also when the test panics).
use std::{
    fs::File,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

/// A process the test started, killed (SIGKILL, by its PID) and reaped on drop, also when the
/// test panics. Nothing but that one PID is ever signalled, and not once it has been reaped.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Guards `child`; `name` is what [`ChildGuard::assert_alive`] calls it.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child,
        }
    }

    /// Starts `cmd` with stdin from /dev/null and stdout and stderr both written to the file
    /// `log` (created, or truncated).
    pub fn spawn_logged(
        name: impl Into<String>,
        cmd: &mut Command,
        log: &Path,
    ) -> std::io::Result<Self> {
        let log = File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self::new(name, child))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Panics when the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}", self.name);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thread running until dropped: `body` gets a flag it must check (in its loop) and return
/// when it is set; drop sets it and joins the thread.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    pub fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || body(&stopped));
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
