//! The `integrity:` section (see [`crate::policy::IntegritySettings`]).
//!
//! ```yaml
//! integrity:
//!   enabled: true                 # default true
//!   interval: 10s                 # default 10s
//!   max_silence_duration: 24h     # default 24h
//!   unreachable_after: 3          # failed reads in a row before api_unreachable (default 3)
//!   protected:                    # default: alertname="Watchdog", severity="critical"
//!     - alertname="Watchdog"
//!     - '{severity=~"critical|page", team="security"}'
//!   notify:
//!     - url: https://hooks.example.com/...
//!   notify_repeat: 1h             # default 1h
//!   notify_queue: 1000            # default 1000
//!   api:
//!     basic_auth: {username: watchdog, password_file: /etc/enforcer/am-password}
//!     bearer_token_file: /etc/enforcer/am-token
//!     tls: {ca_file: /etc/enforcer/am-ca.pem, server_name: alertmanager}
//!   effect:                       # judged by effect on firing alerts and the route tree
//!     mute_percent: 50            # silences muting more than this % of firing alerts
//!     silence_window: 15m         # silences created this close together are one set
//!     max_group_wait: 10m         # longer timers on a protected alert's route are findings
//!     max_group_interval: 1h
//!     max_repeat_interval: 168h
//!     always_firing_after: 1h     # an inhibit source firing this long is always firing
//! ```
use std::path::PathBuf;
use std::time::Duration;

use super::{Cx, PolicyError, Problem};
use crate::policy::integrity::{
    ApiSettings, BasicAuth, EffectSettings, IntegritySettings, NotifyUrl, Selector, TlsSettings,
};
use crate::yaml::{Kind, Node};

const KEYS: &[&str] = &[
    "enabled",
    "interval",
    "max_silence_duration",
    "unreachable_after",
    "protected",
    "notify",
    "notify_repeat",
    "notify_queue",
    "api",
    "effect",
];
const EXPECTED: &str = "enabled, interval, max_silence_duration, unreachable_after, protected, \
                        notify, notify_repeat, notify_queue, api, effect";

