//! The kernel side as the agent sees it: load the embedded object, attach the four programs to a
//! cgroup, install compiled policies (double-buffered), read counters, hand out the event ring.
use std::collections::HashMap;

use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    maps::{Array, MapData, PerCpuArray, RingBuf},
};
use enforcer_common::{
    ACTIVE_SETS, Config, V4Filter, counter, fqdn as fqdn_names, hook, map_names, prog_names,
};

use crate::{cgroup::Cgroup, compile::Compiled};

pub mod api;
mod comm;
mod error;
pub mod fqdn;
pub mod identity;
pub mod layouts;
mod maps;
pub mod pin;
mod progs;
mod rules;
pub mod verifier;

pub use comm::{comm_key, comm_text};
pub use error::{KernelError, map_err};
pub use maps::{Counters, clear_trie, set_entries};
use pin::{LinkPins, Pins};
use verifier::LoadReport;

/// A part of the agent that can be lost on a kernel that refuses its programs (or lacks what
/// it reads) while enforcement goes on; `enforcer_feature_available{feature}` says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// The DNS-learning programs: FQDN rules without a race between an answer and the connect.
    DnsLearning,
    /// The exec/exit tracepoints: scope mode's kernel-held target identity.
    Identity,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::DnsLearning => "dns_learning",
            Feature::Identity => "identity",
        }
    }
}

/// The kernel object built by build.rs (aya-build) from `enforcer-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

/// The benchmark's floor object (`enforcer-ebpf/src/floor.rs`): one cgroup/connect4 program,
/// `bench_floor_connect4`, that allows every call. Empty when built with AYA_BUILD_SKIP=1.
pub static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

const PROGRAMS: [&str; 4] = [
    prog_names::CONNECT4,
    prog_names::CONNECT6,
    prog_names::SENDMSG4,
    prog_names::SENDMSG6,
];

/// The socket guards and the packet-layer backstop (see `enforcer_common::sockets`), in attach
/// order: the backstop before `sock_create` marks a socket whose packets it decides. (No
/// `sock_release` program: a socket's mark is socket-local storage, freed with the socket.)
const SOCKET_PROGRAMS: [&str; 3] = [
    enforcer_common::sockets::prog_names::PACKET_EGRESS,
    prog_names::SOCK_CREATE,
    enforcer_common::sockets::prog_names::SETSOCKOPT,
];

/// The loaded programs and their maps.
#[expect(
    clippy::struct_excessive_bools,
    reason = "four independent facts about the loaded object, not a state machine"
)]
pub struct Kernel {
    ebpf: Ebpf,
    /// Rule set the programs read now.
    active: u32,
    /// True once a policy has been installed (set `active` is live).
    installed: bool,
    /// Where maps, programs and links are pinned; `None`: everything lives with this value.
    pins: Option<Pins>,
    /// Whether the maps were adopted from pins of an earlier agent.
    adopted: bool,
    /// Unpinned links per target cgroup id, by program (only without pinning); dropping a
    /// link detaches it.
    links: HashMap<u64, Vec<(&'static str, progs::HeldLink)>>,
    /// The cgroups the programs are attached to, by id (a reload attaches and detaches the
    /// ingress programs there).
    cgroups: HashMap<u64, Cgroup>,
    /// The ingress programs attached (or to attach) with the others: those the installed
    /// policy needs.
    ingress: Ingress,
    /// Scope mode (see [`Config::scoped`]), fixed at load ([`enforcer_common::SCOPED_GLOBAL`]).
    scoped: bool,
    /// Whether the DNS-learning program loaded (see [`Kernel::fqdn_learning`]).
    fqdn_learning: bool,
    /// The identity tracepoints' links once attached (empty when pinned: the pins hold them).
    identity_links: Option<Vec<aya::programs::trace_point::TracePointLinkId>>,
    /// Why the identity programs cannot run here (their tracepoint layout was not read).
    identity_error: Option<KernelError>,
    /// The targets' listening ports, guarded when the `api:` section names none; written
    /// with the next [`Kernel::install`].
    api_listen: api::ListenPorts,
    /// What the verifier spent on each program (see [`verifier`]).
    load_report: LoadReport,
    /// With pins: the agents' lock on the bpffs directory, held as long as this value.
    _lock: Option<layouts::Lock>,
}

impl Kernel {
    /// Loads the programs into the kernel (verifier included), without pinning; nothing is
    /// attached yet.
    pub fn load() -> Result<Self, KernelError> {
        Self::load_with(None, false)
    }

