//! The check's report as text (one line per destination) and as JSON (serde view structs).

use std::fmt::Write as _;

use serde::Serialize;

use super::decide::AddressSource;
use super::extract::Origin;
use super::host::Host;
use super::{Finding, Report, Status};

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Allow => "ALLOW",
        Status::Deny => "DENY",
        Status::Undecided => "UNDECIDED",
        Status::Invalid => "INVALID",
    }
}

/// Receiver names and fields come from the checked file: show control characters escaped.
fn clean(s: &str) -> String {
    s.escape_debug().to_string()
}

fn field_column(f: &Finding) -> String {
    match f.origin.describe() {
        Some(origin) => format!("{} ({origin})", clean(&f.field)),
        None => clean(&f.field),
    }
}

pub(super) fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Alertmanager configuration {} checked against policy {} (mode {}, default {}{})",
        report.config,
        report.policy,
        report.mode,
        report.default,
        if report.options.resolve {
            ", names resolved"
        } else {
            ""
        }
    );
    if report.mode == "audit" {
        let _ = writeln!(
            out,
            "(mode audit: the kernel would only log the calls marked DENY; fix them before enforcing)"
        );
    }
    let rows: Vec<[String; 3]> = report
        .findings
        .iter()
        .map(|f| {
            let dest = f
                .destination
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            // Cut to ~100 characters: a padded column wider than 65,535 would panic, and a
            // name that long is an attack on the reader anyway.
            [&clean(&f.receiver), &field_column(f), &dest]
                .map(|c| crate::input::cut(c).into_owned())
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    out.push('\n');
    for (f, row) in report.findings.iter().zip(&rows) {
        let _ = writeln!(
            out,
            "{:<9}  {:<w0$}  {:<w1$}  {:<w2$}  {}  ({})",
            status_word(f.status),
            row[0],
            row[1],
            row[2],
            f.reason,
            f.location
        );
        let plain_literal = matches!(f.addresses.as_slice(),
            [a] if a.source == AddressSource::Literal && a.decided_as == a.addr);
        for a in f.addresses.iter().filter(|_| !plain_literal) {
            let as_ = if a.decided_as == a.addr {
                String::new()
            } else {
                format!(" (as {})", a.decided_as)
            };
            let verdict = if a.allow { "allow" } else { "deny" };
            let _ = writeln!(
                out,
                "{:11}{} address {}{as_}: {verdict} by {}",
                "",
                a.source.as_str(),
                a.addr,
                a.rule
            );
        }
        for note in &f.notes {
            let _ = writeln!(out, "{:11}note: {note}", "");
        }
    }
    let failed = !report.passed();
    let _ = writeln!(
        out,
        "\n{} destinations: {} allowed, {} denied, {} undecided, {} invalid{}: {}",
        report.findings.len(),
        report.count(Status::Allow),
        report.count(Status::Deny),
        report.count(Status::Undecided),
        report.count(Status::Invalid),
        if report.options.strict {
            " (strict)"
        } else {
            ""
        },
        if failed { "FAIL" } else { "ok" }
    );
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    config: &'a str,
    policy: &'a str,
    mode: &'a str,
    default: &'a str,
    resolve: bool,
    strict: bool,
    passed: bool,
    summary: JsonSummary,
    destinations: Vec<JsonFinding<'a>>,
}

#[derive(Serialize)]
struct JsonSummary {
    total: usize,
    allow: usize,
    deny: usize,
    undecided: usize,
    invalid: usize,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    receiver: &'a str,
    field: &'a str,
    /// `receiver`, `global.KEY`, `default` or `fixed`.
    origin: String,
    file: &'a str,
    line: usize,
    column: usize,
    status: &'static str,
    destination: Option<String>,
    scheme: Option<&'a str>,
    host: Option<String>,
    port: Option<u16>,
    /// The deciding rule, or why the destination could not be decided.
    reason: &'a str,
    addresses: Vec<JsonAddress>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct JsonAddress {
    address: String,
    decided_as: String,
    source: &'static str,
    verdict: &'static str,
    rule: String,
}

pub(super) fn json(report: &Report) -> String {
    let view = JsonReport {
        config: &report.config,
        policy: &report.policy,
        mode: report.mode,
        default: report.default,
        resolve: report.options.resolve,
        strict: report.options.strict,
        passed: report.passed(),
        summary: JsonSummary {
            total: report.findings.len(),
            allow: report.count(Status::Allow),
            deny: report.count(Status::Deny),
            undecided: report.count(Status::Undecided),
            invalid: report.count(Status::Invalid),
        },
        destinations: report.findings.iter().map(json_finding).collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&view).unwrap_or_default()
}

fn json_finding(f: &Finding) -> JsonFinding<'_> {
    let dest = f.destination.as_ref();
    JsonFinding {
        receiver: &f.receiver,
        field: &f.field,
        origin: match &f.origin {
            Origin::Receiver => "receiver".to_owned(),
            Origin::Global(key) => format!("global.{key}"),
            Origin::Default => "default".to_owned(),
            Origin::Fixed => "fixed".to_owned(),
        },
        file: &f.location.file,
        line: f.location.line,
        column: f.location.column,
        status: f.status.as_str(),
        destination: dest.map(ToString::to_string),
        scheme: dest.map(|d| d.scheme.as_str()),
        host: dest.map(|d| match &d.host {
            Host::Local => String::new(),
            Host::Ip { addr, .. } => addr.to_string(),
            Host::Name(n) => n.clone(),
        }),
        port: dest.map(|d| d.port),
        reason: &f.reason,
        addresses: f
            .addresses
            .iter()
            .map(|a| JsonAddress {
                address: a.addr.to_string(),
                decided_as: a.decided_as.to_string(),
                source: a.source.as_str(),
                verdict: if a.allow { "allow" } else { "deny" },
                rule: a.rule.clone(),
            })
            .collect(),
        notes: &f.notes,
    }
}
