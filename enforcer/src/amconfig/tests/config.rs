//! The configuration walk: receivers, globals, defaults, files, HTTP client settings, errors.

use super::{config, config_in};
use crate::amconfig::extract::{
    EndpointKind, OPSGENIE_DEFAULT, Origin, PAGERDUTY_DEFAULT, PAGERDUTY_V1, PUSHOVER,
    SLACK_APP_DEFAULT, TELEGRAM_DEFAULT, Value,
};
use crate::amconfig::{AmConfigError, Endpoint, Problem, parse};

fn find<'a>(endpoints: &'a [Endpoint], receiver: &str, field: &str) -> &'a Endpoint {
    endpoints
        .iter()
        .find(|e| e.receiver == receiver && e.field == field)
        .unwrap_or_else(|| panic!("no {receiver} {field} in {endpoints:#?}"))
}

fn text(e: &Endpoint) -> &str {
    match &e.value {
        Value::Text(t) => t,
        other => panic!("{other:?}"),
    }
}

const ROUTE: &str = "route:\n  receiver: r\n";

#[test]
fn receivers_take_global_then_builtin_defaults() {
    let c = config(&format!(
        "{ROUTE}global:\n  slack_api_url: https://hooks.slack.com/services/G\n  \
         telegram_api_url: https://tg.example.com\n\
         receivers:\n\
         - name: r\n  slack_configs:\n  - channel: '#a'\n  - api_url: https://own.example.com/x\n  \
         pagerduty_configs:\n  - routing_key: k\n  - service_key: k\n  \
         opsgenie_configs:\n  - api_key: k\n  telegram_configs:\n  - chat_id: 1\n  \
         pushover_configs:\n  - user_key: u\n    token: t\n"
    ));
    let e = &c.endpoints;
    let slack = find(e, "r", "slack_configs[0].api_url");
    assert_eq!(slack.origin, Origin::Global("slack_api_url".to_owned()));
    assert_eq!(text(slack), "https://hooks.slack.com/services/G");
    assert_eq!((slack.location.line, slack.location.column), (4, 18));
    assert_eq!(
        text(find(e, "r", "slack_configs[1].api_url")),
        "https://own.example.com/x"
    );
    let pd = find(e, "r", "pagerduty_configs[0].url");
    assert_eq!(
        (text(pd), &pd.origin),
        (PAGERDUTY_DEFAULT, &Origin::Default)
    );
    let v1 = find(e, "r", "pagerduty_configs[1].service_key (events API v1)");
    assert_eq!((text(v1), &v1.origin), (PAGERDUTY_V1, &Origin::Fixed));
    assert_eq!(
        text(find(e, "r", "opsgenie_configs[0].api_url")),
        OPSGENIE_DEFAULT
    );
    let tg = find(e, "r", "telegram_configs[0].api_url");
    assert_eq!(text(tg), "https://tg.example.com");
    assert_ne!(text(tg), TELEGRAM_DEFAULT);
    assert_eq!(text(find(e, "r", "pushover_configs[0]")), PUSHOVER);
}

#[test]
fn slack_app_tokens_post_to_the_app_url() {
    let c = config(&format!(
        "{ROUTE}global:\n  slack_app_token: xoxb-x\nreceivers:\n\
         - name: r\n  slack_configs:\n  - channel: '#a'\n  - app_url: https://slack.example/api\n    app_token: y\n"
    ));
    assert_eq!(
        text(find(&c.endpoints, "r", "slack_configs[0].app_url")),
        SLACK_APP_DEFAULT
    );
    assert_eq!(
        text(find(&c.endpoints, "r", "slack_configs[1].app_url")),
        "https://slack.example/api"
    );
}

