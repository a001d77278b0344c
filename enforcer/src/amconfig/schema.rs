//! The shape Alertmanager accepts, checked before anything is extracted: Alertmanager reads its
//! configuration with Go's strict YAML decoding (`yaml.UnmarshalStrict`), which refuses a key no
//! field declares, so a misspelled `recievers:` or a policy file given by mistake is an error
//! here too, not "0 destinations, ok". Key lists follow Alertmanager's `config/` and
//! `notify/*/config.go` (main, 2026) and prometheus/common's HTTP client configuration.
//! Free-form values (`labels`, `details`, `payload`, `fields`, headers, time intervals' inner
//! ranges, Slack/Mattermost attachments) are not walked.

use crate::input::cut;
use crate::policy::Location;
use crate::yaml::{Kind, Node};

use super::{AmConfigError, Problem};

#[rustfmt::skip]
const TOP: &[&str] = &[
    "global", "route", "inhibit_rules", "receivers", "templates", "mute_time_intervals",
    "time_intervals", "tracing", "event_recorder",
];

#[rustfmt::skip]
const GLOBAL: &[&str] = &[
    "resolve_timeout", "http_config", "jira_api_url", "smtp_from", "smtp_hello",
    "smtp_smarthost", "smtp_auth_username", "smtp_auth_password", "smtp_auth_password_file",
    "smtp_auth_secret", "smtp_auth_secret_file", "smtp_auth_identity", "smtp_require_tls",
    "smtp_tls_config", "smtp_force_implicit_tls", "slack_api_url", "slack_api_url_file",
    "slack_app_token", "slack_app_token_file", "slack_app_url", "pagerduty_url",
    "opsgenie_api_url", "opsgenie_api_key", "opsgenie_api_key_file", "wechat_api_url",
    "wechat_api_secret", "wechat_api_secret_file", "wechat_api_corp_id", "victorops_api_url",
    "victorops_api_key", "victorops_api_key_file", "telegram_api_url", "telegram_bot_token",
    "telegram_bot_token_file", "webex_api_url", "rocketchat_api_url", "rocketchat_token",
    "rocketchat_token_file", "rocketchat_token_id", "rocketchat_token_id_file",
    "mattermost_webhook_url", "mattermost_webhook_url_file",
];

#[rustfmt::skip]
const ROUTE: &[&str] = &[
    "receiver", "group_by", "match", "match_re", "matchers", "mute_time_intervals",
    "active_time_intervals", "continue", "routes", "group_wait", "group_interval",
    "repeat_interval", "labels",
];

#[rustfmt::skip]
const INHIBIT_RULE: &[&str] = &[
    "name", "source_match", "source_match_re", "source_matchers", "target_match",
    "target_match_re", "target_matchers", "equal",
];

const TIME_INTERVAL: &[&str] = &["name", "time_intervals"];

#[rustfmt::skip]
const HTTP_CONFIG: &[&str] = &[
    "basic_auth", "authorization", "oauth2", "bearer_token", "bearer_token_file", "tls_config",
    "follow_redirects", "enable_http2", "proxy_url", "no_proxy", "proxy_from_environment",
    "proxy_connect_header", "http_headers",
];

#[rustfmt::skip]
const BASIC_AUTH: &[&str] = &[
    "username", "username_file", "username_ref", "password", "password_file", "password_ref",
];

const AUTHORIZATION: &[&str] = &["type", "credentials", "credentials_file", "credentials_ref"];

#[rustfmt::skip]
const OAUTH2: &[&str] = &[
    "client_id", "client_secret", "client_secret_file", "client_secret_ref",
    "client_certificate_key_id", "client_certificate_key", "client_certificate_key_file",
    "client_certificate_key_ref", "grant_type", "signature_algorithm", "iss", "audience",
    "claims", "scopes", "token_url", "endpoint_params", "tls_config", "proxy_url", "no_proxy",
    "proxy_from_environment", "proxy_connect_header",
];

#[rustfmt::skip]
const TLS_CONFIG: &[&str] = &[
    "ca", "cert", "key", "ca_file", "cert_file", "key_file", "ca_ref", "cert_ref", "key_ref",
    "server_name", "insecure_skip_verify", "min_version", "max_version",
];

#[rustfmt::skip]
const RECEIVER: &[&str] = &[
    "name", "labels", "discord_configs", "email_configs", "incidentio_configs",
    "pagerduty_configs", "slack_configs", "webhook_configs", "opsgenie_configs",
    "wechat_configs", "pushover_configs", "victorops_configs", "sns_configs", "telegram_configs",
    "webex_configs", "msteams_configs", "msteamsv2_configs", "jira_configs",
    "rocketchat_configs", "mattermost_configs",
];

