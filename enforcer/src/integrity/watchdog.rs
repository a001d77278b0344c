//! The watchdog's loop: every `interval`, read each watched Alertmanager's silences and
//! running configuration, turn what changed into findings, print each as one JSON line on
//! stdout and hand it to the out-of-band notifier.
//!
//! The agent tells the watchdog which processes to watch ([`Watchdog::set_targets`]: the
//! Alertmanager processes among its targets, in direct and in scope mode) and which policy
//! holds ([`Watchdog::set_policy`]); the watchdog never decides what a target is.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::client::ApiClient;
use super::config::{self, Running};
use super::config_effect::{self, RoutingCache};
use super::effect::{self, Alert, EffectMemory};
use super::finding::{Finding, FindingKind, Source};
use super::metrics::{BreadthLabels, IntegrityMetrics, KindLabels, WatchedLabels};
use super::notify::Notifier;
use super::silences::{self, Breadth, SilenceBook};
use crate::details;
use crate::policy::Policy;

/// One Alertmanager process to watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchedProcess {
    pub pid: u32,
    /// The enforced target it belongs to, as deny events name it.
    pub target: String,
}

/// The running watchdog; dropping it (or [`Watchdog::stop`]) ends it.
pub struct Watchdog {
    targets: watch::Sender<Vec<WatchedProcess>>,
    policy: watch::Sender<Arc<Policy>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watchdog {
    pub fn start(policy: Arc<Policy>, metrics: Arc<IntegrityMetrics>) -> Self {
        Self::start_with(policy, metrics, PathBuf::from("/proc"))
    }

    /// As [`Watchdog::start`], with processes read under `proc_root`.
    pub fn start_with(
        policy: Arc<Policy>,
        metrics: Arc<IntegrityMetrics>,
        proc_root: PathBuf,
    ) -> Self {
        let (targets, targets_rx) = watch::channel(Vec::new());
        let (policy_tx, policy_rx) = watch::channel(policy);
        let task = tokio::spawn(run(targets_rx, policy_rx, metrics, proc_root));
        Self {
            targets,
            policy: policy_tx,
            task,
        }
    }

    /// The processes to watch from now on.
    pub fn set_targets(&self, mut procs: Vec<WatchedProcess>) {
        procs.sort_by_key(|p| p.pid);
        self.targets.send_if_modified(|current| {
            let changed = *current != procs;
            if changed {
                *current = procs;
            }
            changed
        });
    }

    /// The policy in force (its `integrity:` settings and the rules receivers are decided by).
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.send_replace(policy);
    }

