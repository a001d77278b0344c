//! `enforcer`: parse the command line and dispatch; the work is in the library.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{CommandFactory as _, Parser, Subcommand};
use enforcer::{
    agent, amconfig, compile,
    logging::{LogFormat, LogLevel},
    policy,
};

/// `--version`: the version, the git revision and the build date.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("ENFORCER_REVISION"),
    ", built ",
    env!("ENFORCER_BUILD_DATE"),
    ")"
);

/// eBPF egress enforcer for Prometheus Alertmanager.
///
/// Decides in the kernel every connect() and unconnected sendmsg() of the processes in a cgroup
/// (Alertmanager's), so that a malicious receiver cannot reach the cloud metadata service,
/// internal networks or Alertmanager itself; every denied call is written as one JSON line.
///
/// Exit status: 0 on success; 1 when a command fails (an invalid policy, a denied destination,
/// an error while running); 2 on a usage error (an unknown flag or subcommand, a missing or
/// malformed flag value).
#[derive(Parser)]
#[command(name = "enforcer", version = VERSION, about, long_about)]
struct Cli {
    /// Least severe diagnostic written on stderr (overrides RUST_LOG; default info).
    #[arg(long = "log.level", value_name = "LEVEL", global = true, value_enum)]
    log_level: Option<LogLevel>,
    /// Format of the diagnostics on stderr (decision events on stdout are always JSON).
    #[arg(
        long = "log.format",
        value_name = "FORMAT",
        global = true,
        value_enum,
        default_value_t = LogFormat::Json
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--web.listen-address`: an `IP:PORT`, or `none`.
#[derive(Clone, Copy, Debug)]
struct ListenAddress(Option<SocketAddr>);

impl std::str::FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|e| {
            format!(
                "{e}; expected IP:PORT such as 127.0.0.1:9895 or [::1]:9895 (an address, not \
                 a host name), or `none`"
            )
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a cgroup v2 directory and enforce a policy until SIGINT/SIGTERM.
    ///
    /// Denied calls (or, in audit mode, calls that would be denied) are written to stdout as JSON
    /// lines, identical ones folded per --denial-window-ms (each line's `count` says how many
    /// calls it stands for); diagnostics (including the "ready" line once attached) go to
    /// stderr.
    /// Exit status: 0 after a clean detach, 1 on any error.
    Run {
        /// Policy file (YAML). Without it, the embedded default: allow everything except the
        /// `private` and `cloud-metadata` presets. SIGHUP or a change of the file reloads it;
        /// a rejected policy keeps the running one.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// cgroup v2 directory whose processes are enforced, e.g.
        /// /sys/fs/cgroup/system.slice/prometheus-alertmanager.service (repeatable). Without
        /// it, the policy's `targets:` are used (scope mode).
        #[arg(long, value_name = "PATH")]
        cgroup: Vec<PathBuf>,
        /// Scope mode: the cgroup to attach at; only tasks matching the policy's targets (by
        /// executable name, cgroup or systemd unit) are decided below it. Default: the cgroup
        /// v2 root, so a matching process is enforced from its first instruction wherever it
        /// starts.
        #[arg(long, value_name = "PATH")]
        scope: Option<PathBuf>,
        /// Pin programs, maps and links in bpffs (see --bpffs-dir): enforcement stays in place
        /// when the agent stops or crashes, and a restarted agent adopts it. Without it,
        /// stopping the agent detaches everything.
        #[arg(long)]
        pin: bool,
        /// bpffs directory for --pin (bpffs is mounted at /sys/fs/bpf when missing). One agent
        /// at a time uses it (a lock); an agent takes over from the pins of an earlier release
        /// there, and refuses to start over those of a newer one.
        #[arg(long, value_name = "DIR", default_value = enforcer::kernel::pin::DEFAULT_ROOT)]
        bpffs_dir: PathBuf,
        /// With --pin: seconds to wait for another agent that holds the lock on --bpffs-dir to
        /// exit before giving up (exit status 1).
        #[arg(long, value_name = "SECONDS", default_value_t = enforcer::kernel::pin::DEFAULT_LOCK_WAIT.as_secs(), value_parser = clap::value_parser!(u64).range(0..=86_400))]
        lock_timeout: u64,
        /// Address of the metrics endpoint (/metrics, /healthz, /readyz); `none` disables it.
        #[arg(
            long = "web.listen-address",
            visible_alias = "metrics-address",
            value_name = "ADDR",
            default_value = enforcer::metrics::DEFAULT_ADDRESS
        )]
        metrics_address: ListenAddress,
        /// Milliseconds between drains of the event ring buffer when no wakeup arrives.
        #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        drain_interval_ms: u64,
        /// Milliseconds of a denial aggregation window: identical denials (same target,
        /// process, destination, port, protocol and rule) within it are written as the first
        /// one's line and one line at the window's end whose `count` says how many followed;
        /// 0 writes every denial as its own line. Metrics count every denial either way.
        #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        denial_window_ms: u64,
    },
    /// Remove everything pinned agents left in bpffs, of every release (pin layout) found
    /// there: links (which detaches the programs), programs and maps.
    Detach {
        /// bpffs directory the agent pinned into.
        #[arg(long, value_name = "DIR", default_value = enforcer::kernel::pin::DEFAULT_ROOT)]
        bpffs_dir: PathBuf,
    },
    /// List what is pinned in bpffs, by pin layout (release) and cgroup: the programs attached
    /// to each cgroup by a pinned link, the programs and maps, and whether an agent runs.
    Status {
        /// bpffs directory the agent pinned into.
        #[arg(long, value_name = "DIR", default_value = enforcer::kernel::pin::DEFAULT_ROOT)]
        bpffs_dir: PathBuf,
    },
    /// Validate a policy and print its rules and the compiled kernel entries (--format json:
    /// one JSON document); with --alertmanager-config, decide instead every destination of an
    /// Alertmanager configuration.
    ///
    /// Each destination (receiver, field, scheme://host:port, never userinfo, path or query) is
    /// printed with the verdict the policy gives it and the deciding rule: ALLOW, DENY,
    /// UNDECIDED (templated host, proxy from the environment: a warning) or INVALID (unreadable
    /// *_file, ambiguous URL, unknown receiver kind). Literal addresses count in every spelling
    /// (2852039166, 0xa9fea9fe, [::ffff:a9fe:a9fe], ...); host names are decided by the fqdn
    /// rules, and with --resolve by the addresses they resolve to as well.
    ///
    /// Exit status: 0 when valid (and every destination allowed); 1 when a destination is
    /// denied or invalid (or undecided with --strict), or with `file:line:column: what is
    /// wrong` on stderr when an input is invalid.
    Check {
        /// Policy file (YAML). Without it, the embedded default policy is checked.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Alertmanager configuration (alertmanager.yml) whose destinations are checked.
        #[arg(long, value_name = "FILE")]
        alertmanager_config: Option<PathBuf>,
        /// Also resolve host names with the system resolver and decide every address (the
        /// worst verdict wins).
        #[arg(long, requires = "alertmanager_config")]
        resolve: bool,
        /// Fail on destinations that cannot be decided statically (templated hosts, ...) too.
        #[arg(long, requires = "alertmanager_config")]
        strict: bool,
        /// Output format: of the destination report with --alertmanager-config, else of the
        /// policy listing (json: `"valid"`, rules with their file positions, the API guard,
        /// targets, capacity, warnings; a refused policy is `{"valid":false,"error":...}`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also load every kernel program into this machine's kernel (nothing is attached),
        /// print what the verifier spent on each (instructions processed, load time) for both
        /// modes, and unload them. Exit status 1 when a program is refused or processes more
        /// than 100,000 instructions (a tenth of the kernel's limit); a load slower than 2 s
        /// is a warning. Needs root.
        #[arg(long, conflicts_with = "alertmanager_config")]
        kernel: bool,
    },
    /// Suggest a policy from an Alertmanager configuration, for a human to review.
    ///
    /// Prints YAML: allowlist mode, the private and cloud-metadata presets blocked, one fqdn
    /// rule per host name with its ports; literal addresses in blocked ranges and templated
    /// URLs as commented-out entries under a warning. Never derive a policy live from the
    /// configuration it protects: review it, then commit it.
    Suggest {
        /// Alertmanager configuration (alertmanager.yml).
        #[arg(long, value_name = "FILE")]
        alertmanager_config: PathBuf,
    },
    /// Print the shipped presets and the ranges they contain.
    Presets,
    /// Print a shell completion script, e.g. `enforcer completions bash >
    /// /etc/bash_completion.d/enforcer`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page enforcer(1) in roff; with --dir, write it and one page per
    /// subcommand (enforcer-run.1, ...) there instead.
    Man {
        /// Directory to write enforcer.1 and enforcer-SUBCOMMAND.1 into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Output format of `check`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Lines for a human.
    Text,
    /// One JSON document.
    Json,
}

/// `check --kernel`: loads the object in both modes, prints the verifier's table, unloads.
fn check_kernel() -> ExitCode {
    let mut ok = true;
    for (mode, scoped) in [("direct mode", false), ("scope mode", true)] {
        match enforcer::kernel::Kernel::load_with(None, scoped) {
            Ok(k) => {
                let report = k.load_report();
                println!("\nkernel programs, {mode}:\n{report}");
                for problem in report.over_budget() {
                    eprintln!("error: {mode}: {problem}");
                    ok = false;
                }
                // Time depends on the machine (and its load): a warning, not a failure.
                if let Some(slow) = report.slower_than(enforcer::kernel::verifier::LOAD_BUDGET) {
                    eprintln!("warning: {mode}: {slow}");
                }
                for (feature, available) in k.features() {
                    if !available {
                        eprintln!(
                            "error: {mode}: feature {} is not available",
                            feature.as_str()
                        );
                        ok = false;
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {mode}: {}", enforcer::error_chain(&e));
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    // A usage error exits with 2 (clap's convention), --help and --version with 0.
    let cli = Cli::parse();
    let (log_level, log_format) = (cli.log_level, cli.log_format);
    match cli.command {
        Command::Run {
            policy,
            cgroup,
            scope,
            pin,
            bpffs_dir,
            lock_timeout,
            metrics_address,
            drain_interval_ms,
            denial_window_ms,
        } => {
            enforcer::logging::init_with(log_level, log_format);
            match enforcer::cgroup::enter_host_cgroup_namespace() {
                Ok(true) => tracing::info!("joined the host's cgroup namespace (via /proc/1)"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not join the host's cgroup namespace; target discovery may miss processes of other pods")
                }
            }
            let metrics = metrics_address.0;
            let opts = agent::RunOptions {
                policy,
                cgroups: cgroup,
                scope,
                drain_interval: Duration::from_millis(drain_interval_ms),
                denial_window: Duration::from_millis(denial_window_ms),
                pins: pin.then(|| {
                    enforcer::kernel::pin::Pins::new(bpffs_dir)
                        .with_lock_wait(Duration::from_secs(lock_timeout))
                }),
                metrics,
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&anyhow::Error::new(e).context("starting the runtime")),
            };
            match rt.block_on(agent::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %enforcer::error_chain(&e), "enforcer run failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            policy,
            alertmanager_config: Some(config),
            resolve,
            strict,
            format,
            ..
        } => {
            let options = amconfig::CheckOptions { resolve, strict };
            let report = agent::load_policy(policy.as_deref())
                .map_err(anyhow::Error::new)
                .and_then(|p| compile::compile(&p).map(|_| p).map_err(anyhow::Error::new))
                .and_then(|p| {
                    let config = amconfig::load(&config).map_err(anyhow::Error::new)?;
                    Ok(amconfig::check(&config, &p, options))
                });
            match report {
                Ok(r) => {
                    match format {
                        Format::Text => print!("{}", r.to_text()),
                        Format::Json => println!("{}", r.to_json()),
                    }
                    if r.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(&e),
            }
        }
        Command::Suggest {
            alertmanager_config,
        } => match amconfig::load(&alertmanager_config) {
            Ok(config) => {
                print!("{}", amconfig::suggest(&config));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&anyhow::Error::new(e)),
        },
        Command::Check {
            policy,
            format,
            kernel,
            ..
        } => {
            let code = check_policy(policy.as_deref(), format);
            if kernel && code == ExitCode::SUCCESS {
                check_kernel()
            } else {
                code
            }
        }
        Command::Detach { bpffs_dir } => {
            let pins = enforcer::kernel::pin::Pins::new(&bpffs_dir);
            if !pins.exists() {
                return fail(&anyhow::anyhow!(
                    "nothing is pinned under {}: no enforcer pins there (give the --bpffs-dir \
                     that `enforcer run --pin` used)",
                    bpffs_dir.display()
                ));
            }
            let layouts = enforcer::kernel::layouts::find(&bpffs_dir).unwrap_or_default();
            match enforcer::kernel::pin::remove_all(&pins) {
                Ok(links) => {
                    println!(
                        "removed {links} link(s) and every pin under {} (layouts {})",
                        bpffs_dir.display(),
                        layouts
                            .iter()
                            .map(|l| format!("v{}", l.version))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&anyhow::Error::new(e)),
            }
        }
        Command::Status { bpffs_dir } => match enforcer::kernel::layouts::status(&bpffs_dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&anyhow::Error::new(e)),
        },
        Command::Presets => {
            print!("{}", policy::render_presets());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "enforcer",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match write_man(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
    }
}

/// `enforcer check` of a policy alone.
fn check_policy(path: Option<&Path>, format: Format) -> ExitCode {
    let checked = agent::load_policy(path)
        .map_err(anyhow::Error::new)
        .and_then(|p| {
            compile::compile(&p)
                .map(|c| (p, c))
                .map_err(anyhow::Error::new)
        });
    match (checked, format) {
        (Ok((p, c)), Format::Text) => {
            print!("{}", compile::render(&p, &c));
            for w in check_warnings(&p) {
                eprintln!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        (Ok((p, c)), Format::Json) => {
            println!("{}", compile::render_json(&p, &c, &check_warnings(&p)));
            ExitCode::SUCCESS
        }
        (Err(e), Format::Text) => fail(&e),
        (Err(e), Format::Json) => {
            println!(
                "{}",
                compile::refused_json(&enforcer::error_chain(e.as_ref()))
            );
            fail(&e)
        }
    }
}

/// `enforcer man`: enforcer(1) on stdout, or every page into `dir`.
fn write_man(dir: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        return clap_mangen::Man::new(cmd)
            .render(&mut out)
            .context("writing the man page");
    };
    let mut pages = vec![("enforcer".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("enforcer-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("enforcer {}", sub.get_name()));
        pages.push((name, page));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .context("rendering a man page")?;
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Prints the error chain on stderr; policy errors start with `file:line:column:`.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("{}", enforcer::error_chain(e.as_ref()));
    ExitCode::FAILURE
}

/// The policy's warnings, and where its cgroup targets are on this machine.
fn check_warnings(p: &policy::Policy) -> Vec<String> {
    let mut out: Vec<String> = policy::lint::warnings(p)
        .iter()
        .map(ToString::to_string)
        .collect();
    let Ok(mount) = enforcer::cgroup::cgroup2_mount() else {
        return out;
    };
    for t in &p.targets {
        if let policy::Target::Cgroup { path, location } = t {
            match policy::targets::cgroup_on_host(path, &mount) {
                Err(why) => out.push(format!("{location}: {why}")),
                Ok(full) if !full.is_dir() => out.push(format!(
                    "{location}: cgroup {} does not exist on this machine (yet)",
                    full.display()
                )),
                Ok(_) => {}
            }
        }
    }
    out
}
