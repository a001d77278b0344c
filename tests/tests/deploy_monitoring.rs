//! The monitoring package (`deploy/monitoring`, `deploy/kubernetes-with-monitoring`), checked by
//! the tools that read it: `kubectl kustomize` renders the agent with a PodMonitor, a
//! PrometheusRule and the Grafana dashboard, labelled for the Prometheus that selects them;
//! `promtool check rules` / `test rules` pass on the rules the PrometheusRule carries; every
//! alert links a runbook page that exists. No root, no kernel state.
//!
//! A missing tool fails the test with the command that installs it (CI installs them all in
//! `scripts/setup.sh`); nothing is skipped silently.
use std::{collections::BTreeSet, path::Path};

use integration_tests::{
    TempDir,
    deploy::{INSTALL_PROMTOOL, deploy, python, repo, run, text, yaml_doc},
};
use serde_json::Value;

const INSTALL_KUBECTL: &str = "apt-get install kubernetes-client";
const RUNBOOKS: &str = "https://github.com/alertmanager-enforcer/enforcer/blob/main/docs/runbooks/";

/// `kubectl kustomize DIR`, as JSON documents (parsed by PyYAML).
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = run(
        "kubectl",
        &["kustomize", dir.to_str().unwrap()],
        INSTALL_KUBECTL,
    );
    assert!(out.status.success(), "kubectl kustomize: {}", text(&out));
    let dir = TempDir::new().unwrap();
    let rendered = dir
        .write("rendered.yaml", &String::from_utf8(out.stdout).unwrap())
        .unwrap();
    let json = python(
        "import json, sys, yaml\n\
         print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        &[rendered.to_str().unwrap()],
    );
    serde_json::from_str(&json).unwrap()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected in the render");
    found[0]
}

/// The selector label pair the component sets (its `labels:` entry).
fn selector_label() -> (String, String) {
    let k = yaml_doc(&deploy("monitoring/kustomization.yaml"));
    assert_eq!(k["kind"], "Component");
    let pairs = k["labels"][0]["pairs"]
        .as_object()
        .expect("labels[0].pairs");
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    let (key, value) = pairs.iter().next().unwrap();
    (key.clone(), value.as_str().unwrap().to_owned())
}

#[test]
fn the_component_renders_podmonitor_prometheusrule_and_dashboard_with_the_selector_label() {
    let docs = kustomize(&repo().join("deploy/kubernetes-with-monitoring"));
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "DaemonSet",
        "ConfigMap",
        "ServiceAccount",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    let (key, value) = selector_label();
    let ds = of_kind(&docs, "DaemonSet");
    for kind in ["PodMonitor", "PrometheusRule"] {
        assert_eq!(
            of_kind(&docs, kind)["metadata"]["labels"][&key],
            value.as_str(),
            "{kind} lacks the selector label"
        );
    }
    assert!(
        ds["metadata"]["labels"].get(&key).is_none(),
        "the selector label is for the monitoring objects only"
    );

    // The PodMonitor selects the DaemonSet's pods on a port they have, and sets `node`.
    let pm = of_kind(&docs, "PodMonitor");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "PodMonitor selects {k}={v}");
    }
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let port = endpoint["port"].as_str().unwrap();
    assert!(
        ds["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "port {port}"
    );
    assert!(
        endpoint["relabelings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["targetLabel"] == "node"
                && r["sourceLabels"][0] == "__meta_kubernetes_pod_node_name"),
        "the rules aggregate by node: {endpoint}"
    );

    // The dashboard as a ConfigMap Grafana's sidecar loads, byte for byte the shipped file.
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a dashboard ConfigMap labelled grafana_dashboard=1");
    let shipped = std::fs::read_to_string(deploy("monitoring/grafana-dashboard.json")).unwrap();
    assert_eq!(
        dashboard["data"]["grafana-dashboard.json"],
        shipped.as_str()
    );
    let parsed: Value = serde_json::from_str(&shipped).unwrap();
    assert_eq!(parsed["uid"], "alertmanager-egress-enforcer");

    // The PrometheusRule carries exactly the rules file's groups (`cargo xtask monitoring`).
    let rules = yaml_doc(&deploy("prometheus/enforcer-rules.yml"));
    assert_eq!(
        of_kind(&docs, "PrometheusRule")["spec"],
        rules,
        "deploy/monitoring/prometheusrule.yaml is stale: run `cargo xtask monitoring`"
    );
}

