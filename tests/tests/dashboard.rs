//! The Grafana dashboard (deploy/monitoring/grafana-dashboard.json) against a running agent:
//! every metric a panel queries is in the agent's `/metrics`, and where the agent has series of
//! it, the labels the query groups or filters by are labels of those series, with the values it
//! filters for. The agent runs with an `api:` section and denies one call, so the egress and
//! API guard families carry series.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use std::process::Command;

use integration_tests::{
    ChildGuard, EPERM, Outcome, Probe, TempDir, TestCgroup, deploy::deploy, enforcer_bin,
    eventually, http_get, privileged, status_and_body,
};
use serde_json::Value;

/// Labels that Prometheus adds when it scrapes (target labels), not the agent.
const TARGET_LABELS: &[&str] = &["job", "instance", "node"];

const POLICY: &str = "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n\
                      api:\n  allow:\n    - cidr: 127.0.0.1/32\n";

/// What `/metrics` exports: metric families (names from `# TYPE`, and each sample's name) and,
/// per sample name, the label names and values seen.
#[derive(Default)]
struct Exposition {
    families: BTreeSet<String>,
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut e = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let name = parts.next().unwrap().to_owned();
                // Counters are exported as NAME_total; gauges as NAME.
                if parts.next() == Some("counter") {
                    e.families.insert(format!("{name}_total"));
                }
                e.families.insert(name);
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap();
            let name = line[..name_end].to_owned();
            let labels = e.samples.entry(name.clone()).or_default();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.rfind('}').unwrap()];
                for pair in split_labels(body) {
                    let (k, v) = pair.split_once('=').unwrap();
                    labels
                        .entry(k.to_owned())
                        .or_default()
                        .insert(v.trim_matches('"').to_owned());
                }
            }
            e.families.insert(name);
        }
        e
    }
}

/// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`] (commas inside quotes kept).
fn split_labels(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        out.push(&body[start..]);
    }
    out
}

/// What one query asks of a metric: the labels it groups by and the matchers it filters with.
#[derive(Debug, Default)]
struct Use {
    grouped_by: BTreeSet<String>,
    matchers: Vec<(String, String)>,
}

/// The enforcer metrics an expression names, with what it asks of each: `by (...)` applies to
/// the metrics inside the aggregation it introduces; `{k="v"}` to the metric before it.
fn uses(expr: &str) -> BTreeMap<String, Use> {
    let mut out: BTreeMap<String, Use> = BTreeMap::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let mut pending_by: Vec<(BTreeSet<String>, usize)> = Vec::new();
    let mut depth = 0usize;
    while i < bytes.len() {
        let rest = &expr[i..];
        if let Some(after) = rest.strip_prefix("by (") {
            let end = after.find(')').unwrap();
            let labels = after[..end]
                .split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            pending_by.push((labels, depth));
            i += 4 + end + 1;
            continue;
        }
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                pending_by.retain(|(_, d)| *d < depth);
            }
            _ => {}
        }
        if rest.starts_with("enforcer_") && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..end].to_owned();
            let u = out.entry(name).or_default();
            for (labels, _) in &pending_by {
                u.grouped_by.extend(labels.iter().cloned());
            }
            if rest[end..].starts_with('{') {
                let close = rest[end..].find('}').unwrap();
                for m in rest[end + 1..end + close].split(',') {
                    if let Some((k, v)) = m.split_once("=~").or_else(|| m.split_once('=')) {
                        u.matchers
                            .push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
                    }
                }
                i += end + close + 1;
                continue;
            }
            i += end;
            continue;
        }
        i += 1;
    }
    out
}

/// Every `expr` of every panel (and the variables' queries).
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("monitoring/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

#[test]
fn the_query_reader_finds_metrics_groupings_and_matchers() {
    let u = uses(
        "sum by (node, hook) (rate(enforcer_decisions_total{job=~\"$job\",verdict=\"would_deny\"}[5m])) \
         or count(enforcer_build_info)",
    );
    let d = &u["enforcer_decisions_total"];
    assert_eq!(
        d.grouped_by,
        BTreeSet::from(["node".to_owned(), "hook".to_owned()])
    );
    assert!(
        d.matchers
            .contains(&("verdict".to_owned(), "would_deny".to_owned()))
    );
    assert!(u["enforcer_build_info"].grouped_by.is_empty(), "{u:?}");
    assert_eq!(
        split_labels(r#"rule="block cidr 10.0.0.0/8, x",target="t""#),
        [r#"rule="block cidr 10.0.0.0/8, x""#, r#"target="t""#]
    );
}

#[test]
fn every_series_the_dashboard_queries_is_exported_by_a_running_agent() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir.write("p.yaml", POLICY).unwrap();
    let cg = TestCgroup::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // The agent, ready once /readyz answers 200 (loading the programs takes seconds idle,
    // minutes on a loaded 2-CPU machine).
    let log = dir.path.join("agent.log");
    let mut cmd = Command::new(enforcer_bin());
    cmd.args([
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--cgroup",
        &cg.path_str(),
    ])
    .args(["--web.listen-address", &addr]);
    let mut agent = ChildGuard::spawn_logged("enforcer", &mut cmd, &log).unwrap();
    let ready = eventually(Duration::from_secs(300), Duration::from_millis(200), || {
        agent.assert_alive();
        let response = http_get(&addr, "/readyz").ok()?;
        (status_and_body(&response).0 == 200).then_some(())
    });
    assert!(
        ready.is_some(),
        "never ready:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    let metrics = eventually(Duration::from_secs(20), Duration::from_millis(100), || {
        let response = http_get(&addr, "/metrics").ok()?;
        let (status, body) = status_and_body(&response);
        (status == 200 && body.contains("enforcer_denials_total{")).then(|| body.to_owned())
    })
    .expect("the denial never reached /metrics");
    let exported = Exposition::parse(&metrics);

    let queries = dashboard_queries();
    assert!(queries.len() >= 30, "{} queries", queries.len());
    let mut checked_labels = 0;
    for expr in &queries {
        let used = uses(expr);
        assert!(
            !used.is_empty() || expr.contains("up{"),
            "a query without an enforcer metric: {expr}"
        );
        for (metric, what) in used {
            assert!(
                exported.families.contains(&metric),
                "{metric} (in `{expr}`) is not exported by the agent"
            );
            let Some(labels) = exported.samples.get(&metric) else {
                continue;
            };
            for label in &what.grouped_by {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                assert!(
                    labels.contains_key(label),
                    "`{expr}` groups {metric} by {label}, which its series lack: {labels:?}"
                );
                checked_labels += 1;
            }
            for (label, value) in &what.matchers {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                let values = labels.get(label).unwrap_or_else(|| {
                    panic!("`{expr}` filters {metric} on {label}, which its series lack")
                });
                assert!(
                    values.contains(value),
                    "`{expr}`: no {metric} series with {label}={value:?}: {values:?}"
                );
                checked_labels += 1;
            }
        }
    }
    // The denial, the decisions and the API guard's connections gave label checks substance.
    assert!(checked_labels >= 8, "{checked_labels} label uses checked");
    for family in [
        "enforcer_denials_total",
        "enforcer_decisions_total",
        "enforcer_api_connections_total",
        "enforcer_build_info",
    ] {
        assert!(exported.samples.contains_key(family), "no {family} series");
    }
}
