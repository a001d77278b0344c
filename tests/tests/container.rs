//! The agent's image (issue 16), run with a real container runtime (podman + runc) the way
//! deploy/kubernetes/daemonset.yaml runs it: the rendered `securityContext` (not privileged:
//! the capabilities it adds, no privilege escalation, the runtime's default seccomp profile),
//! the host's PID and cgroup namespaces, the host's cgroup tree and a bpffs (the test's own
//! instance) mounted in with the rendered propagation, read-only root filesystem, and the args
//! `kubectl kustomize deploy/kubernetes` renders.
//!
//! Alertmanager (Debian's binary, named `alertmanager` as in upstream images, with the libraries
//! it links) runs in ANOTHER container, from a root filesystem the test assembles (`--rootfs`),
//! with no network but `lo` (no route out: ENETUNREACH) and a cgroup laid out as a kubelet's
//! (`kubepods/besteffort/pod<uid>/libpod-<id>`) under a cgroup the test created, which is also
//! the agent's `--scope` (never the root cgroup). Its only receiver is the metadata service;
//! one alert makes it try, again and again, while the test watches its debug log:
//! 1. no agent: `connect: network is unreachable`;
//! 2. agent container started: the agent finds Alertmanager by process name (`target found`,
//!    its pod's cgroup), its `connect()` fails with EPERM and the agent prints the JSON line;
//! 3. agent container SIGKILLed: still EPERM (pinned links), never unreachable again;
//! 4. a new agent container adopts the pins and prints JSON lines again;
//! 5. `enforcer detach` in the agent container: unreachable again (nothing left attached).
//!
//! Needs root, podman, runc, kubectl and Debian's prometheus-alertmanager (scripts/setup.sh).
//! Guards remove the containers, the image, the cgroups podman created (v1 and v2), the pins
//! and the temporary directory, also when an assertion fails.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use integration_tests::{
    PinDir, TempDir, TestCgroup, enter_netns, installed,
    podman::{INSTALL, LogsOnFailure, Podman, PodmanCgroups, Remove, text},
    privileged, unique, wait_for,
};
use serde_json::Value;

const METADATA_RULE: &str = "block preset:cloud-metadata 169.254.169.254/32";
/// The image name `cargo xtask image` gives by default, which the kustomization renders.
const IMAGE_NAME: &str = "localhost/alertmanager-egress-enforcer";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNREACHABLE: &str = "dial tcp 169.254.169.254:80: connect: network is unreachable";
const DENIED: &str = "dial tcp 169.254.169.254:80: connect: operation not permitted";
const AM_CONFIG: &str = "route:\n  receiver: injected\n  group_by: [alertname]\n  \
    group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  \
    - name: injected\n    webhook_configs:\n      \
    - url: http://169.254.169.254/latest/meta-data/iam/security-credentials/\n        \
    send_resolved: false\n";
/// Alertmanager's API, in its container's network namespace, and the alert the test posts.
const AM: &str = "127.0.0.1:9093";
const ALERT: &str = r#"[{"labels":{"alertname":"ContainerTest","severity":"critical"}}]"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `kubectl kustomize deploy/kubernetes`, as JSON documents (PyYAML, as tests/tests/deploy.rs).
fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e}; {INSTALL}"));
    assert!(out.status.success(), "kubectl kustomize: {}", text(&out));
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let json = py.wait_with_output().unwrap();
    assert!(json.status.success(), "python3 yaml: {}", text(&json));
    serde_json::from_slice(&json.stdout).unwrap()
}

/// The rendered DaemonSet's container.
fn rendered_agent() -> Value {
    let docs = rendered();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in the rendered kustomization");
    ds["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The podman flags for the rendered container's `securityContext`: what a kubelet asks of the
/// runtime for it. Anything the test cannot map fails it, rather than run with other settings.
fn security_flags(c: &Value) -> Vec<String> {
    let sc = &c["securityContext"];
    if sc["privileged"] == true {
        return vec!["--privileged".to_owned()];
    }
    let mut flags = Vec::new();
    let caps = &sc["capabilities"];
    if let Some(drop) = caps["drop"].as_array() {
        assert_eq!(drop, &[Value::from("ALL")], "capabilities.drop: {sc}");
        flags.push("--cap-drop=all".to_owned());
    }
    for cap in caps["add"].as_array().into_iter().flatten() {
        flags.push(format!("--cap-add=CAP_{}", cap.as_str().unwrap()));
    }
    if sc["allowPrivilegeEscalation"] == false {
        flags.push("--security-opt=no-new-privileges".to_owned());
    }
    // RuntimeDefault is podman's default profile (both derive from the same moby profile).
    let seccomp = &sc["seccompProfile"]["type"];
    assert!(
        seccomp.is_null() || seccomp == "RuntimeDefault",
        "seccompProfile: {sc}"
    );
    flags
}

/// podman's propagation option for the rendered volume mount at `path`.
fn propagation(c: &Value, path: &str) -> &'static str {
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("no volume mount at {path}: {c}"));
    match mount["mountPropagation"].as_str() {
        None | Some("None") => "rprivate",
        Some("HostToContainer") => "rslave",
        Some("Bidirectional") => "rshared",
        Some(other) => panic!("mountPropagation {other}"),
    }
}