/// The keys of one entry of each `*_configs` list (`send_resolved` is common to all).
#[rustfmt::skip]
fn integration(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "discord_configs" => &[
            "http_config", "webhook_url", "webhook_url_file", "content", "title", "message",
            "username", "avatar_url",
        ],
        "email_configs" => &[
            "to", "from", "hello", "smarthost", "auth_username", "auth_password",
            "auth_password_file", "auth_secret", "auth_secret_file", "auth_identity", "headers",
            "html", "text", "require_tls", "tls_config", "force_implicit_tls", "threading",
        ],
        "incidentio_configs" => &[
            "http_config", "url", "url_file", "alert_source_token", "alert_source_token_file",
            "max_alerts", "timeout",
        ],
        "pagerduty_configs" => &[
            "http_config", "service_key", "service_key_file", "routing_key", "routing_key_file",
            "url", "client", "client_url", "description", "details", "images", "links", "source",
            "severity", "class", "component", "group", "timeout",
        ],
        "slack_configs" => &[
            "http_config", "api_url", "api_url_file", "app_token", "app_token_file", "app_url",
            "channel", "username", "color", "title", "title_link", "pretext", "text",
            "message_text", "fields", "short_fields", "footer", "fallback", "callback_id",
            "icon_emoji", "icon_url", "image_url", "thumb_url", "link_names", "mrkdwn_in",
            "actions", "update_message", "timeout",
        ],
        "webhook_configs" => &[
            "http_config", "url", "url_file", "max_alerts", "timeout", "payload",
        ],
        "opsgenie_configs" => &[
            "http_config", "api_key", "api_key_file", "api_url", "message", "description",
            "source", "details", "entity", "responders", "actions", "tags", "note", "priority",
            "update_alerts",
        ],
        "wechat_configs" => &[
            "http_config", "api_secret", "api_secret_file", "corp_id", "message", "api_url",
            "to_user", "to_party", "to_tag", "agent_id", "message_type",
        ],
        "pushover_configs" => &[
            "http_config", "user_key", "user_key_file", "token", "token_file", "title",
            "message", "url", "url_title", "device", "sound", "priority", "retry", "expire",
            "ttl", "html", "monospace",
        ],
        "victorops_configs" => &[
            "http_config", "api_key", "api_key_file", "api_url", "routing_key", "message_type",
            "state_message", "entity_display_name", "monitoring_tool", "custom_fields",
        ],
        "sns_configs" => &[
            "http_config", "api_url", "sigv4", "topic_arn", "phone_number", "target_arn",
            "subject", "message", "attributes", "use_aws_http_client",
        ],
        "telegram_configs" => &[
            "http_config", "api_url", "bot_token", "bot_token_file", "chat_id", "chat_id_file",
            "message_thread_id", "message", "disable_notifications", "parse_mode",
        ],
        "webex_configs" => &["http_config", "api_url", "message", "room_id"],
        "msteams_configs" => &[
            "http_config", "webhook_url", "webhook_url_file", "title", "summary", "text",
        ],
        "msteamsv2_configs" => &[
            "http_config", "webhook_url", "webhook_url_file", "title", "text",
        ],
        "jira_configs" => &[
            "http_config", "api_url", "api_type", "project", "summary", "description", "labels",
            "priority", "issue_type", "reopen_transition", "resolve_transition",
            "wont_fix_resolution", "reopen_duration", "fields",
        ],
        "rocketchat_configs" => &[
            "http_config", "api_url", "token_id", "token_id_file", "token", "token_file",
            "channel", "color", "title", "title_link", "text", "fields", "short_fields", "emoji",
            "icon_url", "image_url", "thumb_url", "link_names", "actions",
        ],
        "mattermost_configs" => &[
            "http_config", "webhook_url", "webhook_url_file", "channel", "username", "text",
            "fallback", "color", "pretext", "author_name", "author_link", "author_icon", "title",
            "title_link", "fields", "thumb_url", "footer", "footer_icon", "image_url",
            "icon_url", "icon_emoji", "attachments", "type", "props", "priority",
        ],
        _ => return None,
    })
}

struct Walk<'a> {
    file: &'a str,
}

