//! Every place an Alertmanager configuration says where a notification goes.
//!
//! Follows Alertmanager's own defaulting (`config/config.go`, `Config.UnmarshalYAML`): a
//! receiver without its own URL takes the `global` one, and without that Alertmanager's
//! built-in default; a receiver without `http_config` takes `global.http_config` (its proxy
//! and OAuth2 token endpoint included). Receiver kinds this file does not know are reported,
//! never skipped: an unknown integration is an unchecked destination.

use std::path::{Path, PathBuf};

mod special;

use super::{AmConfigError, Problem};
use crate::policy::Location;
use crate::yaml::{Kind, Node};

/// Alertmanager's built-in defaults (`DefaultGlobalConfig`) and fixed endpoints.
pub const PAGERDUTY_DEFAULT: &str = "https://events.pagerduty.com/v2/enqueue";
pub const PAGERDUTY_V1: &str = "https://events.pagerduty.com/generic/2010-04-15/create_event.json";
pub const OPSGENIE_DEFAULT: &str = "https://api.opsgenie.com/";
pub const WECHAT_DEFAULT: &str = "https://qyapi.weixin.qq.com/cgi-bin/";
pub const VICTOROPS_DEFAULT: &str =
    "https://alert.victorops.com/integrations/generic/20131114/alert/";
pub const TELEGRAM_DEFAULT: &str = "https://api.telegram.org";
pub const WEBEX_DEFAULT: &str = "https://webexapis.com/v1/messages";
pub const ROCKETCHAT_DEFAULT: &str = "https://open.rocket.chat/";
pub const SLACK_APP_DEFAULT: &str = "https://slack.com/api/chat.postMessage";
pub const PUSHOVER: &str = "https://api.pushover.net/1/messages.json";

/// How a destination is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKind {
    /// An `http`/`https` URL Alertmanager sends to.
    Http,
    /// An HTTP client proxy (`http`, `https`, `socks5`): the kernel sees this connection.
    Proxy,
    /// An SMTP `host:port`.
    Smtp,
}

/// Where the value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The receiver's own field.
    Receiver,
    /// A `global` key the receiver inherits.
    Global(String),
    /// Alertmanager's built-in default.
    Default,
    /// Hard-coded in Alertmanager for this integration.
    Fixed,
}

impl Origin {
    pub fn describe(&self) -> Option<String> {
        match self {
            Origin::Receiver => None,
            Origin::Global(key) => Some(format!("from global.{key}")),
            Origin::Default => Some("Alertmanager's default".to_owned()),
            Origin::Fixed => Some("fixed in Alertmanager".to_owned()),
        }
    }
}

/// The value as written (or read from its file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    /// A `*_file` field: the path as written and the trimmed content or why it is unreadable.
    File {
        path: String,
        content: Result<String, String>,
    },
    /// Known to send somewhere this file does not say (environment, SDK defaults).
    Undecidable(String),
    /// Alertmanager would refuse this, or we cannot know what it does.
    Invalid(String),
}

/// One destination a notification can be sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub receiver: String,
    /// e.g. `webhook_configs[0].url`, `slack_configs[1].http_config.proxy_url`.
    pub field: String,
    pub origin: Origin,
    pub location: Location,
    pub kind: EndpointKind,
    pub value: Value,
    /// The proxy field that carries this endpoint's requests, if any.
    pub via_proxy: Option<String>,
}

/// A URL field with its fallbacks.
struct Chain {
    field: &'static str,
    file_field: Option<&'static str>,
    global: Option<&'static str>,
    global_file: Option<&'static str>,
    default: Option<&'static str>,
}

const fn chain(field: &'static str, file_field: Option<&'static str>) -> Chain {
    Chain {
        field,
        file_field,
        global: None,
        global_file: None,
        default: None,
    }
}

const fn with_global(
    field: &'static str,
    global: &'static str,
    default: Option<&'static str>,
) -> Chain {
    Chain {
        field,
        file_field: None,
        global: Some(global),
        global_file: None,
        default,
    }
}

/// The receiver kinds and how each finds its URL.
fn url_chain(kind: &str) -> Option<Chain> {
    Some(match kind {
        "webhook_configs" | "incidentio_configs" => chain("url", Some("url_file")),
        "discord_configs" | "msteams_configs" | "msteamsv2_configs" => {
            chain("webhook_url", Some("webhook_url_file"))
        }
        "mattermost_configs" => Chain {
            global: Some("mattermost_webhook_url"),
            global_file: Some("mattermost_webhook_url_file"),
            ..chain("webhook_url", Some("webhook_url_file"))
        },
        "opsgenie_configs" => with_global("api_url", "opsgenie_api_url", Some(OPSGENIE_DEFAULT)),
        "wechat_configs" => with_global("api_url", "wechat_api_url", Some(WECHAT_DEFAULT)),
        "victorops_configs" => with_global("api_url", "victorops_api_url", Some(VICTOROPS_DEFAULT)),
        "telegram_configs" => with_global("api_url", "telegram_api_url", Some(TELEGRAM_DEFAULT)),
        "webex_configs" => with_global("api_url", "webex_api_url", Some(WEBEX_DEFAULT)),
        "rocketchat_configs" => {
            with_global("api_url", "rocketchat_api_url", Some(ROCKETCHAT_DEFAULT))
        }
        "jira_configs" => with_global("api_url", "jira_api_url", None),
        "pagerduty_configs" => with_global("url", "pagerduty_url", Some(PAGERDUTY_DEFAULT)),
        _ => return None,
    })
}

