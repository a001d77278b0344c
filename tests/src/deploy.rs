//! Helpers of the deployment tests (`tests/tests/deploy_*.rs`): the shipped files under
//! `deploy/`, the external tools that check them (a missing tool fails the test with the command
//! that installs it), and reading their YAML as JSON.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

use crate::enforcer_bin;

/// The scrape job the alert rules expect, set by the PodMonitor's `jobLabel`.
pub const JOB: &str = "alertmanager-egress-enforcer";

pub const INSTALL_KUBERNETES_VALIDATE: &str = "python3 -m pip install kubernetes-validate==1.37.0";
pub const INSTALL_SYSTEMD: &str = "apt-get install systemd";
pub const INSTALL_PROMTOOL: &str = "apt-get install prometheus";

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A file under `deploy/`.
pub fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

/// Runs a tool; a tool that is not installed fails the test with how to install it.
pub fn run(program: &str, args: &[&str], install: &str) -> Output {
    match Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed; this test needs it. Install it with: {install}")
        }
        Err(e) => panic!("running {program}: {e}"),
    }
}

/// A tool's exit code, stdout and stderr, for a failure message.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Python with PyYAML and jsonschema (dependencies of kubernetes-validate).
pub fn python(script: &str, args: &[&str]) -> String {
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    let out = run("python3", &all, INSTALL_KUBERNETES_VALIDATE);
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("ModuleNotFoundError") {
        panic!(
            "python3 lacks a module kubernetes-validate brings (PyYAML, jsonschema). Install it \
             with: {INSTALL_KUBERNETES_VALIDATE}\n{err}"
        );
    }
    assert!(out.status.success(), "python3 failed:\n{}", text(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Every YAML document of a file, as JSON (parsed by PyYAML, as kubernetes-validate does).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let json = python(
        "import json, sys, yaml\n\
         print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        &[path.to_str().unwrap()],
    );
    serde_json::from_str(&json).expect("JSON from python")
}

/// The one YAML document of a file, as JSON.
pub fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(
        docs.len(),
        1,
        "{}: expected one YAML document",
        path.display()
    );
    docs.remove(0)
}

/// The YAML files in `deploy/kubernetes`, sorted.
pub fn kubernetes_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// A path's file name.
pub fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

/// The DaemonSet's one container.
pub fn container(ds: &Value) -> &Value {
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The DaemonSet container's `args`.
pub fn args(ds: &Value) -> Vec<String> {
    container(ds)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The value of `flag` in `args` (`--flag=value` or `--flag value`).
pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{flag}="))
            .map(str::to_owned)
            .or_else(|| (a == flag).then(|| args[i + 1].clone()))
    })
}

/// `enforcer check --policy FILE`, which must accept it.
pub fn enforcer_check(policy: &Path) {
    let out = Command::new(enforcer_bin())
        .args(["check", "--policy", policy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "enforcer check rejects {}:\n{}",
        policy.display(),
        text(&out)
    );
}