#[test]
fn email_uses_the_global_smarthost() {
    let c = config(&format!(
        "{ROUTE}global:\n  smtp_smarthost: smtp.example.com:587\nreceivers:\n\
         - name: r\n  email_configs:\n  - to: a@example.com\n  - to: b@example.com\n    smarthost: 10.0.0.1:25\n"
    ));
    let first = find(&c.endpoints, "r", "email_configs[0].smarthost");
    assert_eq!(first.kind, EndpointKind::Smtp);
    assert_eq!(text(first), "smtp.example.com:587");
    assert_eq!(
        text(find(&c.endpoints, "r", "email_configs[1].smarthost")),
        "10.0.0.1:25"
    );
    let none = config(&format!(
        "{ROUTE}receivers:\n- name: r\n  email_configs:\n  - to: a@example.com\n"
    ));
    assert!(matches!(none.endpoints[0].value, Value::Invalid(_)));
}

#[test]
fn http_config_proxy_and_oauth2_come_from_the_receiver_or_global() {
    let c = config(&format!(
        "{ROUTE}global:\n  http_config:\n    proxy_url: http://proxy.example:3128\nreceivers:\n\
         - name: r\n  webhook_configs:\n  - url: https://a.example/\n  - url: https://b.example/\n    \
         http_config:\n      proxy_from_environment: true\n      oauth2:\n        client_id: c\n        \
         token_url: https://sso.example/token\n        proxy_url: socks5://socks.example\n  \
         email_configs:\n  - to: x@example.com\n    smarthost: mail.example:25\n"
    ));
    let e = &c.endpoints;
    let proxy = find(e, "r", "webhook_configs[0].http_config.proxy_url");
    assert_eq!(proxy.origin, Origin::Global("http_config".to_owned()));
    assert_eq!(proxy.kind, EndpointKind::Proxy);
    assert_eq!(
        find(e, "r", "webhook_configs[0].url").via_proxy.as_deref(),
        Some("webhook_configs[0].http_config.proxy_url")
    );
    let env = find(
        e,
        "r",
        "webhook_configs[1].http_config.proxy_from_environment",
    );
    assert!(matches!(env.value, Value::Undecidable(_)));
    let token = find(e, "r", "webhook_configs[1].http_config.oauth2.token_url");
    assert_eq!(text(token), "https://sso.example/token");
    assert_eq!(
        token.via_proxy.as_deref(),
        Some("webhook_configs[1].http_config.oauth2.proxy_url")
    );
    // The receiver's own http_config replaces the global one; email has no HTTP client.
    assert!(
        !e.iter()
            .any(|x| x.field == "webhook_configs[1].http_config.proxy_url"
                && x.origin != Origin::Receiver)
    );
    assert!(
        !e.iter()
            .any(|x| x.field.starts_with("email_configs[0].http_config"))
    );
}