/// Kinds handled by hand below.
const SPECIAL_KINDS: &[&str] = &[
    "slack_configs",
    "email_configs",
    "pushover_configs",
    "sns_configs",
];

/// What yaml.v2 (Alertmanager's YAML library, YAML 1.1) reads as `true`.
const YAML11_TRUE: &[&str] = &[
    "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y",
];

/// "a string", "a list", ... for messages; numbers and booleans are one kind here (their
/// source text is what Alertmanager reads).
fn found(node: &Node) -> &'static str {
    match node.kind {
        Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => "a number or boolean",
        _ => node.found(),
    }
}

/// The document being read.
pub(super) struct Cx<'a> {
    pub text: &'a str,
    pub file: &'a str,
    /// `*_file` paths are read relative to this directory (the configuration's).
    pub base: &'a Path,
}

impl Cx<'_> {
    fn at(&self, node: &Node) -> Location {
        Location {
            file: self.file.into(),
            line: node.line,
            column: node.column,
        }
    }

    fn err(&self, node: &Node, problem: Problem) -> AmConfigError {
        AmConfigError::Invalid {
            location: self.at(node),
            problem,
        }
    }

    fn expect_map<'n>(&self, node: &'n Node, what: &str) -> Result<&'n Node, AmConfigError> {
        match node.kind {
            Kind::Map(_) => Ok(node),
            _ => Err(self.err(
                node,
                Problem::WrongType {
                    what: what.to_owned(),
                    expected: "a mapping",
                    found: found(node),
                },
            )),
        }
    }

    fn list<'n>(&self, node: &'n Node, what: &str) -> Result<&'n [Node], AmConfigError> {
        match &node.kind {
            Kind::Null => Ok(&[]),
            Kind::Seq(items) => Ok(items),
            _ => Err(self.err(
                node,
                Problem::WrongType {
                    what: what.to_owned(),
                    expected: "a list",
                    found: found(node),
                },
            )),
        }
    }

    fn text(&self, node: &Node, what: &str) -> Result<String, AmConfigError> {
        node.text(self.text).ok_or_else(|| {
            self.err(
                node,
                Problem::WrongType {
                    what: what.to_owned(),
                    expected: "a string",
                    found: found(node),
                },
            )
        })
    }

    fn read_file(&self, path: &str) -> Value {
        let full: PathBuf = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            self.base.join(path)
        };
        let read = crate::input::read_capped(
            &full,
            crate::amconfig::MAX_FIELD_FILE_BYTES,
            "a file named by a `*_file` field",
        )
        .map_err(|e| format!("cannot read {}: {e}", full.display()))
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", full.display()))
        });
        let content = match read {
            Ok(s) if s.trim().is_empty() => Err(format!("{} is empty", full.display())),
            Ok(s) => Ok(s.trim().to_owned()),
            Err(e) => Err(e),
        };
        Value::File {
            path: path.to_owned(),
            content,
        }
    }
}

/// Every endpoint of every receiver, in file order.
pub(super) fn endpoints(cx: &Cx<'_>, root: &Node) -> Result<Vec<Endpoint>, AmConfigError> {
    if let Kind::Null = root.kind {
        return Err(cx.err(root, Problem::Empty));
    }
    cx.expect_map(root, "the configuration")?;
    let global = match root.value("global") {
        Some(g) => Some(cx.expect_map(g, "global")?),
        None => None,
    };
    let mut out = Vec::new();
    let Some(receivers) = root.value("receivers") else {
        return Ok(out);
    };
    for (i, receiver) in cx.list(receivers, "receivers")?.iter().enumerate() {
        cx.expect_map(receiver, "a receiver")?;
        let name = match receiver.value("name") {
            Some(n) => cx.text(n, "a receiver name")?,
            None => format!("receivers[{i}]"),
        };
        let r = Receiver {
            cx,
            global,
            name: &name,
        };
        let Kind::Map(entries) = &receiver.kind else {
            continue;
        };
        for (key, value) in entries {
            let Some(kind) = key.text(cx.text) else {
                continue;
            };
            if !kind.ends_with("_configs") {
                continue;
            }
            for (j, entry) in cx.list(value, &kind)?.iter().enumerate() {
                if let Kind::Null = entry.kind {
                    continue;
                }
                cx.expect_map(entry, &format!("an entry of {kind}"))?;
                r.integration(&mut out, &kind, &format!("{kind}[{j}]"), entry)?;
            }
        }
    }
    Ok(out)
}

