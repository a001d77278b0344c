//! One finding: a JSON line on stdout and the body of the out-of-band POST.
use std::io::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// What was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    SilenceMatchesEverything,
    SilenceCoversProtected,
    SilenceBroadened,
    SilenceExtended,
    SilenceTooLong,
    ConfigChanged,
    ReceiverDenied,
    ApiUnreachable,
    ProtectedAlertSuppressed,
    ProtectedAlertUndelivered,
    SilencesMuteFiring,
    ProtectedAlertsGone,
    ConfigDropsProtected,
    InhibitRuleRisky,
    ConfigNotAnalysed,
}

impl FindingKind {
    pub const ALL: [FindingKind; 15] = [
        FindingKind::SilenceMatchesEverything,
        FindingKind::SilenceCoversProtected,
        FindingKind::SilenceBroadened,
        FindingKind::SilenceExtended,
        FindingKind::SilenceTooLong,
        FindingKind::ConfigChanged,
        FindingKind::ReceiverDenied,
        FindingKind::ApiUnreachable,
        FindingKind::ProtectedAlertSuppressed,
        FindingKind::ProtectedAlertUndelivered,
        FindingKind::SilencesMuteFiring,
        FindingKind::ProtectedAlertsGone,
        FindingKind::ConfigDropsProtected,
        FindingKind::InhibitRuleRisky,
        FindingKind::ConfigNotAnalysed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::SilenceMatchesEverything => "silence_matches_everything",
            FindingKind::SilenceCoversProtected => "silence_covers_protected",
            FindingKind::SilenceBroadened => "silence_broadened",
            FindingKind::SilenceExtended => "silence_extended",
            FindingKind::SilenceTooLong => "silence_too_long",
            FindingKind::ConfigChanged => "config_changed",
            FindingKind::ReceiverDenied => "receiver_denied",
            FindingKind::ApiUnreachable => "api_unreachable",
            FindingKind::ProtectedAlertSuppressed => "protected_alert_suppressed",
            FindingKind::ProtectedAlertUndelivered => "protected_alert_undelivered",
            FindingKind::SilencesMuteFiring => "silences_mute_firing",
            FindingKind::ProtectedAlertsGone => "protected_alerts_gone",
            FindingKind::ConfigDropsProtected => "config_drops_protected",
            FindingKind::InhibitRuleRisky => "inhibit_rule_risky",
            FindingKind::ConfigNotAnalysed => "config_not_analysed",
        }
    }

    /// A state that lasts (an active silence, a denied receiver in the running configuration,
    /// an API that does not answer), as opposed to a change seen once (an edit, a reload).
    /// States are sent again at `notify_repeat` while they last.
    pub fn persists(self) -> bool {
        !matches!(
            self,
            FindingKind::SilenceBroadened
                | FindingKind::SilenceExtended
                | FindingKind::ConfigChanged
        )
    }
}

/// One finding about one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Always `integrity`.
    pub event: &'static str,
    pub finding: FindingKind,
    /// The enforced target the Alertmanager belongs to (as deny events name it).
    pub target: String,
    pub pid: u32,
    /// The API read (`http://127.0.0.1:9093/`), without credentials.
    pub api: String,
    /// Silence id, matchers, createdBy, comment, startsAt, endsAt; receiver and field; ...
    #[serde(flatten)]
    pub details: Map<String, Value>,
    /// Identifies the finding while it persists (not part of the line).
    #[serde(skip)]
    pub key: String,
}

impl Finding {
    /// `subject` tells findings of one kind about one target apart (a silence id, a
    /// receiver's field, a configuration hash).
    pub fn new(kind: FindingKind, at: &Source, subject: &str, details: Map<String, Value>) -> Self {
        Self {
            event: "integrity",
            finding: kind,
            target: at.target.clone(),
            pid: at.pid,
            api: at.api.clone(),
            details,
            key: format!("{}|{}|{}|{subject}", at.pid, at.api, kind.as_str()),
        }
    }

    /// The JSON document (the POST body).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Writes the stdout line: `timestamp` and `level` first, as the deny lines have them.
    /// One `write_all` on the locked stdout, so lines never interleave with other events.
    pub fn print(&self) {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(super::time::rfc3339(super::time::now_ms())),
        );
        line.insert("level".into(), Value::String("WARN".into()));
        if let Ok(Value::Object(fields)) = serde_json::to_value(self) {
            line.extend(fields);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

/// Which target, process and API a finding is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub target: String,
    pub pid: u32,
    pub api: String,
}

/// Builds a details map: `details!{"silence_id" => id, "comment" => c}`.
#[macro_export]
#[doc(hidden)]
macro_rules! details {
    ($($k:expr => $v:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $( m.insert(($k).to_string(), serde_json::json!($v)); )*
        m
    }};
}
