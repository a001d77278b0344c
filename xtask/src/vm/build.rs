//! Builds what the guest runs and finds the executables in cargo's JSON messages.
use std::{
    io::BufRead as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Host-built executables the guest runs from the read-only 9p view of the host's root.
pub struct Artifacts {
    pub enforcer: PathBuf,
    pub probe: PathBuf,
    /// The integration test executables (`tests/tests/*.rs`), sorted.
    pub tests: Vec<PathBuf>,
}

/// One `compiler-artifact` message with an executable.
struct Executable {
    name: String,
    kinds: Vec<String>,
    test: bool,
    path: PathBuf,
}

/// Which integration tests (target names, e.g. `enforce`) the guest runs.
pub struct Selection<'a> {
    /// Only these (all when empty).
    pub only: &'a [String],
    /// Not these.
    pub skip: &'a [String],
}

/// Builds the agent, the probe and the integration tests.
pub fn build(release: bool, select: &Selection) -> anyhow::Result<Artifacts> {
    let enforcer = cargo_build(&["-p", "enforcer", "--bin", "enforcer"], release)?;
    let enforcer = find(&enforcer, "bin", "enforcer")?;
    let built = cargo_build(&["-p", "integration-tests", "--tests", "--bins"], release)?;
    let probe = find(&built, "bin", "probe")?;
    let mut tests: Vec<&Executable> = built
        .iter()
        .filter(|e| e.test && e.kinds.iter().any(|k| k == "test"))
        .collect();
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    tests.dedup_by(|a, b| a.path == b.path);
    if tests.is_empty() {
        bail!("cargo built no integration test executables for package integration-tests");
    }
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    if let Some(missing) = select
        .only
        .iter()
        .chain(select.skip)
        .find(|n| !names.contains(&n.as_str()))
    {
        bail!("no integration test named {missing:?}; there are {names:?}");
    }
    let tests: Vec<PathBuf> = tests
        .into_iter()
        .filter(|t| select.only.is_empty() || select.only.contains(&t.name))
        .filter(|t| !select.skip.contains(&t.name))
        .map(|t| t.path.clone())
        .collect();
    if tests.is_empty() {
        bail!("--test/--skip-test left no integration test to run");
    }
    Ok(Artifacts {
        enforcer,
        probe,
        tests,
    })
}

/// The release agent, as shipped (`cargo xtask bench` measures its memory).
pub fn release_enforcer() -> anyhow::Result<PathBuf> {
    let built = cargo_build(&["-p", "enforcer", "--bin", "enforcer"], true)?;
    find(&built, "bin", "enforcer")
}

fn find(built: &[Executable], kind: &str, name: &str) -> anyhow::Result<PathBuf> {
    built
        .iter()
        .find(|e| !e.test && e.name == name && e.kinds.iter().any(|k| k == kind))
        .map(|e| e.path.clone())
        .with_context(|| format!("cargo reported no {kind} executable named {name}"))
}

/// `cargo build <args> --message-format=json-render-diagnostics`; diagnostics and progress go
/// to stderr as usual.
fn cargo_build(args: &[&str], release: bool) -> anyhow::Result<Vec<Executable>> {
    let mut cmd = Command::new(super::cargo());
    cmd.arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics");
    if release {
        cmd.arg("--release");
    }
    super::log(format!(
        "cargo build {}{}",
        args.join(" "),
        if release { " --release" } else { "" }
    ));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo build")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut found = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(path) = msg["executable"].as_str() else {
            continue;
        };
        found.push(Executable {
            name: msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kinds: msg["target"]["kind"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            test: msg["profile"]["test"].as_bool().unwrap_or(false),
            path: PathBuf::from(path),
        });
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("cargo build {} failed ({status})", args.join(" "));
    }
    Ok(found)
}