impl Cx<'_> {
    pub(super) fn integrity(&self, node: &Node) -> Result<IntegritySettings, PolicyError> {
        let mut s = IntegritySettings::with_defaults(self.file);
        if let Kind::Null = node.kind {
            return Ok(s);
        }
        for field in self.fields(node, "integrity", KEYS, EXPECTED)? {
            let value = field.value;
            match field.name {
                "enabled" => s.enabled = self.boolean(value, "enabled")?,
                "interval" => {
                    s.interval =
                        self.bounded_duration(value, "interval", IntegritySettings::MIN_INTERVAL)?;
                }
                "max_silence_duration" => {
                    s.max_silence_duration = self.bounded_duration(
                        value,
                        "max_silence_duration",
                        Duration::from_secs(1),
                    )?;
                }
                "notify_repeat" => {
                    s.notify_repeat =
                        self.bounded_duration(value, "notify_repeat", Duration::from_secs(1))?;
                }
                "unreachable_after" => {
                    s.unreachable_after =
                        u32::try_from(self.whole(value, "unreachable_after", 1000)?)
                            .unwrap_or(1000);
                }
                "notify_queue" => {
                    s.notify_queue =
                        self.whole(value, "notify_queue", IntegritySettings::MAX_QUEUE)?;
                }
                "protected" => {
                    s.protected = match value.kind {
                        Kind::Null => Vec::new(),
                        _ => self
                            .list(value, "protected")?
                            .into_iter()
                            .map(|item| self.selector(item))
                            .collect::<Result<_, _>>()?,
                    };
                }
                "notify" => {
                    s.notify = self
                        .entries(value, "notify")?
                        .iter()
                        .map(|entry| self.notify_entry(entry))
                        .collect::<Result<_, _>>()?;
                }
                "effect" => s.effect = self.effect(value)?,
                _ => s.api = self.api(value)?,
            }
        }
        Ok(s)
    }

    fn boolean(&self, node: &Node, what: &str) -> Result<bool, PolicyError> {
        match node.kind {
            Kind::Bool(b) => Ok(b),
            _ => Err(self.wrong_type(node, what, "true or false")),
        }
    }

    fn bounded_duration(
        &self,
        node: &Node,
        what: &'static str,
        min: Duration,
    ) -> Result<Duration, PolicyError> {
        let d = self.duration(node, what)?;
        if d < min || d > IntegritySettings::MAX_DURATION {
            let value = self.scalar_text(node).unwrap_or_default();
            let range = format!(
                "{}ms..={}h",
                min.as_millis(),
                IntegritySettings::MAX_DURATION.as_secs() / 3600
            );
            return Err(self.err(node, Problem::OutOfRange { what, value, range }));
        }
        Ok(d)
    }

    fn whole(&self, node: &Node, what: &'static str, max: usize) -> Result<usize, PolicyError> {
        let Kind::Int(v) = node.kind else {
            return Err(self.wrong_type(node, what, "a whole number"));
        };
        match usize::try_from(v) {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(self.err(
                node,
                Problem::OutOfRange {
                    what,
                    value: v.to_string(),
                    range: format!("1..={max}"),
                },
            )),
        }
    }

    fn selector(&self, node: &Node) -> Result<Selector, PolicyError> {
        let text = self.text(
            node,
            "a protected selector",
            "a matcher such as severity=\"critical\"",
        )?;
        let matchers = crate::matchers::parse_selector(&text).map_err(|e| {
            self.err(
                node,
                Problem::InvalidSelector {
                    reason: e.to_string(),
                },
            )
        })?;
        Ok(Selector {
            text,
            matchers,
            location: self.at(node),
        })
    }

    fn notify_entry(&self, entry: &Node) -> Result<NotifyUrl, PolicyError> {
        let fields = self.fields(entry, "a notify entry", &["url"], "url")?;
        let Some(field) = fields.first() else {
            return Err(self.err(entry, Problem::MissingKey { expected: "url" }));
        };
        let text = self.text(field.value, "url", "an http or https URL")?;
        NotifyUrl::parse(&text)
            .map_err(|reason| self.err(field.value, Problem::InvalidNotifyUrl { reason }))
    }

    fn effect(&self, node: &Node) -> Result<EffectSettings, PolicyError> {
        let mut e = EffectSettings::default();
        if let Kind::Null = node.kind {
            return Ok(e);
        }
        let keys = &[
            "mute_percent",
            "silence_window",
            "max_group_wait",
            "max_group_interval",
            "max_repeat_interval",
            "always_firing_after",
        ];
        let expected = "mute_percent, silence_window, max_group_wait, max_group_interval, \
                        max_repeat_interval, always_firing_after";
        for field in self.fields(node, "effect", keys, expected)? {
            let value = field.value;
            let min = Duration::from_secs(1);
            match field.name {
                "mute_percent" => e.mute_percent = self.whole(value, "mute_percent", 100)?,
                "silence_window" => {
                    e.silence_window = self.bounded_duration(value, "silence_window", min)?
                }
                "max_group_wait" => {
                    e.max_group_wait = self.bounded_duration(value, "max_group_wait", min)?
                }
                "max_group_interval" => {
                    e.max_group_interval =
                        self.bounded_duration(value, "max_group_interval", min)?;
                }
                "max_repeat_interval" => {
                    e.max_repeat_interval =
                        self.bounded_duration(value, "max_repeat_interval", min)?;
                }
                _ => {
                    e.always_firing_after =
                        self.bounded_duration(value, "always_firing_after", min)?
                }
            }
        }
        Ok(e)
    }

    fn api(&self, node: &Node) -> Result<ApiSettings, PolicyError> {
        let mut api = ApiSettings::default();
        if let Kind::Null = node.kind {
            return Ok(api);
        }
        let keys = &["basic_auth", "bearer_token_file", "tls"];
        for field in self.fields(node, "api", keys, "basic_auth, bearer_token_file, tls")? {
            let value = field.value;
            match field.name {
                "basic_auth" => {
                    let keys = &["username", "password_file"];
                    let (mut user, mut file) = (None, None);
                    for f in self.fields(value, "basic_auth", keys, "username, password_file")? {
                        let text = self.text(f.value, f.name, "text")?;
                        match f.name {
                            "username" => user = Some(text),
                            _ => file = Some(PathBuf::from(text)),
                        }
                    }
                    let (Some(username), Some(password_file)) = (user, file) else {
                        return Err(self.err(
                            value,
                            Problem::MissingKey {
                                expected: "username and password_file",
                            },
                        ));
                    };
                    api.basic_auth = Some(BasicAuth {
                        username,
                        password_file,
                    });
                }
                "bearer_token_file" => {
                    let text = self.text(value, "bearer_token_file", "a path")?;
                    api.bearer_token_file = Some(PathBuf::from(text));
                }
                _ => api.tls = Some(self.tls(value)?),
            }
        }
        if api.basic_auth.is_some() && api.bearer_token_file.is_some() {
            return Err(self.err(
                node,
                Problem::ConflictingKeys {
                    first: "basic_auth",
                    second: "bearer_token_file",
                },
            ));
        }
        Ok(api)
    }

    fn tls(&self, node: &Node) -> Result<TlsSettings, PolicyError> {
        let mut tls = TlsSettings::default();
        if let Kind::Null = node.kind {
            return Ok(tls);
        }
        let keys = &["ca_file", "server_name"];
        let expected = "ca_file, server_name";
        for f in self.fields(node, "tls", keys, expected)? {
            match f.name {
                "ca_file" => {
                    tls.ca_file = Some(PathBuf::from(self.text(f.value, "ca_file", "a path")?));
                }
                _ => {
                    tls.server_name = Some(self.text(f.value, "server_name", "a host name")?);
                }
            }
        }
        Ok(tls)
    }
}
