//! The shipped deployment (`deploy/`), checked by the tools that will read it: the Kubernetes
//! manifests by `kubernetes-validate --strict` (and their wiring: the DaemonSet, kustomization,
//! PodMonitor, ConfigMap).
//! No root, no kernel state.
//!
//! A missing tool fails the test with the command that installs it (CI installs them all in
//! `scripts/setup.sh`); nothing is skipped silently.
use std::{collections::BTreeSet, path::PathBuf};

use integration_tests::{
    TempDir,
    deploy::{
        INSTALL_KUBERNETES_VALIDATE, JOB, args, container, deploy, flag_value, kubernetes_files,
        name, python, repo, run, text, yaml_doc, yaml_docs,
    },
};
use serde_json::Value;

/// Kubernetes versions the manifests must be valid for: the oldest still in wide use, and the
/// newest whose schemas `kubernetes-validate` ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.28.0", "1.37.0"];

/// Not a Kubernetes API object, so kubernetes-validate has no schema for it: the kustomize file
/// (checked by `kustomization_lists_the_manifests`). The Prometheus Operator's PodMonitor, a CRD,
/// lives in deploy/monitoring (checked against a subset of its CRD schema by
/// `podmonitor_matches_its_crd_schema_and_the_daemonset`).
const NOT_CORE: &[&str] = &["kustomization.yaml"];

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_strict() {
    let files: Vec<PathBuf> = kubernetes_files()
        .into_iter()
        .filter(|p| !NOT_CORE.contains(&name(p)))
        .collect();
    let names: BTreeSet<&str> = files.iter().map(|p| name(p)).collect();
    for expected in ["configmap.yaml", "daemonset.yaml", "serviceaccount.yaml"] {
        assert!(
            names.contains(expected),
            "deploy/kubernetes/{expected} missing: {names:?}"
        );
    }
    for version in KUBERNETES_VERSIONS {
        for file in &files {
            let f = file.to_str().unwrap();
            let out = run(
                "kubernetes-validate",
                &["--strict", "--kubernetes-version", version, f],
                INSTALL_KUBERNETES_VALIDATE,
            );
            let all = text(&out);
            assert!(
                out.status.success(),
                "{f} is invalid for Kubernetes {version}:\n{all}"
            );
            // Exit 0 also when no schema was found (a warning); insist on a pass for every
            // resource in the file, and on no warning at all.
            let resources = yaml_docs(file).len();
            assert!(resources > 0, "{f}: no resource");
            assert_eq!(
                all.matches(" passed for resource ").count(),
                resources,
                "{f}:\n{all}"
            );
            assert!(
                !all.contains("WARN") && !all.contains("ERROR"),
                "{f}:\n{all}"
            );
        }
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelt_field() {
    // The check above is only worth something if --strict catches an unknown field.
    let dir = TempDir::new().unwrap();
    let ds = std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).unwrap();
    assert!(ds.contains("hostPID: true"));
    let bad = dir
        .write(
            "daemonset.yaml",
            &ds.replace("hostPID: true", "hostPid: true"),
        )
        .unwrap();
    let out = run(
        "kubernetes-validate",
        &["--strict", bad.to_str().unwrap()],
        INSTALL_KUBERNETES_VALIDATE,
    );
    assert!(
        !out.status.success(),
        "misspelt field accepted:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("hostPid"), "{}", text(&out));
}

#[test]
fn kubernetes_manifests_are_namespace_agnostic() {
    for file in kubernetes_files() {
        for doc in yaml_docs(&file) {
            let mut found = Vec::new();
            find_key(&doc, "namespace", "", &mut found);
            assert!(
                found.is_empty(),
                "{}: sets a namespace at {found:?}",
                file.display()
            );
        }
    }
}

fn find_key(v: &Value, key: &str, at: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = format!("{at}.{k}");
                if k == key {
                    found.push(path.clone());
                }
                find_key(child, key, &path, found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                find_key(child, key, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn kustomization_lists_the_manifests() {
    let k = yaml_doc(&deploy("kubernetes/kustomization.yaml"));
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = kubernetes_files()
        .iter()
        .map(|p| name(p).to_owned())
        .filter(|n| !NOT_CORE.contains(&n.as_str()))
        .collect();
    // The PodMonitor is in deploy/monitoring on purpose (it needs the operator's CRDs).
    assert_eq!(
        listed, present,
        "kustomization.yaml resources vs files in deploy/kubernetes"
    );
    let ds = yaml_doc(&deploy("kubernetes/daemonset.yaml"));
    let image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    let image_name = image.rsplit_once(':').map_or(image, |(n, _)| n);
    let images = k["images"].as_array().expect("images");
    assert!(
        images.iter().any(|i| i["name"] == image_name),
        "kustomization.yaml images: must name the DaemonSet's image {image_name}"
    );
}

#[test]
fn daemonset_has_what_the_agent_needs() {
    let ds = yaml_doc(&deploy("kubernetes/daemonset.yaml"));
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(&ds);
    assert_eq!(
        pod["hostPID"], true,
        "process targets are found in the node's /proc"
    );
    // Not privileged: the capabilities of the systemd unit's bounding set, no more
    // (tests/tests/container.rs runs the image with them).
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false, "{sc}");
    let unit = std::fs::read_to_string(deploy("systemd/enforcer.service")).unwrap();
    let mut unit_caps: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_"))
        .collect();
    let mut caps: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    unit_caps.sort_unstable();
    caps.sort_unstable();
    assert_eq!(
        caps, unit_caps,
        "the DaemonSet's and the unit's capabilities"
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["nodeSelector"]["kubernetes.io/os"], "linux",
        "Linux eBPF: Linux nodes only"
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "must tolerate every taint to run on every node"
    );
    assert!(pod["serviceAccountName"].is_string());

    // Host mounts: the node's bpffs (for pins that outlive the pod; HostToContainer, as
    // Bidirectional needs a privileged pod) and the cgroup tree.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let host_mount = |host: &str| {
        let v = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath {host}"));
        mounts
            .iter()
            .find(|m| m["name"] == v["name"])
            .unwrap_or_else(|| panic!("{host} not mounted"))
            .clone()
    };
    let bpffs = host_mount("/sys/fs/bpf");
    assert_eq!(bpffs["mountPropagation"], "HostToContainer");
    assert_ne!(bpffs["readOnly"], true);
    let cgroup = host_mount("/sys/fs/cgroup");
    assert_eq!(cgroup["mountPath"], "/sys/fs/cgroup");

    // Flags: the bpffs dir lies on the bpffs mount, the policy file comes from the ConfigMap.
    let args = args(&ds);
    assert_eq!(args[0], "run");
    assert!(
        args.iter().any(|a| a == "--pin"),
        "--pin: enforcement must survive agent restarts"
    );
    let bpffs_dir = flag_value(&args, "--bpffs-dir").expect("--bpffs-dir");
    assert!(
        bpffs_dir.starts_with(bpffs["mountPath"].as_str().unwrap()),
        "{bpffs_dir}"
    );
    let policy = flag_value(&args, "--policy").expect("--policy");
    let (policy_dir, policy_key) = policy.rsplit_once('/').unwrap();
    let policy_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == policy_dir)
        .expect("policy volume mount");
    assert!(
        policy_mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    let policy_volume = volumes
        .iter()
        .find(|v| v["name"] == policy_mount["name"])
        .unwrap();
    let cm = yaml_doc(&deploy("kubernetes/configmap.yaml"));
    assert_eq!(policy_volume["configMap"]["name"], cm["metadata"]["name"]);
    assert!(
        cm["data"][policy_key].is_string(),
        "ConfigMap has no key {policy_key}"
    );

    // Metrics, probes and scrape annotations all on the one port.
    let address = flag_value(&args, "--web.listen-address").expect("--web.listen-address");
    let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
    let metrics = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == port)
        .expect("metrics port");
    let port_name = metrics["name"].as_str().unwrap();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == port_name || get["port"] == port,
            "{probe} port"
        );
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res} missing"
            );
        }
    }
    // A bare name that kustomization.yaml `images:` maps to the built image (no registry or
    // tag here: those belong to whoever builds and pushes it).
    assert_eq!(c["image"], "alertmanager-egress-enforcer");
}

