//! Two JSON streams: deny events (target [`crate::events::TARGET`]) on stdout, one line per
//! denied call; agent diagnostics on stderr.
use tracing_subscriber::{
    Layer as _, filter::filter_fn, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// Installs the global subscriber. `RUST_LOG` filters the diagnostics (default `info`); event
/// lines are never filtered.
pub fn init() {
    let is_event = |m: &tracing::Metadata<'_>| m.target() == crate::events::TARGET;
    let events = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_writer(std::io::stdout)
        .with_filter(filter_fn(is_event));
    let diag_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let diagnostics = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(move |m| !is_event(m)))
        .with_filter(diag_filter);
    // A second init (tests calling twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(events)
        .with(diagnostics)
        .try_init();
}