    /// Like [`Kernel::load`]. With `pins`, every map is pinned under it — or, when an earlier agent left pins there,
    /// adopted as it is (rules, active set, counters, queued events), so a restarted agent
    /// continues exactly where the last one stopped. `scoped`: scope mode, the programs decide
    /// only calls of target processes (see [`Kernel::set_targets`]).
    pub fn load_with(pins: Option<Pins>, scoped: bool) -> Result<Self, KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        let scoped_value = u32::from(scoped);
        loader.override_global(enforcer_common::SCOPED_GLOBAL, &scoped_value, true);
        // Per-CPU wakeup batches sized for the CPUs that can exist (an unreadable list counts
        // as many CPUs: smaller batches, more wakeups, never a larger unwoken backlog).
        let cpus = aya::util::nr_cpus().map_or(4096, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let wake_every = enforcer_common::wake_every(
            cpus,
            enforcer_common::DENY_RECORD_BYTES,
            enforcer_common::EVENTS_WAKEUP_BYTES,
        );
        loader.override_global(enforcer_common::WAKE_EVERY_GLOBAL, &wake_every, true);
        // The identity programs read tracepoint fields at offsets that differ between kernels.
        // Without them (no tracefs) the agent still enforces in direct mode; scope mode
        // refuses to start (see `set_targets`).
        let (offsets, identity_error) = match identity::field_offsets() {
            Ok(o) => (o, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        for (global, offset) in &offsets {
            loader.override_global(global, offset, true);
        }
        // One byte per pid below this system's pid_max (see `identity::tgid_map_entries`).
        loader.map_max_entries(
            enforcer_common::identity::map_names::TARGET_TGIDS,
            identity::tgid_map_entries(),
        );
        let mut adopted = false;
        let mut lock = None;
        if let Some(p) = &pins {
            // One agent per bpffs directory: a second one waits here for the first to exit,
            // before it reads or writes anything there.
            p.prepare_root()?;
            lock = Some(layouts::Lock::take(p.root(), p.lock_wait(), || {
                tracing::warn!(
                    dir = %p.root().display(),
                    wait_s = p.lock_wait().as_secs(),
                    "another enforcer agent holds the lock on this bpffs directory: waiting for \
                     it to exit (two agents never write the same maps)"
                );
            })?);
            // A newer release's pins: refuse before anything of this layout exists.
            layouts::refuse_newer(p.root())?;
            p.prepare()?;
            adopted = p.map(map_names::ACTIVE).exists();
            for name in map_names::ALL
                .iter()
                .chain(&enforcer_common::fqdn::map_names::ALL)
                .chain(&enforcer_common::identity::map_names::ALL)
                .chain(&enforcer_common::api::map_names::ALL)
                .chain(&enforcer_common::sockets::map_names::ALL)
            {
                loader.map_pin_path(name, p.map(name));
            }
        }
        // Statistics only: on a refusal the log holds the verifier's reason and its counts,
        // not a trace of every instruction (which can be hundreds of MiB at the limit).
        loader.verifier_log_level(VerifierLogLevel::STATS);
        let mut ebpf = loader.load(OBJECT).map_err(KernelError::Load)?;
        let mut report = LoadReport::default();
        for name in PROGRAMS {
            progs::load(&mut ebpf, name, pins.as_ref(), &mut report)?;
        }
        identity::load(&mut ebpf, pins.as_ref(), &mut report)?;
        for name in SOCKET_PROGRAMS {
            progs::load(&mut ebpf, name, pins.as_ref(), &mut report)?;
        }
        for name in [
            enforcer_common::api::PROG_NAME,
            enforcer_common::api::CLUSTER_PROG_NAME,
            enforcer_common::api::CLUSTER_UDP_PROG_NAME,
            enforcer_common::api::STREAM_PROG_NAME,
        ] {
            progs::load(&mut ebpf, name, pins.as_ref(), &mut report)?;
        }
        // The DNS-learning program is an addition to enforcement, not a part of it: where the
        // kernel's verifier refuses it (Linux 6.1 rejects a loop back-edge that falls through
        // a helper call), the connect programs still enforce, and FQDN rules are served by the
        // agent's own resolution alone.
        // With the query recorder: the learner learns only answers to queries it recorded.
        let dns = [fqdn_names::PROG_DNS_EGRESS, fqdn_names::PROG_DNS_INGRESS];
        let fqdn_learning = match dns.map(|n| progs::load(&mut ebpf, n, pins.as_ref(), &mut report))
        {
            [Ok(()), Ok(())] => true,
            _ => {
                for p in report.programs.iter().filter(|p| p.error.is_some()) {
                    tracing::error!(
                        program = p.program,
                        feature = Feature::DnsLearning.as_str(),
                        verifier = p.error.as_deref().unwrap_or(""),
                        "a program did not load: FQDN rules fall back to the agent's own \
                         resolution (the no-race guarantee needs the DNS-learning program)"
                    );
                }
                false
            }
        };
        let mut this = Self {
            ebpf,
            active: 0,
            installed: false,
            pins,
            adopted,
            links: HashMap::new(),
            cgroups: HashMap::new(),
            ingress: Ingress::default(),
            scoped,
            fqdn_learning,
            identity_links: None,
            identity_error,
            api_listen: api::ListenPorts::default(),
            load_report: report,
            _lock: lock,
        };
        if adopted {
            let name = map_names::ACTIVE;
            let active: Array<&MapData, u32> = Array::try_from(
                this.ebpf
                    .map(name)
                    .ok_or(KernelError::MissingMap { name })?,
            )
            .map_err(map_err(name))?;
            this.active = active.get(&0, 0).map_err(map_err(name))? % ACTIVE_SETS;
            this.installed = true;
        }
        Ok(this)
    }

    /// The generation of the policy the programs read now (0 before any install).
    pub fn generation(&self) -> Result<u32, KernelError> {
        if !self.installed {
            return Ok(0);
        }
        let name = map_names::CONFIG;
        let config: Array<&MapData, Config> = Array::try_from(
            self.ebpf
                .map(name)
                .ok_or(KernelError::MissingMap { name })?,
        )
        .map_err(map_err(name))?;
        Ok(config
            .get(&self.active, 0)
            .map_err(map_err(name))?
            .generation)
    }

    /// Sets the scope-mode targets: executable names and cgroup ids (see [`identity`]). New
    /// entries are added before stale ones are removed, so a target that stays a target is
    /// never uncovered. The first call attaches the identity tracepoints.
    pub fn set_targets(&mut self, names: &[String], cgroup_ids: &[u64]) -> Result<(), KernelError> {
        if let Some(e) = self.identity_error.take() {
            return Err(e);
        }
        identity::set_targets(&mut self.ebpf, names, cgroup_ids)?;
        if self.identity_links.is_none() {
            self.identity_links = Some(identity::attach(&mut self.ebpf, self.pins.as_ref())?);
        }
        Ok(())
    }

    /// Marks processes found running (by a scan of `/proc`) as targets. Call after
    /// [`Kernel::set_targets`]: from then on the kernel tracks every exec, fork and cgroup move
    /// itself, so no process falls between the scan and the tracepoints.
    pub fn add_target_tasks(&mut self, tgids: &[u32]) -> Result<(), KernelError> {
        identity::add_tasks(&mut self.ebpf, tgids)
    }

    /// The tasks the kernel treats as targets (scope mode): tgids, and tids of their threads.
    pub fn target_tasks(&self) -> Result<Vec<u32>, KernelError> {
        identity::target_tasks(&self.ebpf)
    }

    /// Writes the per-process automatic rules (see `agent::auto::admit`); returns the entries
    /// a full map refused.
    pub fn set_auto_rules(
        &mut self,
        wanted: &[(enforcer_common::AutoKey, u32)],
    ) -> Result<Vec<enforcer_common::AutoKey>, KernelError> {
        identity::set_auto_rules(&mut self.ebpf, wanted)
    }

    /// True when the DNS-learning program loaded: addresses the targets' own DNS answers carry
    /// for allowlisted names are learned before the answer is delivered.
    pub fn fqdn_learning(&self) -> bool {
        self.fqdn_learning
    }

    /// Each optional feature and whether it is available here (its programs loaded, the
    /// kernel facts it needs were read).
    pub fn features(&self) -> [(Feature, bool); 2] {
        [
            (Feature::DnsLearning, self.fqdn_learning),
            (Feature::Identity, self.identity_error.is_none()),
        ]
    }

    /// What the verifier spent on each program at load.
    pub fn load_report(&self) -> &LoadReport {
        &self.load_report
    }

    /// The targets' listening ports (their `--web.listen-address` and
    /// `--cluster.listen-address`), which the API guard watches when the policy's `api:`
    /// section names no ports. Takes effect with the next [`Kernel::install`].
    pub fn set_api_listen_ports(&mut self, ports: &api::ListenPorts) {
        let sorted = |p: &[u16]| {
            let mut p = p.to_vec();
            p.sort_unstable();
            p.dedup();
            p
        };
        self.api_listen = api::ListenPorts {
            web: sorted(&ports.web),
            cluster: ports.cluster.as_deref().map(sorted),
        };
    }

    /// Each target's own literal `--cluster.peer` addresses, let in on its cluster port.
    pub fn set_api_cluster_peers(
        &mut self,
        keys: &[enforcer_common::api::ClusterPeerKey],
    ) -> Result<(), KernelError> {
        api::set_cluster_peers(&mut self.ebpf, keys)
    }

    /// Takes the watchdog's socket marks out of the object (once).
    pub fn take_watchdog_marks(&mut self) -> Result<api::WatchdogMarks, KernelError> {
        api::WatchdogMarks::take(&mut self.ebpf)
    }

    /// Scope mode: the cgroup ids of the target Alertmanager processes, whose sockets the API
    /// guard decides.
    pub fn set_api_cgroups(&mut self, ids: &[u64]) -> Result<(), KernelError> {
        api::set_cgroups(&mut self.ebpf, ids)
    }

    /// Totals of the API guard's counters.
    pub fn api_counters(&self) -> Result<api::ApiCounters, KernelError> {
        api::counters(&self.ebpf)
    }

    /// Takes the API guard's event ring out of the object (once).
    pub fn take_api_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        api::take_events(&mut self.ebpf)
    }

    /// With pins: removes the pins of every earlier layout under the bpffs directory (see
    /// [`layouts::take_over`]). Call once this layout's programs are attached to every target:
    /// until then the earlier programs go on enforcing beside them.
    pub fn take_over(&self) -> Result<Vec<layouts::Replaced>, KernelError> {
        match &self.pins {
            Some(p) => layouts::take_over(p),
            None => Ok(Vec::new()),
        }
    }

    /// True when the maps came from an earlier agent's pins.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The programs attached to every target, in the order they are attached: DNS learning
    /// first (no connect is decided while answers go unlearned) and the API guard when the
    /// installed policy needs them ([`Ingress`]), the socket guards and the packet-layer
    /// backstop ([`SOCKET_PROGRAMS`]), then the four connect/sendmsg programs.
    fn cgroup_programs(&self) -> Vec<&'static str> {
        let mut names = self.ingress.programs();
        names.extend(SOCKET_PROGRAMS);
        names.extend(PROGRAMS);
        names
    }

