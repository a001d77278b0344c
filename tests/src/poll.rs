//! Waiting for a condition: polling with a deadline.
use std::time::{Duration, Instant};

/// Calls `f` every `every` until it gives a value; `None` once `timeout` has passed without one.
pub fn eventually<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` every 100 ms until it gives a value; panics, naming `what`, after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually(timeout, Duration::from_millis(100), f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}