#[test]
fn the_selector_label_is_configurable_in_the_component() {
    // A copy of deploy/ whose component names another label: the render follows it.
    let tmp = TempDir::new().unwrap();
    let copy = tmp.path.join("deploy");
    let out = std::process::Command::new("cp")
        .args(["-r", deploy("").to_str().unwrap(), copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {}", text(&out));
    let (key, value) = selector_label();
    let component = copy.join("monitoring/kustomization.yaml");
    let original = std::fs::read_to_string(&component).unwrap();
    let from = format!("      {key}: {value}\n");
    assert!(original.contains(&from), "{from:?}");
    std::fs::write(
        &component,
        original.replace(&from, "      prometheus: team-monitoring\n"),
    )
    .unwrap();
    let docs = kustomize(&copy.join("kubernetes-with-monitoring"));
    for kind in ["PodMonitor", "PrometheusRule"] {
        let labels = &of_kind(&docs, kind)["metadata"]["labels"];
        assert_eq!(labels["prometheus"], "team-monitoring", "{kind}");
        assert!(labels.get(&key).is_none(), "{kind}: {labels}");
    }
}

#[test]
fn promtool_checks_and_tests_the_rendered_prometheusrule() {
    let docs = kustomize(&repo().join("deploy/kubernetes-with-monitoring"));
    let spec = &of_kind(&docs, "PrometheusRule")["spec"];
    // JSON is YAML: the rendered groups under the name the promtool tests load.
    let dir = TempDir::new().unwrap();
    let rules = dir.write("enforcer-rules.yml", &spec.to_string()).unwrap();
    let tests = dir
        .write(
            "enforcer-rules.test.yml",
            &std::fs::read_to_string(deploy("prometheus/enforcer-rules.test.yml")).unwrap(),
        )
        .unwrap();
    let out = run(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        INSTALL_PROMTOOL,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        "promtool",
        &["test", "rules", tests.to_str().unwrap()],
        INSTALL_PROMTOOL,
    );
    assert!(
        out.status.success() && text(&out).contains("SUCCESS"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_alert_links_a_runbook_page_that_exists() {
    let rules = yaml_doc(&deploy("prometheus/enforcer-rules.yml"));
    let mut alerts = 0;
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        alerts += 1;
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("{RUNBOOKS}{alert}.md"),
            "{alert}: runbook_url"
        );
        let page = repo().join(format!("docs/runbooks/{alert}.md"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("{alert}: {}: {e}", page.display()));
        assert!(text.starts_with(&format!("# {alert}\n")), "{alert}");
        for section in ["## What it means", "## How to check", "## What to do"] {
            assert!(text.contains(section), "{alert}: no {section:?}");
        }
    }
    assert!(alerts >= 19, "{alerts} alerts");
}

#[test]
fn the_daemonset_carries_the_recommended_labels_and_runs_on_linux_nodes() {
    let docs = kustomize(&repo().join("deploy/kubernetes"));
    let k = yaml_doc(&deploy("kubernetes/kustomization.yaml"));
    let tag = k["images"][0]["newTag"].as_str().unwrap();
    for doc in &docs {
        let labels = &doc["metadata"]["labels"];
        for key in ["name", "component", "part-of", "instance", "managed-by"] {
            assert!(
                labels[format!("app.kubernetes.io/{key}")].is_string(),
                "{} lacks app.kubernetes.io/{key}: {labels}",
                doc["kind"]
            );
        }
        assert_eq!(labels["app.kubernetes.io/version"], tag, "{}", doc["kind"]);
    }
    let ds = of_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/version"], tag);
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    // The selector must never change between versions (it is immutable).
    let selector = ds["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let keys: BTreeSet<&str> = selector.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["app.kubernetes.io/name", "app.kubernetes.io/component"])
    );
}