    /// Attaches the programs to `cgroup` with bpf_links (see [`progs::attach_cgroup`]).
    ///
    /// Without pinning the links live as long as this value. With pinning they are pinned as
    /// [`LinkPins`] describes: the new set first, then the older pins of the cgroup go.
    pub fn attach(&mut self, cgroup: &Cgroup) -> Result<(), KernelError> {
        let id = cgroup.id();
        let mut link_pins = match &self.pins {
            Some(p) => Some(LinkPins::new(p.target_links(id))?),
            None => None,
        };
        let mut held = Vec::new();
        for name in self.cgroup_programs() {
            if let Some(link) =
                progs::attach_cgroup(&mut self.ebpf, name, cgroup, link_pins.as_mut())?
            {
                held.push((name, link));
            }
        }
        match link_pins {
            Some(pins) => pins.remove_older()?,
            // The earlier set of this cgroup (dropped: detached) after the new one is attached.
            None => drop(self.links.insert(id, held)),
        }
        let dir = cgroup.dir.try_clone().map_err(|source| KernelError::Io {
            path: cgroup.path.clone(),
            source,
        })?;
        self.cgroups.insert(
            id,
            Cgroup {
                path: cgroup.path.clone(),
                dir,
            },
        );
        Ok(())
    }

    /// Attaches `names` (ingress programs the next policy needs) to every cgroup the others are
    /// attached to, next to what is there (pinned with a fresh name: nothing older is removed).
    fn attach_more(&mut self, names: &[&'static str]) -> Result<(), KernelError> {
        if names.is_empty() {
            return Ok(());
        }
        for (&id, cgroup) in &self.cgroups {
            let mut link_pins = match &self.pins {
                Some(p) => Some(LinkPins::new(p.target_links(id))?),
                None => None,
            };
            for &name in names {
                if let Some(link) =
                    progs::attach_cgroup(&mut self.ebpf, name, cgroup, link_pins.as_mut())?
                {
                    self.links.entry(id).or_default().push((name, link));
                }
                tracing::info!(program = name, cgroup = %cgroup.path.display(), "attached: the policy needs it");
            }
        }
        Ok(())
    }

    /// Detaches `names` (ingress programs the installed policy no longer needs) from every
    /// cgroup, pinned links included.
    fn detach_some(&mut self, names: &[&'static str]) -> Result<(), KernelError> {
        if names.is_empty() {
            return Ok(());
        }
        for (&id, cgroup) in &self.cgroups {
            if let Some(p) = &self.pins {
                for &name in names {
                    pin::remove_program_pins(&p.target_links(id), name)?;
                }
            }
            if let Some(held) = self.links.get_mut(&id) {
                held.retain(|(name, _)| !names.contains(name));
            }
            for &name in names {
                tracing::info!(program = name, cgroup = %cgroup.path.display(), "detached: the policy no longer needs it");
            }
        }
        Ok(())
    }

    /// Detaches the programs from the cgroup with inode `cgroup_id` (and removes its pins).
    pub fn detach(&mut self, cgroup_id: u64) -> Result<(), KernelError> {
        if let Some(p) = &self.pins {
            let dir = p.target_links(cgroup_id);
            if dir.exists() {
                pin::remove_dir_pins(&dir)?;
                std::fs::remove_dir(&dir).map_err(|source| KernelError::Io {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        // Dropping the links detaches them.
        self.links.remove(&cgroup_id);
        self.cgroups.remove(&cgroup_id);
        Ok(())
    }

    /// Installs `compiled` without a moment where programs see a partial policy: the rule set
    /// the programs do not read is cleared and filled, then `ACTIVE` is flipped to it.
    /// (The first install fills set 0 before anything is attached.)
    ///
    /// An ingress program the new policy needs (DNS learning for `fqdn` rules, the API guard
    /// for an `api:` section) is attached before anything of the policy is written; one it no
    /// longer needs is detached after the flip (and the wait for readers).
    pub fn install(&mut self, compiled: &Compiled, generation: u32) -> Result<(), KernelError> {
        let want = Ingress {
            learning: self.fqdn_learning && compiled.fqdn.has_names(),
            api: compiled.api.is_some(),
        };
        let both = want.or(self.ingress);
        self.attach_more(&both.minus(self.ingress))?;
        self.ingress = both;
        let target = if self.installed {
            (self.active + 1) % ACTIVE_SETS
        } else {
            self.active
        };
        let scoped = u32::from(self.scoped);
        let t = target as usize;
        rules::write(&mut self.ebpf, compiled, t)?;
        {
            let name = map_names::V4_FILTER;
            let mut filter: Array<&mut MapData, V4Filter> =
                Array::try_from(self.map(name)?).map_err(map_err(name))?;
            filter
                .set(target, compiled.v4_filter.words(), 0)
                .map_err(map_err(name))?;
        }
        {
            let name = map_names::CONFIG;
            let mut config: Array<&mut MapData, Config> =
                Array::try_from(self.map(name)?).map_err(map_err(name))?;
            let value = Config {
                mode: compiled.mode,
                default_verdict: compiled.default_verdict,
                generation,
                scoped,
            };
            config.set(target, value, 0).map_err(map_err(name))?;
        }
        fqdn::install(&mut self.ebpf, &compiled.fqdn, target, self.scoped)?;
        api::install(
            &mut self.ebpf,
            compiled.api.as_ref(),
            &self.api_listen,
            generation,
            target,
        )?;
        {
            let name = map_names::ACTIVE;
            let mut active: Array<&mut MapData, u32> =
                Array::try_from(self.map(name)?).map_err(map_err(name))?;
            active.set(0, target, 0).map_err(map_err(name))?;
        }
        let flipped = self.installed;
        self.active = target;
        self.installed = true;
        if flipped {
            wait_for_readers();
            // The rule set no program reads any more gives its kernel memory back now, not
            // at the next reload (a large policy reloaded over itself would hold two copies).
            // The new policy is in force either way: a failure here is not the install's.
            if let Err(e) = rules::clear(&mut self.ebpf, (t + 1) % ACTIVE_SETS as usize) {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    "emptying the rule set no longer read (it is rewritten at the next reload)"
                );
            }
        }
        self.detach_some(&both.minus(want))?;
        self.ingress = want;
        Ok(())
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, KernelError> {
        let name = map_names::COUNTERS;
        let map = self
            .ebpf
            .map(name)
            .ok_or(KernelError::MissingMap { name })?;
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err(name))?;
        let total = |i: u32| -> Result<u64, KernelError> {
            Ok(counters.get(&i, 0).map_err(map_err(name))?.iter().sum())
        };
        let mut out = Counters::default();
        for h in 0..hook::COUNT as u8 {
            let i = h as usize;
            out.allowed[i] = total(counter::index(counter::ALLOWED, h))?;
            out.denied[i] = total(counter::index(counter::DENIED, h))?;
            out.would_deny[i] = total(counter::index(counter::WOULD_DENY, h))?;
        }
        out.lost_events = total(counter::LOST_EVENTS)?;
        Ok(out)
    }

    /// Takes the event ring buffer out of the object (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let name = map_names::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(KernelError::MissingMap { name })?;
        RingBuf::try_from(map).map_err(map_err(name))
    }

    /// The loaded object (the FQDN agent takes its maps out of it).
    pub fn object_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, KernelError> {
        self.ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap { name })
    }
}

/// The ingress programs a policy needs; neither runs on a packet when its policy has no use
/// for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ingress {
    /// DNS learning (`fqdn` rules, and the program loaded on this kernel).
    learning: bool,
    /// The API guard (an `api:` section).
    api: bool,
}

impl Ingress {
    fn programs(self) -> Vec<&'static str> {
        let mut names = Vec::with_capacity(3);
        if self.learning {
            // The query recorder first: no answer arrives while its query goes unrecorded.
            names.extend([fqdn_names::PROG_DNS_EGRESS, fqdn_names::PROG_DNS_INGRESS]);
        }
        if self.api {
            names.extend([
                enforcer_common::api::PROG_NAME,
                enforcer_common::api::CLUSTER_PROG_NAME,
                enforcer_common::api::CLUSTER_UDP_PROG_NAME,
                enforcer_common::api::STREAM_PROG_NAME,
            ]);
        }
        names
    }

    fn or(self, other: Self) -> Self {
        Self {
            learning: self.learning || other.learning,
            api: self.api || other.api,
        }
    }

    /// The programs of `self` that `other` lacks.
    fn minus(self, other: Self) -> Vec<&'static str> {
        let theirs = other.programs();
        self.programs()
            .into_iter()
            .filter(|n| !theirs.contains(n))
            .collect()
    }
}

/// Returns once no program can still be reading the rule set that was active before a flip, so
/// the next install may rewrite it. The programs run inside RCU read-side sections;
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for an RCU grace period (synchronize_rcu) on
/// multi-CPU machines. On one CPU (where the kernel skips that wait) and when membarrier is
/// unavailable, a pause far longer than a program run stands in.
fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integer arguments and touches no user memory.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) };
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if r != 0 || cpus <= 1 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
