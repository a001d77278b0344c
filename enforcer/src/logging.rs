//! Agent diagnostics as JSON lines on stderr. (Deny events go to stdout, one JSON line per
//! denied call, written by [`crate::events::emit`].)
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Installs the global subscriber. `RUST_LOG` filters the diagnostics (default `info`).
pub fn init() {
    let diag_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let diagnostics = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(diag_filter);
    // A second init (tests calling twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(diagnostics).try_init();
}