struct Receiver<'a> {
    cx: &'a Cx<'a>,
    global: Option<&'a Node>,
    name: &'a str,
}

impl Receiver<'_> {
    fn push(
        &self,
        out: &mut Vec<Endpoint>,
        field: String,
        origin: Origin,
        at: &Node,
        kind: EndpointKind,
        value: Value,
    ) {
        out.push(Endpoint {
            receiver: self.name.to_owned(),
            field,
            origin,
            location: self.cx.at(at),
            kind,
            value,
            via_proxy: None,
        });
    }

    fn global(&self, key: &str) -> Option<&Node> {
        self.global.and_then(|g| g.value(key))
    }

    /// One `*_configs` entry.
    fn integration(
        &self,
        out: &mut Vec<Endpoint>,
        kind: &str,
        prefix: &str,
        entry: &Node,
    ) -> Result<(), AmConfigError> {
        let first = out.len();
        if let Some(chain) = url_chain(kind) {
            let v1 = kind == "pagerduty_configs"
                && (entry.value("service_key").is_some()
                    || entry.value("service_key_file").is_some());
            if v1 {
                // Events API v1 (service_key) posts to a fixed URL; `url` is not used.
                let field = format!("{prefix}.service_key (events API v1)");
                let value = Value::Text(PAGERDUTY_V1.to_owned());
                self.push(out, field, Origin::Fixed, entry, EndpointKind::Http, value);
            } else {
                self.chain(out, prefix, entry, &chain)?;
            }
        } else if !SPECIAL_KINDS.contains(&kind) {
            let why = format!(
                "unknown receiver kind \"{kind}\": its destinations cannot be checked \
                 (newer than this enforcer?)"
            );
            let field = prefix.to_owned();
            self.push(
                out,
                field,
                Origin::Receiver,
                entry,
                EndpointKind::Http,
                Value::Invalid(why),
            );
            return Ok(());
        }
        match kind {
            "slack_configs" => self.slack(out, prefix, entry)?,
            "email_configs" => return self.email(out, prefix, entry),
            "pushover_configs" => {
                let value = Value::Text(PUSHOVER.to_owned());
                let (field, kind) = (prefix.to_owned(), EndpointKind::Http);
                self.push(out, field, Origin::Fixed, entry, kind, value);
            }
            "sns_configs" => self.sns(out, prefix, entry)?,
            _ => {}
        }
        self.http_config(out, first, prefix, entry)
    }

    /// A URL field, its `_file` twin, the global fallbacks and the built-in default.
    fn chain(
        &self,
        out: &mut Vec<Endpoint>,
        prefix: &str,
        entry: &Node,
        c: &Chain,
    ) -> Result<(), AmConfigError> {
        let http = EndpointKind::Http;
        if let Some(node) = entry.value(c.field) {
            let value = Value::Text(self.cx.text(node, c.field)?);
            self.push(
                out,
                format!("{prefix}.{}", c.field),
                Origin::Receiver,
                node,
                http,
                value,
            );
        } else if let Some((f, node)) = c.file_field.and_then(|f| Some((f, entry.value(f)?))) {
            let value = self.cx.read_file(&self.cx.text(node, f)?);
            self.push(
                out,
                format!("{prefix}.{f}"),
                Origin::Receiver,
                node,
                http,
                value,
            );
        } else if let Some((g, node)) = c.global.and_then(|g| Some((g, self.global(g)?))) {
            let value = Value::Text(self.cx.text(node, g)?);
            let origin = Origin::Global(g.to_owned());
            self.push(
                out,
                format!("{prefix}.{}", c.field),
                origin,
                node,
                http,
                value,
            );
        } else if let Some((g, node)) = c.global_file.and_then(|g| Some((g, self.global(g)?))) {
            let value = self.cx.read_file(&self.cx.text(node, g)?);
            let origin = Origin::Global(g.to_owned());
            let field = format!("{prefix}.{}", c.file_field.unwrap_or(c.field));
            self.push(out, field, origin, node, http, value);
        } else if let Some(default) = c.default {
            let value = Value::Text(default.to_owned());
            let field = format!("{prefix}.{}", c.field);
            self.push(out, field, Origin::Default, entry, http, value);
        } else {
            let mut names = vec![c.field];
            names.extend(c.file_field);
            names.extend(c.global.map(|_| "a global default"));
            let why = format!("no URL: Alertmanager needs {}", names.join(" or "));
            let field = format!("{prefix}.{}", c.field);
            self.push(
                out,
                field,
                Origin::Receiver,
                entry,
                http,
                Value::Invalid(why),
            );
        }
        Ok(())
    }
}
