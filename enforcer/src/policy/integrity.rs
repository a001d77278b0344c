//! `integrity:` — the watchdog that reads each Alertmanager target's API (see
//! [`crate::integrity`]). On by default; every field has a default.
use std::{fmt, path::PathBuf, time::Duration};

use super::Location;
use crate::matchers::Matcher;

/// `integrity:` as validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegritySettings {
    /// `enabled` (default true): watch every target that is Alertmanager.
    pub enabled: bool,
    /// `interval` (default 10s): how often each target's API is read.
    pub interval: Duration,
    /// `max_silence_duration` (default 24h): a longer silence is a finding.
    pub max_silence_duration: Duration,
    /// `unreachable_after` (default 3): failed reads in a row before `api_unreachable`.
    pub unreachable_after: u32,
    /// `protected` (default `alertname="Watchdog"`, `severity="critical"`): alerts no silence
    /// may mute.
    pub protected: Vec<Selector>,
    /// `notify`: where every finding is POSTed, by the agent itself.
    pub notify: Vec<NotifyUrl>,
    /// `notify_repeat` (default 1h): a finding that persists is sent again this often.
    pub notify_repeat: Duration,
    /// `notify_queue` (default 1000): notifications waiting for delivery; beyond it the oldest
    /// are dropped (and counted).
    pub notify_queue: usize,
    /// `api`: credentials and TLS for APIs behind `--web.config.file`.
    pub api: ApiSettings,
    /// `effect`: what the firing alerts and the route tree are judged by.
    pub effect: EffectSettings,
}

/// `integrity.effect:` — thresholds of the findings judged by effect on firing alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectSettings {
    /// `mute_percent` (default 50): a set of silences muting more than this percentage of the
    /// firing alerts is a finding.
    pub mute_percent: usize,
    /// `silence_window` (default 15m): silences created this close together are one set.
    pub silence_window: Duration,
    /// `max_group_wait` (default 10m), `max_group_interval` (default 1h),
    /// `max_repeat_interval` (default 168h): a protected alert's route with a longer timer
    /// holds its notifications back.
    pub max_group_wait: Duration,
    pub max_group_interval: Duration,
    pub max_repeat_interval: Duration,
    /// `always_firing_after` (default 1h): an alert firing this long feeds an inhibit rule
    /// for good.
    pub always_firing_after: Duration,
}

impl Default for EffectSettings {
    fn default() -> Self {
        Self {
            mute_percent: 50,
            silence_window: Duration::from_secs(15 * 60),
            max_group_wait: Duration::from_secs(10 * 60),
            max_group_interval: Duration::from_secs(3600),
            max_repeat_interval: Duration::from_secs(7 * 24 * 3600),
            always_firing_after: Duration::from_secs(3600),
        }
    }
}

impl IntegritySettings {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_SILENCE: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_PROTECTED: [&str; 2] = ["alertname=\"Watchdog\"", "severity=\"critical\""];
    pub const DEFAULT_REPEAT: Duration = Duration::from_secs(3600);
    pub const DEFAULT_QUEUE: usize = 1000;
    pub const MAX_QUEUE: usize = 100_000;
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
    pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

    /// The defaults, with `protected` read from [`Self::DEFAULT_PROTECTED`].
    pub fn with_defaults(file: &str) -> Self {
        let protected = Self::DEFAULT_PROTECTED
            .iter()
            .map(|text| Selector {
                text: (*text).to_owned(),
                // The defaults are constants checked by a unit test.
                matchers: crate::matchers::parse_selector(text).unwrap_or_default(),
                location: Location {
                    file: file.into(),
                    line: 0,
                    column: 0,
                },
            })
            .collect();
        Self {
            enabled: true,
            interval: Self::DEFAULT_INTERVAL,
            max_silence_duration: Self::DEFAULT_MAX_SILENCE,
            unreachable_after: 3,
            protected,
            notify: Vec::new(),
            notify_repeat: Self::DEFAULT_REPEAT,
            notify_queue: Self::DEFAULT_QUEUE,
            api: ApiSettings::default(),
            effect: EffectSettings::default(),
        }
    }
}

impl Default for IntegritySettings {
    fn default() -> Self {
        Self::with_defaults(super::DEFAULT_POLICY_NAME)
    }
}

/// One `protected` selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// As written.
    pub text: String,
    pub matchers: Vec<Matcher>,
    pub location: Location,
}

/// A notify URL. Its `Display` and `Debug` never show credentials, path or query (a webhook's
/// secret usually lives in one of them): only `scheme://host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyUrl {
    url: url::Url,
}

