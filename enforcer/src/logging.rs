//! Agent diagnostics on stderr: JSON lines (the default) or logfmt, filtered by `--log.level`
//! or `RUST_LOG`. (Deny events go to stdout as JSON lines, identical denials folded per
//! window, written by [`crate::events::emit`], whatever the format chosen here.)
use std::fmt::{self, Write as _};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    Layer as _,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// `--log.level`: the least severe diagnostics written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `--log.format`: how a diagnostic line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (`timestamp`, `level`, `message`, fields).
    #[default]
    Json,
    /// `ts=... level=info msg="..." key=value`, as Prometheus and Alertmanager write.
    Logfmt,
}

/// Installs the global subscriber. `level` wins over `RUST_LOG`; without either, `info`.
pub fn init_with(level: Option<LogLevel>, format: LogFormat) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l.directive()),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Logfmt => base.event_format(Logfmt).with_filter(filter).boxed(),
    };
    // A second init (tests calling twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The logfmt line format: `ts`, `level`, `msg`, then the event's fields in order.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("ts=")?;
        SystemTime.format_time(&mut writer)?;
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write!(writer, " level={level}")?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(msg) = fields.message {
            write!(writer, " msg={}", quoted(&msg))?;
        }
        for (key, value) in fields.rest {
            write!(writer, " {key}={}", quoted(&value))?;
        }
        writeln!(writer)
    }
}

/// An event's fields as text, the message apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.rest.push((field.name(), value));
        }
    }
}

/// A logfmt value: bare when it is a plain word, else in double quotes with `"`, `\` and
/// control characters escaped.
fn quoted(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn logfmt_values_are_quoted_only_when_needed_and_cannot_forge_a_field() {
        assert_eq!(quoted("ready"), "ready");
        assert_eq!(quoted("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("policy reloaded"), "\"policy reloaded\"");
        // A hostile value (a process name, a DNS name) cannot end the line or add a key.
        assert_eq!(
            quoted("x\" level=error msg=\"forged\nts=1"),
            "\"x\\\" level=error msg=\\\"forged\\nts=1\""
        );
        assert_eq!(quoted("a=b"), "\"a=b\"");
        assert_eq!(quoted("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(quoted("nul\0"), "\"nul\\u{0}\"");
    }
}