/// The DaemonSet asks for the least privilege the agent works with, and the container test
/// below proves that it works.
#[test]
fn the_daemonset_is_not_privileged() {
    let c = rendered_agent();
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    let flags = security_flags(&c);
    assert!(flags.contains(&"--cap-drop=all".to_owned()), "{flags:?}");
    assert_ne!(propagation(&c, "/sys/fs/bpf"), "rshared");
}

#[test]
fn kustomize_renders_the_image_cargo_xtask_image_builds() {
    let c = rendered_agent();
    assert_eq!(c["image"], format!("{IMAGE_NAME}:{VERSION}"));
    // The manifest names the image without registry or tag: `images:` is what set them.
    let raw = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    assert!(
        !raw.contains(IMAGE_NAME),
        "daemonset.yaml should not name {IMAGE_NAME}"
    );
}

/// Assembles a root filesystem for Debian's Alertmanager: the binary as `/bin/alertmanager`
/// (upstream images' name), the shared libraries `ldd` lists, its templates and configuration.
fn alertmanager_rootfs(root: &Path) {
    let binary = Path::new("/usr/bin/prometheus-alertmanager");
    assert!(binary.exists(), "{} missing; {INSTALL}", binary.display());
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    assert!(ldd.status.success(), "ldd: {}", text(&ldd));
    let libs: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    assert!(!libs.is_empty(), "ldd listed no libraries");
    for lib in libs.iter().map(PathBuf::as_path).chain([binary]) {
        let dest = if lib == binary {
            root.join("bin/alertmanager")
        } else {
            root.join(lib.strip_prefix("/").unwrap())
        };
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // Copy the target of a symlink (ld-linux is one) under the name ldd gave.
        std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", lib.display()));
    }
    // Debian's build reads its notification templates from here.
    let templates = Path::new("/usr/share/prometheus/alertmanager");
    std::fs::create_dir_all(root.join("usr/share/prometheus/alertmanager")).unwrap();
    for t in ["default.tmpl", "email.tmpl"] {
        let dest = root.join("usr/share/prometheus/alertmanager").join(t);
        std::fs::copy(templates.join(t), dest).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/alertmanager")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("etc/alertmanager/alertmanager.yml"), AM_CONFIG).unwrap();
}

/// One HTTP request to `addr` inside the network namespace of the process `pid` (a thread of
/// this test enters it; the test process itself stays out).
fn request_in(pid: u32, addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let addr = addr.to_owned();
    let body = if method == "POST" { ALERT } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, response))
    })
    .join()
    .unwrap()
}

/// The agent's JSON deny lines so far.
fn deny_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "connect_denied")
        .collect()
}

/// How often Alertmanager's log reports `what` so far.
fn count(podman: &Podman, container: &str, what: &str) -> usize {
    podman.logs(container).matches(what).count()
}

/// Polls `f` for up to `secs` seconds, failing the test if the container `alive` exits.
fn await_in(podman: &Podman, alive: &str, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(Duration::from_secs(secs), what, || {
        assert!(
            podman.running(alive),
            "container {alive} exited while waiting for {what}"
        );
        f().then_some(())
    });
}

