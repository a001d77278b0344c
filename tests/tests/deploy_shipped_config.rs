//! The shipped deployment (`deploy/`), checked by the tools that will read it: the example
//! policies by `enforcer check`, and the command lines of the unit and the DaemonSet by
//! `enforcer run --help`.
//! No root, no kernel state.
//!
//! A missing tool fails the test with the command that installs it (CI installs them all in
//! `scripts/setup.sh`); nothing is skipped silently.
use std::process::Command;

use integration_tests::{
    TempDir,
    deploy::{args, deploy, enforcer_check, text, yaml_doc},
    enforcer_bin,
};
use serde_json::Value;

#[test]
fn example_policies_pass_enforcer_check() {
    let dir = TempDir::new().unwrap();
    let cm = yaml_doc(&deploy("kubernetes/configmap.yaml"));
    let k8s = dir
        .write(
            "policy.yaml",
            cm["data"]["policy.yaml"].as_str().expect("policy.yaml key"),
        )
        .unwrap();
    enforcer_check(&k8s);
    enforcer_check(&deploy("systemd/policy.yaml"));

    // Both are the recommended first rollout, and target what their deployment runs.
    let k8s = yaml_doc(&k8s);
    let bare = yaml_doc(&deploy("systemd/policy.yaml"));
    for p in [&k8s, &bare] {
        assert_eq!(p["mode"], "audit");
    }
    assert!(k8s["targets"].as_array().unwrap().iter().any(|t| {
        t["process"]
            .as_array()
            .is_some_and(|n| n.contains(&Value::from("alertmanager")))
    }));
    assert!(
        bare["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["systemd_unit"] == "prometheus-alertmanager.service")
    );
}

#[test]
fn shipped_command_lines_use_flags_enforcer_run_accepts() {
    let help = Command::new(enforcer_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", text(&help));
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let unit = std::fs::read_to_string(deploy("systemd/enforcer.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut used: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(used.get(1).map(String::as_str), Some("run"), "{exec}");
    used.extend(args(&yaml_doc(&deploy("kubernetes/daemonset.yaml"))));
    for arg in used.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            // Flags have dots (`--web.listen-address`); a sentence's full stop is not one.
            help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
                .any(|w| w.trim_end_matches('.') == flag),
            "the shipped deployment passes {flag}, which `enforcer run` does not accept:\n{help}"
        );
    }
}
