//! The receiver kinds that do not follow the plain URL chain (Slack, email, SNS), and the
//! HTTP client settings (proxy, OAuth2) every HTTP integration has.

use super::{
    Chain, Endpoint, EndpointKind, Origin, Receiver, SLACK_APP_DEFAULT, Value, YAML11_TRUE, chain,
};
use crate::amconfig::AmConfigError;
use crate::yaml::Node;

impl Receiver<'_> {
    /// Slack: a webhook `api_url`, or an app token posting to `app_url`.
    pub(super) fn slack(
        &self,
        out: &mut Vec<Endpoint>,
        prefix: &str,
        entry: &Node,
    ) -> Result<(), AmConfigError> {
        let local_app =
            entry.value("app_token").is_some() || entry.value("app_token_file").is_some();
        let local_api = entry.value("api_url").is_some() || entry.value("api_url_file").is_some();
        let local_auth = entry
            .value("http_config")
            .and_then(|h| h.value("authorization"))
            .is_some();
        let global_app = self.global("slack_app_token").is_some()
            || self.global("slack_app_token_file").is_some();
        let app = Chain {
            global: Some("slack_app_url"),
            default: Some(SLACK_APP_DEFAULT),
            ..chain("app_url", None)
        };
        if local_app || (!local_api && global_app && !local_auth) {
            return self.chain(out, prefix, entry, &app);
        }
        let api = Chain {
            global: Some("slack_api_url"),
            global_file: Some("slack_api_url_file"),
            ..chain("api_url", Some("api_url_file"))
        };
        self.chain(out, prefix, entry, &api)
    }

    /// Email: SMTP to `smarthost` (or `global.smtp_smarthost`); no HTTP client.
    pub(super) fn email(
        &self,
        out: &mut Vec<Endpoint>,
        prefix: &str,
        entry: &Node,
    ) -> Result<(), AmConfigError> {
        let field = format!("{prefix}.smarthost");
        let smtp = EndpointKind::Smtp;
        if let Some(node) = entry.value("smarthost") {
            let value = Value::Text(self.cx.text(node, "smarthost")?);
            self.push(out, field, Origin::Receiver, node, smtp, value);
        } else if let Some(node) = self.global("smtp_smarthost") {
            let value = Value::Text(self.cx.text(node, "smtp_smarthost")?);
            let origin = Origin::Global("smtp_smarthost".to_owned());
            self.push(out, field, origin, node, smtp, value);
        } else {
            let why = "no smarthost: Alertmanager needs smarthost or global.smtp_smarthost";
            self.push(
                out,
                field,
                Origin::Receiver,
                entry,
                smtp,
                Value::Invalid(why.to_owned()),
            );
        }
        Ok(())
    }

    /// Amazon SNS: `api_url`, else the AWS SDK's endpoint for the region.
    pub(super) fn sns(
        &self,
        out: &mut Vec<Endpoint>,
        prefix: &str,
        entry: &Node,
    ) -> Result<(), AmConfigError> {
        let http = EndpointKind::Http;
        let sigv4 = entry.value("sigv4");
        if let Some(node) = entry.value("api_url") {
            let value = Value::Text(self.cx.text(node, "api_url")?);
            self.push(
                out,
                format!("{prefix}.api_url"),
                Origin::Receiver,
                node,
                http,
                value,
            );
        } else if let Some(node) = sigv4.and_then(|s| s.value("region")) {
            let region = self.cx.text(node, "sigv4.region")?;
            let value = Value::Text(format!("https://sns.{region}.amazonaws.com/"));
            self.push(
                out,
                format!("{prefix}.api_url"),
                Origin::Default,
                node,
                http,
                value,
            );
        } else {
            let why = "the AWS SDK's SNS endpoint for the region of the environment";
            let value = Value::Undecidable(why.to_owned());
            self.push(
                out,
                format!("{prefix}.api_url"),
                Origin::Default,
                entry,
                http,
                value,
            );
        }
        if sigv4.and_then(|s| s.value("access_key")).is_none() {
            let why = "AWS credentials from the SDK's default chain (environment, files, or the \
                       instance metadata service 169.254.169.254, which the cloud-metadata preset \
                       blocks)";
            let value = Value::Undecidable(why.to_owned());
            self.push(
                out,
                format!("{prefix}.sigv4"),
                Origin::Default,
                entry,
                http,
                value,
            );
        }
        Ok(())
    }

    /// The HTTP client's proxy and OAuth2 token endpoint, from the entry's `http_config` or
    /// the global one. Marks the endpoints pushed since `first` as sent through the proxy.
    pub(super) fn http_config(
        &self,
        out: &mut Vec<Endpoint>,
        first: usize,
        prefix: &str,
        entry: &Node,
    ) -> Result<(), AmConfigError> {
        let (config, origin) = match entry.value("http_config") {
            Some(h) => (h, Origin::Receiver),
            None => match self.global("http_config") {
                Some(h) => (h, Origin::Global("http_config".to_owned())),
                None => return Ok(()),
            },
        };
        self.cx.expect_map(config, "http_config")?;
        let base = format!("{prefix}.http_config");
        let main_end = out.len();
        if let Some(proxy) = self.proxy(out, &base, config, &origin)? {
            for e in &mut out[first..main_end] {
                e.via_proxy = Some(proxy.clone());
            }
        }
        if let Some(oauth2) = config.value("oauth2") {
            self.cx.expect_map(oauth2, "oauth2")?;
            let field = format!("{base}.oauth2.token_url");
            let token_at = out.len();
            match oauth2.value("token_url") {
                Some(node) => {
                    let value = Value::Text(self.cx.text(node, "token_url")?);
                    self.push(out, field, origin.clone(), node, EndpointKind::Http, value);
                }
                None => {
                    let value = Value::Invalid("oauth2 without token_url".to_owned());
                    self.push(
                        out,
                        field,
                        origin.clone(),
                        oauth2,
                        EndpointKind::Http,
                        value,
                    );
                }
            }
            if let Some(proxy) = self.proxy(out, &format!("{base}.oauth2"), oauth2, &origin)? {
                out[token_at].via_proxy = Some(proxy);
            }
        }
        Ok(())
    }

    /// `proxy_url` / `proxy_from_environment` of an HTTP client config; returns the field.
    fn proxy(
        &self,
        out: &mut Vec<Endpoint>,
        base: &str,
        config: &Node,
        origin: &Origin,
    ) -> Result<Option<String>, AmConfigError> {
        let kind = EndpointKind::Proxy;
        if let Some(node) = config.value("proxy_url") {
            let field = format!("{base}.proxy_url");
            let value = Value::Text(self.cx.text(node, "proxy_url")?);
            self.push(out, field.clone(), origin.clone(), node, kind, value);
            return Ok(Some(field));
        }
        let from_env = config.value("proxy_from_environment").filter(|n| {
            n.text(self.cx.text)
                .is_some_and(|t| YAML11_TRUE.contains(&t.as_str()))
        });
        if let Some(node) = from_env {
            let field = format!("{base}.proxy_from_environment");
            let why = "a proxy from HTTP_PROXY/HTTPS_PROXY/NO_PROXY in Alertmanager's environment";
            let value = Value::Undecidable(why.to_owned());
            self.push(out, field.clone(), origin.clone(), node, kind, value);
            return Ok(Some(field));
        }
        Ok(None)
    }
}