#[test]
fn files_are_read_relative_to_the_configuration() {
    let dir = std::env::temp_dir().join(format!("amconfig-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("url"), "  https://hooks.example.com/x\n").unwrap();
    let c = config_in(
        &format!(
            "{ROUTE}receivers:\n- name: r\n  webhook_configs:\n  - url_file: url\n  - url_file: missing\n"
        ),
        &dir,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    match &c.endpoints[0].value {
        Value::File { path, content } => {
            assert_eq!(path, "url");
            assert_eq!(content.as_deref(), Ok("https://hooks.example.com/x"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&c.endpoints[1].value, Value::File { content: Err(e), .. } if e.contains("missing"))
    );
}

#[test]
fn unknown_receiver_kinds_are_refused_not_skipped() {
    // Alertmanager's strict decoding refuses a receiver kind it does not know; so does check.
    let (line, column, p) = error(&format!(
        "{ROUTE}receivers:\n- name: r\n  jsmops_configs:\n  - api_url: https://x.example/\n"
    ));
    assert_eq!((line, column), (5, 3));
    assert_eq!(
        p.to_string(),
        "unknown key \"jsmops_configs\" in receivers[0]; Alertmanager refuses keys it does not know"
    );
}

#[test]
fn anchors_and_merge_keys_are_followed() {
    let c = config(&format!(
        "{ROUTE}receivers:\n- name: a\n  webhook_configs:\n  - &hook\n    url: http://169.254.169.254/\n    \
         send_resolved: false\n- name: b\n  webhook_configs:\n  - <<: *hook\n    send_resolved: true\n  - *hook\n"
    ));
    let urls: Vec<_> = c
        .endpoints
        .iter()
        .map(|e| (e.receiver.as_str(), text(e)))
        .collect();
    assert_eq!(
        urls,
        [
            ("a", "http://169.254.169.254/"),
            ("b", "http://169.254.169.254/"),
            ("b", "http://169.254.169.254/")
        ]
    );
}

#[test]
fn numbers_keep_their_spelling() {
    // yaml.v2 stores a plain scalar's text into a string field.
    let c = config(&format!(
        "{ROUTE}global:\n  smtp_smarthost: 2852039166:25\nreceivers:\n- name: r\n  email_configs:\n  - to: a@b\n"
    ));
    assert_eq!(text(&c.endpoints[0]), "2852039166:25");
}

fn error(yaml: &str) -> (usize, usize, Problem) {
    match parse(yaml, "am.yml", std::path::Path::new("/")) {
        Err(AmConfigError::Invalid { location, problem }) => {
            (location.line, location.column, problem)
        }
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn bad_configurations_are_errors_with_positions() {
    let (line, _, p) =
        error("route:\n  receiver: r\nreceivers:\n- name: r\n  webhook_configs: [\n");
    assert!(matches!(p, Problem::Yaml { .. }), "{p}");
    assert!(line >= 5, "{line}");
    assert!(matches!(error(""), (1, 1, Problem::Empty)));
    let (line, column, p) = error("receivers: 3\n");
    assert_eq!((line, column), (1, 12));
    assert_eq!(
        p.to_string(),
        "receivers must be a list, found a number or boolean"
    );
    let (_, _, p) = error("receivers: yes\n");
    assert_eq!(
        p.to_string(),
        "receivers must be a list, found a number or boolean"
    );
    let (line, _, p) = error("receivers:\n- name: a\n  name: b\n");
    assert_eq!(line, 3, "{p}");
    let (line, column, p) = error("receivers:\n- name: r\n  webhook_configs:\n  - url: [1]\n");
    assert_eq!((line, column), (4, 10), "{p}");
    assert!(matches!(error("- a\n- b\n").2, Problem::WrongType { .. }));
    assert!(
        error("a: 1\n---\nb: 2\n")
            .2
            .to_string()
            .contains("one YAML document")
    );
}

#[test]
fn sns_without_region_or_keys_cannot_be_decided() {
    let c = config(&format!(
        "{ROUTE}receivers:\n- name: r\n  sns_configs:\n  - topic_arn: arn:aws:sns:x\n  \
         - topic_arn: arn:aws:sns:y\n    sigv4:\n      region: eu-central-1\n      access_key: AK\n      secret_key: s\n"
    ));
    let e = &c.endpoints;
    assert!(matches!(
        find(e, "r", "sns_configs[0].api_url").value,
        Value::Undecidable(_)
    ));
    assert!(
        matches!(&find(e, "r", "sns_configs[0].sigv4").value, Value::Undecidable(w) if w.contains("169.254.169.254"))
    );
    assert_eq!(
        text(find(e, "r", "sns_configs[1].api_url")),
        "https://sns.eu-central-1.amazonaws.com/"
    );
    assert!(!e.iter().any(|x| x.field == "sns_configs[1].sigv4"));
}

#[test]
fn yaml_1_1_booleans_turn_the_environment_proxy_on() {
    for yes in ["true", "yes", "on", "True"] {
        let c = config(&format!(
            "{ROUTE}global:\n  http_config:\n    proxy_from_environment: {yes}\nreceivers:\n\
             - name: r\n  webhook_configs:\n  - url: https://a.example/\n"
        ));
        let env = find(
            &c.endpoints,
            "r",
            "webhook_configs[0].http_config.proxy_from_environment",
        );
        assert!(matches!(env.value, Value::Undecidable(_)), "{yes}");
    }
    let off = config(&format!(
        "{ROUTE}global:\n  http_config:\n    proxy_from_environment: false\nreceivers:\n\
         - name: r\n  webhook_configs:\n  - url: https://a.example/\n"
    ));
    assert_eq!(off.endpoints.len(), 1);
}