impl NotifyUrl {
    /// An `http` or `https` URL with a host; the error says why not (without the URL).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let url = url::Url::parse(text.trim()).map_err(|_| "not a valid URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the scheme must be http or https");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host");
        }
        Ok(Self { url })
    }

    /// The full URL, to send to (never to log).
    pub fn secret_full(&self) -> &url::Url {
        &self.url
    }

    /// `scheme://host:port`, safe to log.
    pub fn redacted(&self) -> String {
        let port = self.url.port_or_known_default().unwrap_or(0);
        let host = self.url.host_str().unwrap_or_default();
        format!("{}://{host}:{port}", self.url.scheme())
    }
}

impl fmt::Display for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NotifyUrl({})", self.redacted())
    }
}

/// `api:` — how the watchdog authenticates to the targets' APIs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiSettings {
    /// `basic_auth: {username, password_file}`.
    pub basic_auth: Option<BasicAuth>,
    /// `bearer_token_file`.
    pub bearer_token_file: Option<PathBuf>,
    /// `tls:` present: the APIs speak HTTPS.
    pub tls: Option<TlsSettings>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    /// Read at each request (rotated secrets apply without a reload).
    pub password_file: PathBuf,
}

/// `api.tls:`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ca_file`: PEM certificates to trust (default: Mozilla's roots, compiled in).
    pub ca_file: Option<PathBuf>,
    /// `server_name`: the name the certificate must carry (default: the listen address).
    pub server_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    #[test]
    fn defaults_are_on_and_protect_the_watchdog_and_critical_alerts() {
        let s = IntegritySettings::default();
        assert!(s.enabled);
        assert_eq!(s.interval, Duration::from_secs(10));
        let texts: Vec<&str> = s.protected.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, IntegritySettings::DEFAULT_PROTECTED);
        assert!(s.protected.iter().all(|p| p.matchers.len() == 1));
        assert_eq!(crate::policy::default_policy().integrity, s);
    }

    #[test]
    fn the_section_is_read_with_every_field() {
        let p = parse_policy(
            "default: allow\nintegrity:\n  interval: 1s\n  max_silence_duration: 2h\n  \
             unreachable_after: 5\n  protected: ['{team=\"sec\", severity=~\"page|critical\"}']\n  \
             notify:\n    - url: https://user:pw@hooks.example.com/x?token=t\n  notify_repeat: 5m\n  \
             notify_queue: 10\n  api:\n    basic_auth: {username: w, password_file: /p}\n    \
             tls: {ca_file: /ca.pem, server_name: am}\n",
            "p.yaml",
        )
        .unwrap();
        let s = p.integrity;
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.max_silence_duration, Duration::from_secs(7200));
        assert_eq!(s.unreachable_after, 5);
        assert_eq!(s.protected[0].matchers.len(), 2);
        assert_eq!(s.notify[0].to_string(), "https://hooks.example.com:443");
        assert!(!format!("{:?}", s.notify).contains("token"));
        assert_eq!(s.notify_repeat, Duration::from_secs(300));
        assert_eq!(s.notify_queue, 10);
        assert_eq!(s.api.basic_auth.unwrap().username, "w");
        assert_eq!(s.api.tls.unwrap().server_name.as_deref(), Some("am"));
        assert_eq!(s.effect, EffectSettings::default());
        let p = parse_policy(
            "default: allow\nintegrity:\n  effect:\n    mute_percent: 80\n    silence_window: 1h\n    \
             max_group_wait: 1m\n    max_group_interval: 2m\n    max_repeat_interval: 3m\n    \
             always_firing_after: 4m\n",
            "p.yaml",
        )
        .unwrap();
        let e = p.integrity.effect;
        assert_eq!(e.mute_percent, 80);
        assert_eq!(e.silence_window, Duration::from_secs(3600));
        assert_eq!(
            [
                e.max_group_wait,
                e.max_group_interval,
                e.max_repeat_interval,
                e.always_firing_after
            ],
            [60, 120, 180, 240].map(Duration::from_secs)
        );
        let e = parse_policy(
            "default: allow\nintegrity:\n  effect:\n    mute_percent: 101\n",
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.yaml:4:19: mute_percent 101 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_position_and_never_echo_a_url() {
        let err = |text: &str| parse_policy(text, "p.yaml").unwrap_err().to_string();
        let e = err("default: allow\nintegrity:\n  protected: ['severity=critical']\n");
        assert!(
            e.starts_with("p.yaml:3:15: invalid protected selector"),
            "{e}"
        );
        let e = err("default: allow\nintegrity:\n  notify:\n    - url: ftp://x/tok3n\n");
        assert!(e.starts_with("p.yaml:4:12: invalid notify url"), "{e}");
        assert!(!e.contains("tok3n"), "{e}");
        let e = err("default: allow\nintegrity:\n  interval: 1ms\n");
        assert!(
            e.starts_with("p.yaml:3:13: interval 1ms is out of range"),
            "{e}"
        );
        let e = err("default: allow\nintegrity:\n  intervall: 1s\n");
        assert!(e.contains("unknown key \"intervall\""), "{e}");
    }
}