    /// Ends the watchdog (as dropping it does).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// What the watchdog keeps of one process.
struct Watched {
    source: Source,
    labels: WatchedLabels,
    client: Result<Arc<ApiClient>, String>,
    /// Where relative `*_file` paths of its configuration are read (through its root).
    config_dir: PathBuf,
    book: SilenceBook,
    config: Option<Running>,
    /// The `receiver_denied` findings of `config` under the current policy.
    denied: Option<Vec<Finding>>,
    /// The silence findings of the last successful read.
    silence_states: Vec<Finding>,
    /// The running configuration's routing, by hash.
    routing: RoutingCache,
    effect: EffectMemory,
    /// The effect findings of the last successful read.
    effect_states: Vec<Finding>,
    failures: u32,
    last_error: String,
}

fn watch(proc_root: &Path, p: &WatchedProcess, policy: &Policy) -> Watched {
    let timeout = policy
        .integrity
        .interval
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let dir = proc_root.join(p.pid.to_string());
    let flags = std::fs::read(dir.join("cmdline"))
        .map_err(|e| format!("reading its command line: {e}"))
        .and_then(|c| super::flags::parse(&c).map_err(|e| e.to_string()));
    let client = flags.clone().and_then(|f| {
        ApiClient::new(
            proc_root,
            p.pid,
            f.connect,
            f.prefix,
            &policy.integrity.api,
            timeout,
        )
        .map(Arc::new)
        .map_err(|e| e.to_string())
    });
    let api = match (&client, &flags) {
        (Ok(c), _) => c.base_url(),
        (Err(_), Ok(f)) => format!("http://{}{}", f.connect, f.prefix),
        (Err(_), Err(_)) => String::new(),
    };
    let config_dir = flags.as_ref().map_or_else(
        |_| dir.join("root"),
        |f| {
            let file = Path::new(&f.config_file);
            let parent = file.parent().unwrap_or(Path::new(""));
            if file.is_absolute() {
                dir.join("root")
                    .join(parent.strip_prefix("/").unwrap_or(parent))
            } else {
                dir.join("cwd").join(parent)
            }
        },
    );
    match &client {
        Ok(_) => {
            tracing::info!(pid = p.pid, target = %p.target, api = %api, "integrity watchdog: watching")
        }
        Err(e) => {
            tracing::warn!(pid = p.pid, target = %p.target, error = %e, "integrity watchdog: cannot watch")
        }
    }
    Watched {
        labels: WatchedLabels {
            target: p.target.clone(),
            pid: p.pid.to_string(),
        },
        source: Source {
            target: p.target.clone(),
            pid: p.pid,
            api,
        },
        client,
        config_dir,
        book: SilenceBook::default(),
        config: None,
        denied: None,
        silence_states: Vec::new(),
        routing: RoutingCache::default(),
        effect: EffectMemory::default(),
        effect_states: Vec::new(),
        failures: 0,
        last_error: String::new(),
    }
}

/// One read: silences, running configuration and firing alerts.
type ReadResult = Result<(Vec<silences::Silence>, Running, Vec<Alert>), String>;

async fn read(client: Arc<ApiClient>) -> ReadResult {
    let body = client
        .get("api/v2/silences")
        .await
        .map_err(|e| e.to_string())?;
    let silences = silences::parse(&body).map_err(|e| e.to_string())?;
    let body = client
        .get("api/v2/status")
        .await
        .map_err(|e| e.to_string())?;
    let running = config::parse_status(&body).map_err(|e| e.to_string())?;
    let alerts = client
        .get("api/v2/alerts")
        .await
        .map_err(|e| e.to_string())?;
    let groups = client
        .get("api/v2/alerts/groups")
        .await
        .map_err(|e| e.to_string())?;
    let alerts = effect::parse_alerts(&alerts, &groups).map_err(|e| e.to_string())?;
    Ok((silences, running, alerts))
}

async fn run(
    mut targets: watch::Receiver<Vec<WatchedProcess>>,
    mut policy_rx: watch::Receiver<Arc<Policy>>,
    metrics: Arc<IntegrityMetrics>,
    proc_root: PathBuf,
) {
    let mut policy = policy_rx.borrow_and_update().clone();
    let mut reporter = Reporter::new(&policy, metrics.clone());
    let mut watched: HashMap<u32, Watched> = HashMap::new();
    loop {
        let started = Instant::now();
        if policy_rx.has_changed().unwrap_or(false) {
            let new = policy_rx.borrow_and_update().clone();
            if new.integrity != policy.integrity {
                reporter = Reporter::new(&new, metrics.clone());
                watched.clear();
            }
            for w in watched.values_mut() {
                w.denied = None;
            }
            policy = new;
        }
        let wanted: Vec<WatchedProcess> = if policy.integrity.enabled {
            targets.borrow_and_update().clone()
        } else {
            Vec::new()
        };
        let keep: HashSet<u32> = wanted.iter().map(|p| p.pid).collect();
        watched.retain(|pid, w| {
            let stays = keep.contains(pid);
            if !stays {
                metrics.forget(&w.source.target, *pid);
                reporter.resolve_all(*pid);
            }
            stays
        });
        for p in &wanted {
            watched
                .entry(p.pid)
                .or_insert_with(|| watch(&proc_root, p, &policy));
        }
        let mut reads = tokio::task::JoinSet::new();
        for (pid, w) in &watched {
            let pid = *pid;
            match &w.client {
                Ok(c) => {
                    let c = c.clone();
                    reads.spawn(async move { (pid, read(c).await) });
                }
                Err(e) => {
                    let e = e.clone();
                    reads.spawn(async move { (pid, Err(e)) });
                }
            }
        }
        while let Some(Ok((pid, result))) = reads.join_next().await {
            if let Some(w) = watched.get_mut(&pid) {
                observe(w, result, &policy, &metrics, &mut reporter);
            }
        }
        reporter.publish();
        let pause = policy.integrity.interval.saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            r = targets.changed() => if r.is_err() { return },
            r = policy_rx.changed() => if r.is_err() { return },
        }
    }
}