#[test]
fn the_image_enforces_on_alertmanager_in_another_container_as_the_daemonset_runs_it() {
    let ready = privileged()
        && ["podman", "runc", "kubectl", "prometheus-alertmanager"]
            .iter()
            .all(|t| installed(&format!("/usr/bin/{t}"), INSTALL));
    if !ready {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let podman = Podman::new(&tmp.path);
    let cg = TestCgroup::new().unwrap();
    let cg_name = cg.path.file_name().unwrap().to_string_lossy().into_owned();
    let _podman_cgroups = PodmanCgroups(cg_name.clone());
    let pins = PinDir::new();
    let bpffs = pins.path.parent().unwrap().to_owned();

    // The image, by the documented command, under a tag of the test's own.
    let tag = format!("{IMAGE_NAME}:{}", unique("test"));
    let _image = Remove::image(&podman, &tag);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(cargo)
        .args(["xtask", "image", "--tag", &tag])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo xtask image: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag);
    let inspect: Value = serde_json::from_str(&podman.ok(&["image", "inspect", &tag])).unwrap();
    let image = &inspect[0];
    let labels = &image["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"], VERSION,
        "{labels}"
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(
        labels["org.opencontainers.image.source"].is_string(),
        "{labels}"
    );
    assert!(
        labels["org.opencontainers.image.revision"].is_string(),
        "{labels}"
    );
    assert_eq!(image["Config"]["Entrypoint"][0], "/usr/local/bin/enforcer");
    assert_eq!(
        image["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "{image}"
    );
    let size = image["Size"].as_u64().unwrap();
    assert!(size < 16 << 20, "the image is {size} bytes");
    // Every container's cgroup is under the test's (podman's default parent would stay).
    let tools = format!("--cgroup-parent=/{cg_name}/tools");
    // Nothing to exec but the agent: no shell.
    let sh = podman.output(&[
        "run",
        "--rm",
        "--network=none",
        &tools,
        "--entrypoint=/bin/sh",
        &tag,
    ]);
    assert!(!sh.status.success(), "the image has a shell");

    // The policy: `enforcer suggest` (run from the image) for Alertmanager's configuration,
    // switched from audit to enforce as the README's rollout does.
    let am_root = tmp.path.join("am-root");
    alertmanager_rootfs(&am_root);
    let am_etc = format!("{}:/in:ro", am_root.join("etc/alertmanager").display());
    let suggested = podman.ok(&[
        "run",
        "--rm",
        "--network=none",
        &tools,
        "--read-only",
        "-v",
        &am_etc,
        &tag,
        "suggest",
        "--alertmanager-config",
        "/in/alertmanager.yml",
    ]);
    assert!(suggested.contains("\nmode: audit\n"), "{suggested}");
    assert!(suggested.contains("\ntargets:\n"), "{suggested}");
    let policy_dir = tmp.path.join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::write(
        policy_dir.join("policy.yaml"),
        suggested.replace("\nmode: audit\n", "\nmode: enforce\n"),
    )
    .unwrap();

    // Alertmanager in a container of its own, in a pod-shaped cgroup under the test's.
    let pod_uid = format!("{:08x}-5f60-4182-93a4-b5c6d7e8f901", std::process::id());
    let pod = format!("/{cg_name}/kubepods/besteffort/pod{pod_uid}");
    let am = unique("enforcer-test-am");
    let agent1 = unique("enforcer-test-agent");
    let agent2 = unique("enforcer-test-agent");
    let _remove = [&am, &agent1, &agent2].map(|c| Remove::container(&podman, c));
    let _logs = LogsOnFailure(&podman, vec![am.clone(), agent1.clone(), agent2.clone()]);
    podman.ok(&[
        "run",
        "--detach",
        "--name",
        &am,
        "--network=none",
        "--cgroup-parent",
        &pod,
        "--rootfs",
        am_root.to_str().unwrap(),
        "/bin/alertmanager",
        "--config.file=/etc/alertmanager/alertmanager.yml",
        "--storage.path=/data",
        "--web.listen-address=127.0.0.1:9093",
        "--cluster.listen-address=",
        "--log.level=debug",
    ]);
    let am_pid = podman.pid(&am);
    let am_cgroup = std::fs::read_to_string(format!("/proc/{am_pid}/cgroup")).unwrap();
    assert!(
        am_cgroup
            .lines()
            .any(|l| l.starts_with(&format!("0::{pod}/libpod-"))),
        "Alertmanager is not in its container's cgroup under {pod}: {am_cgroup}"
    );
    await_in(&podman, &am, 30, "Alertmanager's /-/ready", || {
        matches!(request_in(am_pid, AM, "GET", "/-/ready"), Ok((200, _)))
    });
    let (status, response) = request_in(am_pid, AM, "POST", "/api/v2/alerts").unwrap();
    assert_eq!(status, 200, "{response}");

    // 1. No agent: the container's network has no route out.
    await_in(&podman, &am, 60, "an unreachable attempt", || {
        count(&podman, &am, UNREACHABLE) > 0
    });
    assert_eq!(count(&podman, &am, DENIED), 0);

    // 2. The agent, with the rendered DaemonSet's image and args (and a scope of the test's).
    let c = rendered_agent();
    assert_eq!(c["image"], format!("{IMAGE_NAME}:{VERSION}"));
    let mut args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    args.push(format!("--scope={}", cg.path.display()));
    let mounts = [
        format!(
            "/sys/fs/cgroup:/sys/fs/cgroup:{}",
            propagation(&c, "/sys/fs/cgroup")
        ),
        format!(
            "{}:/sys/fs/bpf:{}",
            bpffs.display(),
            propagation(&c, "/sys/fs/bpf")
        ),
        format!("{}:/etc/enforcer:ro", policy_dir.display()),
    ];
    let security = security_flags(&c);
    let agent_parent = format!("/{cg_name}/agent");
    let start_agent = |name: &str| {
        let mut a = vec![
            "run",
            "--detach",
            "--name",
            name,
            "--pid=host",
            "--cgroupns=host",
            "--network=none",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cgroup-parent",
            &agent_parent,
        ];
        a.extend(security.iter().map(String::as_str));
        for m in &mounts {
            a.extend(["--volume", m]);
        }
        a.push(&tag);
        a.extend(args.iter().map(String::as_str));
        podman.ok(&a);
        await_in(&podman, name, 60, "the agent's ready line", || {
            podman.logs(name).contains("\"message\":\"ready\"")
        });
    };
    start_agent(&agent1);
    // It found Alertmanager in the node's /proc (host PID namespace) with its pod's cgroup:
    // the target counts as attached on its /metrics (in its own network namespace, where the
    // kubelet probes it).
    let agent_pid = podman.pid(&agent1);
    let (status, metrics) = request_in(agent_pid, "127.0.0.1:9895", "GET", "/metrics").unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("enforcer_target_attached{target=\"process:alertmanager\"} 1"),
        "{metrics}"
    );
    // The agent's deny lines, once there are some; each is Alertmanager's connect() to the
    // metadata service, decided by the cloud-metadata block (events queued under an earlier
    // agent's policy generation name the rule by number).
    let denials = |agent: &str| {
        let mut lines = Vec::new();
        await_in(&podman, agent, 60, "a deny line", || {
            lines = deny_lines(&podman.logs(agent));
            !lines.is_empty()
        });
        for e in &lines {
            assert_eq!(e["mode"], "enforce", "{e}");
            assert_eq!(e["pid"], am_pid, "{e}");
            assert_eq!(e["comm"], "alertmanager", "{e}");
            assert_eq!(e["target"], "process:alertmanager", "{e}");
            assert_eq!(e["hook"], "connect4", "{e}");
            assert_eq!(e["dst_ip"], "169.254.169.254", "{e}");
            assert_eq!(e["dst_port"], 80, "{e}");
            let earlier = format!("rule #{} of policy generation ", e["rule_id"]);
            let rule = e["rule"].as_str().unwrap();
            assert!(rule == METADATA_RULE || rule.starts_with(&earlier), "{e}");
        }
        lines
    };
    let first = denials(&agent1);
    assert_eq!(first[0]["rule"], METADATA_RULE);
    await_in(&podman, &am, 60, "Alertmanager to report EPERM", || {
        count(&podman, &am, DENIED) > 0
    });
    let unreachable = count(&podman, &am, UNREACHABLE);

    // 3. The agent container is killed: the pinned links keep denying.
    podman.ok(&["kill", "--signal", "KILL", &agent1]);
    wait_for(Duration::from_secs(30), "the agent to die", || {
        (!podman.running(&agent1)).then_some(())
    });
    let links = std::fs::read_dir(enforcer::kernel::pin::Pins::new(&pins.path).links_dir())
        .map_or(0, Iterator::count);
    assert!(links > 0, "no pinned links under {}", pins.path.display());
    let denied = count(&podman, &am, DENIED);
    await_in(&podman, &am, 60, "an attempt denied with no agent", || {
        count(&podman, &am, DENIED) > denied
    });
    assert_eq!(
        count(&podman, &am, UNREACHABLE),
        unreachable,
        "an attempt got out"
    );

    // 4. A new agent container adopts the pins.
    start_agent(&agent2);
    assert!(
        podman
            .logs(&agent2)
            .contains("adopted pinned maps of an earlier agent"),
        "{}",
        podman.logs(&agent2)
    );
    // Its lines include the calls denied while no agent ran (queued in the pinned ring
    // buffer, under the first agent's generation).
    let second = denials(&agent2);
    assert!(
        second
            .iter()
            .any(|e| e["generation"] == first[0]["generation"]),
        "no event from the time without an agent: {second:?}"
    );
    assert_eq!(
        count(&podman, &am, UNREACHABLE),
        unreachable,
        "an attempt got out"
    );

    // 5. `enforcer detach` in the agent's container (the README's kubectl exec), then stop it:
    // nothing stays attached.
    let detached = podman.ok(&["exec", &agent2, "enforcer", "detach"]);
    assert!(detached.contains("removed"), "{detached}");
    podman.ok(&["stop", "--time=10", &agent2]);
    assert_eq!(
        podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", &agent2]),
        "0",
        "{}",
        podman.logs(&agent2)
    );
    await_in(
        &podman,
        &am,
        60,
        "an unreachable attempt after detach",
        || count(&podman, &am, UNREACHABLE) > unreachable,
    );
}
