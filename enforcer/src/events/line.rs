//! Writing an event view as one JSON line on stdout: `{"timestamp":…,"level":"WARN",<view>}`
//! (the shape the diagnostics on stderr have too, so one log pipeline reads both).
use std::{io::Write as _, time::SystemTime};

use serde::Serialize;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    timestamp: String,
    level: &'static str,
    #[serde(flatten)]
    view: &'a T,
}

/// Writes `view` as one JSON line on stdout (a write error, such as a closed pipe, is ignored
/// like the diagnostics' are: enforcement never waits on a reader).
pub fn emit<T: Serialize>(view: &T) {
    let line = Line {
        timestamp: crate::time::rfc3339_micros(SystemTime::now()),
        level: "WARN",
        view,
    };
    let Ok(mut text) = serde_json::to_vec(&line) else {
        return;
    };
    text.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&text);
}