fn observe(
    w: &mut Watched,
    result: ReadResult,
    policy: &Policy,
    metrics: &IntegrityMetrics,
    reporter: &mut Reporter,
) {
    let settings = &policy.integrity;
    let mut changes = Vec::new();
    let mut states;
    match result {
        Ok((silences, running, alerts)) => {
            if w.failures >= settings.unreachable_after {
                tracing::info!(pid = w.source.pid, api = %w.source.api, "integrity watchdog: API reachable again");
            }
            w.failures = 0;
            let seen = w.book.observe(silences.clone(), settings, &w.source);
            changes.extend(seen.changes);
            w.silence_states = seen.states;
            for breadth in [Breadth::Everything, Breadth::Protected, Breadth::Narrow] {
                metrics
                    .silences
                    .get_or_create(&BreadthLabels {
                        target: w.labels.target.clone(),
                        pid: w.labels.pid.clone(),
                        breadth: breadth.as_str(),
                    })
                    .set(seen.breadth.get(&breadth).copied().unwrap_or(0));
            }
            let keep = w.config.as_ref().map(|c| c.hash.clone());
            let routing = w.routing.get(&running, keep.as_deref(), settings);
            if let Some(old) = &w.config
                && old.hash != running.hash
            {
                let mut f = config::changed(old, &running, &w.source);
                let old_routing = w.routing.get(old, Some(&running.hash), settings).ok();
                let probes = config_effect::probes(settings, &alerts);
                config_effect::summarise(
                    &mut f.details,
                    (old, old_routing.as_deref().map(|a| &a.routing)),
                    (&running, routing.as_ref().ok().map(|a| &a.routing)),
                    &probes,
                );
                changes.push(f);
                metrics.config_changes.get_or_create(&w.labels).inc();
                w.denied = None;
            }
            w.effect_states =
                judge_effect(w, &silences, &running, routing, &alerts, settings, metrics);
            if w.denied.is_none() {
                w.denied = Some(config::denied(&running, policy, &w.config_dir, &w.source));
            }
            w.config = Some(running);
            metrics
                .last_read
                .get_or_create(&w.labels)
                .set(super::time::now_ms() / 1000);
            metrics.api_up.get_or_create(&w.labels).set(1);
            states = w.silence_states.clone();
            states.extend(w.effect_states.iter().cloned());
        }
        Err(e) => {
            w.failures = w.failures.saturating_add(1);
            metrics.api_up.get_or_create(&w.labels).set(0);
            if e != w.last_error {
                tracing::warn!(pid = w.source.pid, api = %w.source.api, error = %e, failures = w.failures, "integrity watchdog: reading the API failed");
            }
            w.last_error = e.clone();
            // What was found before still holds as far as anyone knows.
            states = w.silence_states.clone();
            states.extend(w.effect_states.iter().cloned());
            if w.failures >= settings.unreachable_after {
                states.push(Finding::new(
                    FindingKind::ApiUnreachable,
                    &w.source,
                    "",
                    details! {"error" => e, "failed_reads" => w.failures},
                ));
            }
        }
    }
    states.extend(w.denied.iter().flatten().cloned());
    reporter.report(w.source.pid, states, changes);
}

/// The findings judged by effect on the firing alerts and by routing through the running
/// configuration, and the alert gauges.
fn judge_effect(
    w: &mut Watched,
    silences: &[silences::Silence],
    running: &Running,
    routing: Result<Arc<config_effect::Analysed>, String>,
    alerts: &[Alert],
    settings: &crate::policy::IntegritySettings,
    metrics: &IntegrityMetrics,
) -> Vec<Finding> {
    let now = super::time::now_ms();
    let routing = routing.map_err(|e| {
        Finding::new(
            FindingKind::ConfigNotAnalysed,
            &w.source,
            &running.hash,
            details! {"error" => e, "config_hash" => running.hash},
        )
    });
    let judged = effect::judge(
        alerts,
        silences,
        routing.as_ref().ok().map(|a| &a.routing),
        settings,
        &mut w.effect,
        now,
        &w.source,
    );
    metrics.observe_alerts(&w.labels, &judged);
    let mut states = judged.states;
    match routing {
        Ok(r) => states.extend(config_effect::judge(
            &r,
            settings,
            alerts,
            now,
            &running.hash,
            &w.source,
        )),
        Err(f) => states.push(f),
    }
    states
}

/// Prints and sends findings: a state once when it starts (again every `notify_repeat` to the
/// notify URLs while it holds), a change once.
struct Reporter {
    active: HashMap<String, (Finding, Instant)>,
    notifier: Notifier,
    repeat: Duration,
    metrics: Arc<IntegrityMetrics>,
}

impl Reporter {
    fn new(policy: &Policy, metrics: Arc<IntegrityMetrics>) -> Self {
        let s = &policy.integrity;
        Self {
            active: HashMap::new(),
            notifier: Notifier::start(&s.notify, s.notify_queue, metrics.clone()),
            repeat: s.notify_repeat,
            metrics,
        }
    }

    fn raise(&self, f: &Finding) {
        let f = &super::origin::annotated(f);
        f.print();
        self.notifier.send(&f.to_json());
        self.metrics
            .findings
            .get_or_create(&KindLabels {
                kind: f.finding.as_str(),
            })
            .inc();
    }

    fn report(&mut self, pid: u32, states: Vec<Finding>, changes: Vec<Finding>) {
        for f in &changes {
            self.raise(f);
        }
        let now: HashSet<String> = states.iter().map(|f| f.key.clone()).collect();
        self.active.retain(|key, (f, _)| {
            let holds = f.pid != pid || now.contains(key);
            if !holds {
                tracing::info!(finding = f.finding.as_str(), pid, key = %key, "integrity finding no longer holds");
            }
            holds
        });
        for f in states {
            match self.active.get_mut(&f.key) {
                Some((_, sent)) => {
                    if sent.elapsed() >= self.repeat {
                        self.notifier.send(&f.to_json());
                        *sent = Instant::now();
                    }
                }
                None => {
                    self.raise(&f);
                    self.active.insert(f.key.clone(), (f, Instant::now()));
                }
            }
        }
    }

    fn resolve_all(&mut self, pid: u32) {
        self.active.retain(|_, (f, _)| f.pid != pid);
    }

    fn publish(&self) {
        for kind in FindingKind::ALL {
            let n = self
                .active
                .values()
                .filter(|(f, _)| f.finding == kind)
                .count();
            self.metrics
                .active_findings
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .set(n as i64);
        }
    }
}