impl Walk<'_> {
    fn err(&self, node: &Node, problem: Problem) -> AmConfigError {
        AmConfigError::Invalid {
            location: Location {
                file: self.file.into(),
                line: node.line,
                column: node.column,
            },
            problem,
        }
    }

    /// Refuses a key of mapping `node` that `known` does not list; returns the entries.
    /// Other node kinds are left to the extractor's type checks.
    fn keys<'n>(
        &self,
        node: &'n Node,
        within: &str,
        known: &[&str],
    ) -> Result<&'n [(Node, Node)], AmConfigError> {
        let Kind::Map(entries) = &node.kind else {
            return Ok(&[]);
        };
        for (key, _) in entries {
            let name = match &key.kind {
                Kind::Str(s) => s.as_str(),
                _ => "",
            };
            if !known.contains(&name) {
                let shown = key.text("").unwrap_or_else(|| name.to_owned());
                return Err(self.err(
                    key,
                    Problem::UnknownKey {
                        key: cut(&shown).into_owned(),
                        within: within.to_owned(),
                        suggestion: closest(name, known).map(str::to_owned),
                    },
                ));
            }
        }
        Ok(entries)
    }

    fn items(node: &Node) -> &[Node] {
        match &node.kind {
            Kind::Seq(items) => items,
            _ => &[],
        }
    }

    fn http_config(&self, node: &Node, within: &str) -> Result<(), AmConfigError> {
        for (key, value) in self.keys(node, within, HTTP_CONFIG)? {
            let inner = format!("{within}.{}", key_name(key));
            match key_name(key) {
                "basic_auth" => {
                    self.keys(value, &inner, BASIC_AUTH)?;
                }
                "authorization" => {
                    self.keys(value, &inner, AUTHORIZATION)?;
                }
                "tls_config" => {
                    self.keys(value, &inner, TLS_CONFIG)?;
                }
                "oauth2" => {
                    for (k, v) in self.keys(value, &inner, OAUTH2)? {
                        if key_name(k) == "tls_config" {
                            self.keys(v, &format!("{inner}.tls_config"), TLS_CONFIG)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn route(&self, node: &Node, within: &str) -> Result<(), AmConfigError> {
        for (key, value) in self.keys(node, within, ROUTE)? {
            if key_name(key) == "routes" {
                for (i, child) in Self::items(value).iter().enumerate() {
                    self.route(child, &format!("{within}.routes[{i}]"))?;
                }
            }
        }
        Ok(())
    }

    fn receiver(&self, node: &Node, within: &str) -> Result<(), AmConfigError> {
        for (key, value) in self.keys(node, within, RECEIVER)? {
            let kind = key_name(key);
            let Some(known) = integration(kind) else {
                continue;
            };
            for (i, entry) in Self::items(value).iter().enumerate() {
                let inner = format!("{within}.{kind}[{i}]");
                let mut all = known.to_vec();
                all.push("send_resolved");
                for (k, v) in self.keys(entry, &inner, &all)? {
                    match key_name(k) {
                        "http_config" => self.http_config(v, &format!("{inner}.http_config"))?,
                        "tls_config" => {
                            self.keys(v, &format!("{inner}.tls_config"), TLS_CONFIG)?;
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

fn key_name(key: &Node) -> &str {
    match &key.kind {
        Kind::Str(s) => s,
        _ => "",
    }
}

/// The known key nearest to `key` (at most two edits away), for "did you mean".
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().take(64).collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

/// Refuses keys Alertmanager's strict decoding refuses, and a configuration without receivers
/// (Alertmanager needs at least the root route's receiver).
pub(super) fn check(file: &str, root: &Node) -> Result<(), AmConfigError> {
    let walk = Walk { file };
    let entries = walk.keys(root, "the configuration", TOP)?;
    for (key, value) in entries {
        match key_name(key) {
            "global" => {
                for (k, v) in walk.keys(value, "global", GLOBAL)? {
                    match key_name(k) {
                        "http_config" => walk.http_config(v, "global.http_config")?,
                        "smtp_tls_config" => {
                            walk.keys(v, "global.smtp_tls_config", TLS_CONFIG)?;
                        }
                        _ => {}
                    }
                }
            }
            "route" => walk.route(value, "route")?,
            "inhibit_rules" => {
                for (i, rule) in Walk::items(value).iter().enumerate() {
                    walk.keys(rule, &format!("inhibit_rules[{i}]"), INHIBIT_RULE)?;
                }
            }
            "mute_time_intervals" | "time_intervals" => {
                for (i, t) in Walk::items(value).iter().enumerate() {
                    walk.keys(t, &format!("{}[{i}]", key_name(key)), TIME_INTERVAL)?;
                }
            }
            "receivers" => {
                for (i, r) in Walk::items(value).iter().enumerate() {
                    walk.receiver(r, &format!("receivers[{i}]"))?;
                }
            }
            _ => {}
        }
    }
    match root.value("receivers") {
        None => return Err(walk.err(root, Problem::NoReceivers)),
        Some(r) if matches!(&r.kind, Kind::Seq(items) if items.is_empty()) => {
            return Err(walk.err(r, Problem::NoReceivers));
        }
        Some(_) => {}
    }
    Ok(())
}
