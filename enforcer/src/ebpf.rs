//! The kernel side as the agent sees it: load the embedded object, attach the four programs to a
//! cgroup, install compiled policies (double-buffered), read counters, hand out the event ring.
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError},
};
use enforcer_common::{
    ACTIVE_SETS, Config, LpmValue, V4_KEY_LEN, V6_KEY_LEN, counter, hook, map_names, prog_names,
};

use crate::{cgroup::Cgroup, compile::Compiled};

/// The kernel object built by build.rs (aya-build) from `enforcer-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

const PROGRAMS: [&str; 4] = [
    prog_names::CONNECT4,
    prog_names::CONNECT6,
    prog_names::SENDMSG4,
    prog_names::SENDMSG6,
];

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("this agent was built with AYA_BUILD_SKIP=1 and carries no kernel programs")]
    NoObject,
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {name} to {cgroup}")]
    Attach {
        name: &'static str,
        cgroup: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

/// Totals of the per-CPU verdict counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub allowed: [u64; hook::COUNT],
    pub denied: [u64; hook::COUNT],
    pub would_deny: [u64; hook::COUNT],
    pub lost_events: u64,
}

/// The loaded programs and their maps.
pub struct Enforcer {
    ebpf: Ebpf,
    /// Rule set the programs read now.
    active: u32,
    /// True once a policy has been installed (set `active` is live).
    installed: bool,
}

impl Enforcer {
    /// Loads the programs into the kernel (verifier included); nothing is attached yet.
    pub fn load() -> Result<Self, EbpfError> {
        if OBJECT.is_empty() {
            return Err(EbpfError::NoObject);
        }
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(EbpfError::Load)?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(EbpfError::MissingProgram { name })?
                .try_into()
                .map_err(|source| EbpfError::Program { name, source })?;
            prog.load()
                .map_err(|source| EbpfError::Program { name, source })?;
        }
        crate::fqdn::kernel::load(&mut ebpf)?;
        Ok(Self {
            ebpf,
            active: 0,
            installed: false,
        })
    }

    /// Attaches all four programs to `cgroup` with bpf_links (kernel >= 5.7). Link attachments
    /// always coexist with other programs of the cgroup (any of them denying makes the call
    /// fail); the kernel rejects attach flags on links, hence `CgroupAttachMode::Single`, which
    /// aya passes as 0. The links live as long as this value.
    pub fn attach(&mut self, cgroup: &Cgroup) -> Result<(), EbpfError> {
        // DNS learning first: no connect is decided while answers go unlearned.
        crate::fqdn::kernel::attach(&mut self.ebpf, cgroup)?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(EbpfError::MissingProgram { name })?
                .try_into()
                .map_err(|source| EbpfError::Program { name, source })?;
            prog.attach(&cgroup.dir, CgroupAttachMode::Single)
                .map_err(|source| EbpfError::Attach {
                    name,
                    cgroup: cgroup.path.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Installs `compiled` without a moment where programs see a partial policy: the rule set
    /// the programs do not read is cleared and filled, then `ACTIVE` is flipped to it.
    /// (The first install fills set 0 before anything is attached.)
    pub fn install(&mut self, compiled: &Compiled, generation: u32) -> Result<(), EbpfError> {
        let target = if self.installed {
            (self.active + 1) % ACTIVE_SETS
        } else {
            self.active
        };
        let t = target as usize;
        {
            let name = map_names::V4_RULES[t];
            let mut v4: LpmTrie<&mut MapData, [u8; V4_KEY_LEN], LpmValue> =
                LpmTrie::try_from(self.map(name)?).map_err(map_err(name))?;
            clear_trie(&mut v4).map_err(map_err(name))?;
            for (net, value) in &compiled.v4 {
                let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
                v4.insert(&key, value, 0).map_err(map_err(name))?;
            }
        }
        {
            let name = map_names::V6_RULES[t];
            let mut v6: LpmTrie<&mut MapData, [u8; V6_KEY_LEN], LpmValue> =
                LpmTrie::try_from(self.map(name)?).map_err(map_err(name))?;
            clear_trie(&mut v6).map_err(map_err(name))?;
            for (net, value) in &compiled.v6 {
                let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
                v6.insert(&key, value, 0).map_err(map_err(name))?;
            }
        }
        {
            let name = map_names::CONFIG;
            let mut config: Array<&mut MapData, Config> =
                Array::try_from(self.map(name)?).map_err(map_err(name))?;
            let value = Config {
                mode: compiled.mode,
                default_verdict: compiled.default_verdict,
                generation,
                _pad: 0,
            };
            config.set(target, value, 0).map_err(map_err(name))?;
        }
        crate::fqdn::kernel::install(&mut self.ebpf, &compiled.fqdn, target)?;
        {
            let name = map_names::ACTIVE;
            let mut active: Array<&mut MapData, u32> =
                Array::try_from(self.map(name)?).map_err(map_err(name))?;
            active.set(0, target, 0).map_err(map_err(name))?;
        }
        self.active = target;
        self.installed = true;
        Ok(())
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, EbpfError> {
        let name = map_names::COUNTERS;
        let map = self.ebpf.map(name).ok_or(EbpfError::MissingMap { name })?;
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err(name))?;
        let total = |i: u32| -> Result<u64, EbpfError> {
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
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, EbpfError> {
        let name = map_names::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(EbpfError::MissingMap { name })?;
        RingBuf::try_from(map).map_err(map_err(name))
    }

    /// The loaded object (the FQDN agent takes its maps out of it).
    pub fn object_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, EbpfError> {
        self.ebpf
            .map_mut(name)
            .ok_or(EbpfError::MissingMap { name })
    }
}

/// Removes every key of an LPM trie (keys are collected first: deleting while walking with
/// get_next_key restarts the walk).
fn clear_trie<const N: usize>(
    trie: &mut LpmTrie<&mut MapData, [u8; N], LpmValue>,
) -> Result<(), MapError> {
    let keys = trie.keys().collect::<Result<Vec<_>, _>>()?;
    for key in keys {
        trie.remove(&key)?;
    }
    Ok(())
}
