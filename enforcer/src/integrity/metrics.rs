//! The watchdog's metrics, registered in the agent's registry ([`crate::metrics::Metrics`]).
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchedLabels {
    pub target: String,
    pub pid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreadthLabels {
    pub target: String,
    pub pid: String,
    pub breadth: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric of the watchdog (`enforcer_integrity_*`).
#[derive(Default)]
pub struct IntegrityMetrics {
    pub findings: Family<KindLabels, Counter>,
    pub active_findings: Family<KindLabels, Gauge>,
    pub silences: Family<BreadthLabels, Gauge>,
    pub config_changes: Family<WatchedLabels, Counter>,
    pub last_read: Family<WatchedLabels, Gauge>,
    pub api_up: Family<WatchedLabels, Gauge>,
    pub notifications: Family<ResultLabels, Counter>,
    pub alerts: Family<AlertLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub target: String,
    pub pid: String,
    /// `firing` (every alert the API shows), `suppressed`, `protected`.
    pub kind: &'static str,
}

const ALERT_KINDS: [&str; 3] = ["firing", "suppressed", "protected"];

impl IntegrityMetrics {
    /// Creates the metrics and registers them under `integrity_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("integrity");
        r.register(
            "findings",
            "Integrity findings raised, by kind (a persisting finding counts once)",
            m.findings.clone(),
        );
        r.register(
            "active_findings",
            "Integrity findings that hold now, by kind",
            m.active_findings.clone(),
        );
        r.register(
            "silences",
            "Active and pending silences of each watched Alertmanager, by breadth (everything, protected, narrow)",
            m.silences.clone(),
        );
        r.register(
            "config_changes",
            "Changes of a watched Alertmanager's running configuration",
            m.config_changes.clone(),
        );
        r.register(
            "last_successful_read_timestamp_seconds",
            "When the watchdog last read a watched Alertmanager's API",
            m.last_read.clone(),
        );
        r.register(
            "api_up",
            "1 when the last read of a watched Alertmanager's API succeeded",
            m.api_up.clone(),
        );
        r.register(
            "notifications",
            "Out-of-band notifications by result (sent, failed after retries, dropped from a full queue)",
            m.notifications.clone(),
        );
        r.register(
            "alerts",
            "Alerts of a watched Alertmanager at the last read: firing (all), suppressed (silenced or inhibited), protected (named by a protected selector)",
            m.alerts.clone(),
        );
        for kind in super::FindingKind::ALL {
            let labels = KindLabels {
                kind: kind.as_str(),
            };
            let _ = m.findings.get_or_create(&labels);
            let _ = m.active_findings.get_or_create(&labels);
        }
        for result in ["sent", "failed", "dropped"] {
            let _ = m.notifications.get_or_create(&ResultLabels { result });
        }
        m
    }

    pub fn notification(&self, result: &'static str) {
        self.notifications
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The alert gauges of one read.
    pub fn observe_alerts(&self, w: &WatchedLabels, judged: &super::effect::Judged) {
        let counts = [judged.firing, judged.suppressed, judged.protected_firing];
        for (kind, n) in ALERT_KINDS.into_iter().zip(counts) {
            self.alerts
                .get_or_create(&AlertLabels {
                    target: w.target.clone(),
                    pid: w.pid.clone(),
                    kind,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Forgets the series of a process that is no longer watched.
    pub fn forget(&self, target: &str, pid: u32) {
        let w = WatchedLabels {
            target: target.to_owned(),
            pid: pid.to_string(),
        };
        self.last_read.remove(&w);
        self.api_up.remove(&w);
        for kind in ALERT_KINDS {
            self.alerts.remove(&AlertLabels {
                target: w.target.clone(),
                pid: w.pid.clone(),
                kind,
            });
        }
        for breadth in ["everything", "protected", "narrow"] {
            self.silences.remove(&BreadthLabels {
                target: w.target.clone(),
                pid: w.pid.clone(),
                breadth,
            });
        }
    }
}
