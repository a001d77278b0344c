//! The integrity watchdog: the agent reads the API of every Alertmanager it enforces and
//! reports what an attacker who reached that API, or its configuration file, did to the alert
//! pipeline — and sends each finding out of band, never through the Alertmanager that may be
//! the thing silenced.
//!
//! - [`flags`]: where a target's API is (its own `--web.listen-address`, `--web.route-prefix`,
//!   `--web.external-url`), read from `/proc/<pid>/cmdline`.
//! - [`client`]: HTTP(S) requests made from inside the target's network namespace (a socket
//!   created by a thread that joined the namespace stays in it).
//! - [`silences`]: silences that mute everything or protected alerts, broadened by an edit
//!   (the expired id linked to its successor), extended, too long.
//! - [`config`]: the running configuration's hash, receivers and routes, and the receivers the
//!   policy denies (decided by [`crate::amconfig::check`], as `enforcer check` decides them).
//! - [`effect`]: what the silences, inhibit rules, time intervals and receivers do to the
//!   alerts firing now (`GET /api/v2/alerts`, `/api/v2/alerts/groups`).
//! - [`config_effect`]: the protected selectors and alerts routed through the running route
//!   tree; inhibit rules fed by always-firing alerts; the `config_changed` summary.
//! - [`notify`]: the out-of-band POSTs (bounded queue, retries, repeats while a finding
//!   persists, no URL secret ever logged).
//! - [`watchdog`]: the loop over the targets, findings on stdout, metrics.
pub mod client;
pub mod config;
pub mod config_effect;
pub mod effect;
pub mod finding;
pub mod flags;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod origin;
pub mod silences;
pub mod watchdog;

/// RFC 3339 timestamps (one module for the whole agent).
pub use crate::time;

pub use finding::{Finding, FindingKind};
pub use metrics::IntegrityMetrics;
pub use watchdog::{Watchdog, WatchedProcess};