#[test]
fn podmonitor_matches_its_crd_schema_and_the_daemonset() {
    let schema = repo().join("tests/fixtures/deploy/podmonitor.schema.json");
    let podmonitor = deploy("monitoring/podmonitor.yaml");
    let check = "import json, sys, yaml, jsonschema\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 jsonschema.Draft202012Validator.check_schema(schema)\n\
                 docs = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d is not None]\n\
                 errors = [f'{list(e.absolute_path)}: {e.message}' for d in docs\n\
                           for e in jsonschema.Draft202012Validator(schema).iter_errors(d)]\n\
                 print(json.dumps(errors))";
    let errors: Vec<String> = serde_json::from_str(&python(
        check,
        &[schema.to_str().unwrap(), podmonitor.to_str().unwrap()],
    ))
    .unwrap();
    assert!(errors.is_empty(), "podmonitor.yaml: {errors:#?}");

    // The schema check catches a misspelt field.
    let dir = TempDir::new().unwrap();
    let text = std::fs::read_to_string(&podmonitor).unwrap();
    let bad = dir
        .write(
            "pm.yaml",
            &text.replace("podMetricsEndpoints:", "podMetricEndpoints:"),
        )
        .unwrap();
    let errors: Vec<String> = serde_json::from_str(&python(
        check,
        &[schema.to_str().unwrap(), bad.to_str().unwrap()],
    ))
    .unwrap();
    assert!(
        errors.iter().any(|e| e.contains("podMetricEndpoints")),
        "{errors:?}"
    );

    // It selects the DaemonSet's pods, scrapes the named metrics port, and names the job the
    // alert rules expect.
    let pm = yaml_doc(&podmonitor);
    let ds = yaml_doc(&deploy("kubernetes/daemonset.yaml"));
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "PodMonitor selects {k}={v}, pods lack it"
        );
    }
    let job_label = pm["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(pod_labels[job_label], JOB);
    for ep in pm["spec"]["podMetricsEndpoints"].as_array().unwrap() {
        let port = ep["port"].as_str().unwrap();
        assert!(
            container(&ds)["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == port),
            "PodMonitor port {port} is not a port of the DaemonSet"
        );
        assert_eq!(ep["path"], "/metrics");
    }
}
