//! Kernel-held target identity, the agent's side (scope mode): loads and attaches the `sched`
//! tracepoint programs that keep `TARGET_TASKS` and its byte-per-tgid mirror `TARGET_TGIDS`
//! (see `enforcer_common::identity`), writes the target names and cgroups they match, and
//! marks the processes that ran before them (found by the agent, `agent::targets::scan_tasks`).
use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError},
    programs::{TracePoint, links::FdLink, trace_point::TracePointLinkId},
};
use enforcer_common::{
    AutoKey,
    identity::{
        ExeName, TGID_BLOCK, exe_name_key, fields, map_names, prog_names, tgid_blocks, why,
    },
};

use super::{
    KernelError, map_err,
    pin::{LinkPins, Pins},
    set_entries,
};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Loads the tracepoint programs (verifier included); pins them for inspection.
pub fn load(
    ebpf: &mut Ebpf,
    pins: Option<&Pins>,
    report: &mut super::verifier::LoadReport,
) -> Result<(), KernelError> {
    for (name, _, _) in prog_names::ALL {
        super::progs::load(ebpf, name, pins, report)?;
    }
    Ok(())
}

/// Attaches the tracepoint programs (in the order of `prog_names::ALL`). With `pins` the links are pinned under
/// `links/tracepoints/` (the new set first, then the older pins go, as for cgroups); without,
/// their ids are returned and they live as long as the object.
pub fn attach(ebpf: &mut Ebpf, pins: Option<&Pins>) -> Result<Vec<TracePointLinkId>, KernelError> {
    let mut link_pins = match pins {
        Some(p) => Some(LinkPins::new(p.links_dir().join("tracepoints"))?),
        None => None,
    };
    let mut held = Vec::new();
    for (name, category, tracepoint) in prog_names::ALL {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram { name })?
            .try_into()
            .map_err(|source| KernelError::Program { name, source })?;
        let link_id = prog
            .attach(category, tracepoint)
            .map_err(|source| KernelError::Attach {
                name,
                cgroup: format!("tracepoint {category}/{tracepoint}"),
                source,
            })?;
        let Some(pins) = &mut link_pins else {
            held.push(link_id);
            continue;
        };
        let link = prog
            .take_link(link_id)
            .map_err(|source| KernelError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|source| KernelError::Link {
            name,
            cgroup: format!("tracepoint {category}/{tracepoint}"),
            source,
        })?;
        pins.pin(name, link)?;
    }
    if let Some(pins) = link_pins {
        pins.remove_older()?;
    }
    Ok(held)
}

/// The tracefs mount (aya reads tracepoint ids from it): `/sys/kernel/tracing`, mounted there
/// when nothing is (systemd mounts it at boot; minimal systems and containers may not).
fn ensure_tracefs() -> Result<PathBuf, KernelError> {
    let path = PathBuf::from(TRACEFS);
    let populated = |p: &Path| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
    if populated(&path) {
        return Ok(path);
    }
    let debug = PathBuf::from("/sys/kernel/debug/tracing");
    if populated(&debug) {
        return Ok(debug);
    }
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(KernelError::Tracefs {
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(path)
}

/// The offsets of the fields the programs read, by global name, from the tracepoints'
/// `format` files (mounting tracefs when needed).
pub fn field_offsets() -> Result<Vec<(&'static str, u32)>, KernelError> {
    let tracefs = ensure_tracefs()?;
    let mut out = Vec::new();
    for (global, category, tracepoint, field) in fields::ALL {
        let path = tracefs
            .join("events")
            .join(category)
            .join(tracepoint)
            .join("format");
        let text =
            std::fs::read_to_string(&path).map_err(|source| KernelError::TracepointFormat {
                path: path.clone(),
                reason: source.to_string(),
            })?;
        let Some(offset) = field_offset(&text, field) else {
            return Err(KernelError::TracepointFormat {
                path,
                reason: format!("no field {field}"),
            });
        };
        out.push((global, offset as u32));
    }
    Ok(out)
}

/// The offset of `field` in a tracepoint `format` file.
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = l.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// Writes the executable names of `process:` targets and the ids of target cgroups (new
/// entries before stale ones go).
pub fn set_targets(
    ebpf: &mut Ebpf,
    names: &[String],
    cgroup_ids: &[u64],
) -> Result<(), KernelError> {
    let name = map_names::TARGET_NAMES;
    let mut map: HashMap<&mut MapData, ExeName, u32> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?)
            .map_err(map_err(name))?;
    let want: Vec<(ExeName, u32)> = names
        .iter()
        .map(|n| (exe_name_key(n.as_bytes()), 1))
        .collect();
    set_entries(&mut map, name, &want)?;
    let name = map_names::TARGET_CGROUPS;
    let mut map: HashMap<&mut MapData, u64, u32> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?)
            .map_err(map_err(name))?;
    let want: Vec<(u64, u32)> = cgroup_ids.iter().map(|&id| (id, 1)).collect();
    set_entries(&mut map, name, &want)
}

/// Entries of `TARGET_TGIDS` for this system: every pid below `/proc/sys/kernel/pid_max` has
/// a byte (a tgid beyond, after `pid_max` is raised, is looked up in `TARGET_TASKS`).
pub fn tgid_map_entries() -> u32 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    tgid_blocks(pid_max)
}

/// `TARGET_TGIDS` mapped into this process (`BPF_F_MMAPABLE`): the bytes by tgid, read and
/// written one byte at a time. A whole-value map update would write back the 63 neighbours
/// of a tgid as this process read them, losing what the tracepoints wrote meanwhile; a byte
/// store through the mapping changes that byte only. Unmapped on drop.
pub struct TgidBytes {
    ptr: *mut u8,
    /// Bytes mapped (whole pages).
    mapped: usize,
    /// Bytes of the map's values: one per tgid below it.
    len: usize,
}

impl TgidBytes {
    /// Maps `TARGET_TGIDS` of `map` (its real size, read from the kernel: a pinned map keeps the
    /// size it was created with). `write`: read-write, else read-only.
    pub fn map(map: &MapData, write: bool) -> Result<Self, KernelError> {
        let name = map_names::TARGET_TGIDS;
        let info = map.info().map_err(map_err(name))?;
        let io = |source| KernelError::Io {
            path: PathBuf::from(format!("mmap of map {name}")),
            source,
        };
        if info.value_size() as usize != TGID_BLOCK
            || info.map_flags() & enforcer_common::identity::BPF_F_MMAPABLE == 0
        {
            return Err(io(std::io::Error::other(format!(
                "value size {}, flags {:#x}: not a mmapable array of {TGID_BLOCK}-byte blocks",
                info.value_size(),
                info.map_flags()
            ))));
        }
        let len = info.max_entries() as usize * TGID_BLOCK;
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mapped = len.div_ceil(page) * page;
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        use std::os::fd::AsRawFd as _;
        // SAFETY: maps the map's value area (offset 0 of a BPF_F_MMAPABLE array) shared; the
        // kernel checks the length against the map and the protection against the fd.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                prot,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(Self {
            ptr: ptr.cast(),
            mapped,
            len,
        })
    }

    /// `tgid`'s byte: `Some(marked)`, or `None` beyond the array.
    pub fn get(&self, tgid: u32) -> Option<bool> {
        let i = tgid as usize;
        // SAFETY: `i` is within the mapping; a byte load (the kernel may store it concurrently,
        // a byte is never torn).
        (i < self.len).then(|| unsafe { std::ptr::read_volatile(self.ptr.add(i)) } != 0)
    }

    /// Stores `tgid`'s byte; false beyond the array (only `TARGET_TASKS` holds it there).
    fn set(&self, tgid: u32, marked: bool) -> bool {
        let i = tgid as usize;
        if i >= self.len {
            return false;
        }
        // SAFETY: `i` is within the mapping, mapped writable by `add_tasks`; one byte store.
        unsafe { std::ptr::write_volatile(self.ptr.add(i), u8::from(marked)) };
        true
    }

    /// The tgids whose byte is set.
    pub fn marked(&self) -> Vec<u32> {
        (0..self.len as u32)
            .filter(|&t| self.get(t) == Some(true))
            .collect()
    }
}

impl Drop for TgidBytes {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made.
        unsafe { libc::munmap(self.ptr.cast(), self.mapped) };
    }
}

fn tgid_bytes(ebpf: &Ebpf, write: bool) -> Result<TgidBytes, KernelError> {
    let name = map_names::TARGET_TGIDS;
    match ebpf.map(name) {
        Some(Map::Array(data)) => TgidBytes::map(data, write),
        Some(_) => Err(KernelError::Io {
            path: PathBuf::from(format!("map {name}")),
            source: std::io::Error::other("not an array map"),
        }),
        None => Err(KernelError::MissingMap { name }),
    }
}

/// `bpf_map_update_elem` flags (uapi `BPF_NOEXIST`, `BPF_EXIST`): create only, update only.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Marks `tgids` as targets found by a scan (keeping what the kernel already knew of them):
/// the `TARGET_TASKS` entry, then the byte the programs read.
pub fn add_tasks(ebpf: &mut Ebpf, tgids: &[u32]) -> Result<(), KernelError> {
    let bytes = tgid_bytes(ebpf, true)?;
    let name = map_names::TARGET_TASKS;
    let mut map: HashMap<&mut MapData, u32, u32> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?)
            .map_err(map_err(name))?;
    for &tgid in tgids {
        let old = map.get(&tgid, 0).ok();
        // The exit mark (`why::EXITED`) is kept: an entry holds it only for a task that has
        // exited (a task forked onto the PID since gets a fresh entry from the fork
        // tracepoint), so a process that exited after the scan read `/proc` — or a zombie
        // the scan still saw — is removed by the free tracepoint as it should be. Clearing it
        // here left such an entry (and its byte) behind for good (seen in the 6.12 VM: the
        // `identity` test's scanned target killed while a scan was writing).
        //
        // The free tracepoint may delete the entry (then clear the byte) at any moment in
        // between: an entry read here is only updated if it still exists, one not read only
        // created if no tracepoint wrote it since, and the byte is cleared again when the
        // entry is gone once it is set — so the scan never brings back the entry or the byte
        // of a task that was freed meanwhile (the two maps disagreed after such a race).
        let (bits, flags) = match old {
            Some(old) => (old | why::SCANNED, BPF_EXIST),
            None => (why::SCANNED, BPF_NOEXIST),
        };
        match map.insert(tgid, bits, flags) {
            Ok(()) => {}
            // Freed (ENOENT) or written by a tracepoint (EEXIST) since the read: the kernel's
            // writer owns the entry and its byte.
            Err(MapError::SyscallError(e))
                if matches!(e.io_error.raw_os_error(), Some(libc::ENOENT | libc::EEXIST)) =>
            {
                continue;
            }
            // The full hash refused it: the byte alone, which the programs read.
            Err(e) => {
                if !bytes.set(tgid, true) {
                    return Err(map_err(name)(e));
                }
                continue;
            }
        }
        if bytes.set(tgid, true) && matches!(map.get(&tgid, 0), Err(MapError::KeyNotFound)) {
            bytes.set(tgid, false);
        }
    }
    Ok(())
}

/// The pinned identity maps of an agent (for inspection and tests): the keys of
/// `TARGET_TASKS` and the tgids marked in `TARGET_TGIDS`, each sorted.
pub fn pinned_targets(pins: &super::pin::Pins) -> Result<(Vec<u32>, Vec<u32>), KernelError> {
    let open = |name: &'static str| MapData::from_pin(pins.map(name)).map_err(map_err(name));
    let name = map_names::TARGET_TASKS;
    let tasks = Map::HashMap(open(name)?);
    let tasks: HashMap<&MapData, u32, u32> = HashMap::try_from(&tasks).map_err(map_err(name))?;
    let mut keys: Vec<u32> = tasks.keys().filter_map(Result::ok).collect();
    keys.sort_unstable();
    let bytes = TgidBytes::map(&open(map_names::TARGET_TGIDS)?, false)?;
    Ok((keys, bytes.marked()))
}

/// The pinned `TARGET_TASKS` entry of task `tid` (its [`why`] bits), if it has one (for
/// inspection and tests).
pub fn pinned_task(pins: &super::pin::Pins, tid: u32) -> Result<Option<u32>, KernelError> {
    let name = map_names::TARGET_TASKS;
    let tasks = Map::HashMap(MapData::from_pin(pins.map(name)).map_err(map_err(name))?);
    let tasks: HashMap<&MapData, u32, u32> = HashMap::try_from(&tasks).map_err(map_err(name))?;
    Ok(tasks.get(&tid, 0).ok())
}

/// The keys of `TARGET_TASKS`: target processes (tgids) and their threads' tids.
pub fn target_tasks(ebpf: &Ebpf) -> Result<Vec<u32>, KernelError> {
    let name = map_names::TARGET_TASKS;
    let map: HashMap<&MapData, u32, u32> =
        HashMap::try_from(ebpf.map(name).ok_or(KernelError::MissingMap { name })?)
            .map_err(map_err(name))?;
    Ok(map.keys().filter_map(Result::ok).collect())
}

/// Makes `AUTO_ALLOW` hold exactly `wanted` (new entries first, then stale ones go), and
/// `AUTO_PORTS` name exactly their ports: a port's bit is set before its first entry is
/// written and cleared after its last entry is gone, so the programs (which skip the lookup
/// for a port whose bit is clear) never miss an entry. An entry the full map refuses is
/// skipped and returned; the others are still written.
pub fn set_auto_rules(
    ebpf: &mut Ebpf,
    wanted: &[(AutoKey, u32)],
) -> Result<Vec<AutoKey>, KernelError> {
    let name = enforcer_common::map_names::AUTO_ALLOW;
    let present: Vec<AutoKey> = {
        let map: HashMap<&MapData, AutoKey, u32> =
            HashMap::try_from(ebpf.map(name).ok_or(KernelError::MissingMap { name })?)
                .map_err(map_err(name))?;
        map.keys().filter_map(Result::ok).collect()
    };
    let before = PortBits::of(present.iter());
    let after = PortBits::of(wanted.iter().map(|(k, _)| k));
    let both = before.union(&after);
    write_port_bits(ebpf, &before, &both)?;
    let mut map: HashMap<&mut MapData, AutoKey, u32> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?)
            .map_err(map_err(name))?;
    let mut refused = Vec::new();
    for (key, value) in wanted {
        if map.insert(key, value, 0).is_err() {
            refused.push(*key);
        }
    }
    for key in present
        .iter()
        .filter(|k| !wanted.iter().any(|(w, _)| w == *k))
    {
        map.remove(key).map_err(map_err(name))?;
    }
    write_port_bits(ebpf, &both, &after)?;
    Ok(refused)
}

/// The ports a set of automatic rules names, as `AUTO_PORTS` holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortBits(Vec<u64>);

impl PortBits {
    pub(crate) fn of<'a>(keys: impl Iterator<Item = &'a AutoKey>) -> Self {
        let mut words = vec![0u64; enforcer_common::AUTO_PORT_WORDS as usize];
        for key in keys {
            let (word, bit) = enforcer_common::auto_port_pos(key.port);
            words[word as usize] |= bit;
        }
        Self(words)
    }

    fn union(&self, other: &Self) -> Self {
        Self(self.0.iter().zip(&other.0).map(|(a, b)| a | b).collect())
    }

    /// The words that differ from `from`: (index, new word).
    pub(crate) fn changes_from<'a>(
        &'a self,
        from: &'a Self,
    ) -> impl Iterator<Item = (u32, u64)> + 'a {
        (0u32..)
            .zip(self.0.iter().zip(&from.0))
            .filter(|(_, (new, old))| new != old)
            .map(|(i, (new, _))| (i, *new))
    }
}

/// Writes the words of `AUTO_PORTS` that `to` changes relative to `from` (what it holds).
fn write_port_bits(ebpf: &mut Ebpf, from: &PortBits, to: &PortBits) -> Result<(), KernelError> {
    let name = enforcer_common::map_names::AUTO_PORTS;
    let mut ports: Array<&mut MapData, u64> =
        Array::try_from(ebpf.map_mut(name).ok_or(KernelError::MissingMap { name })?)
            .map_err(map_err(name))?;
    for (index, word) in to.changes_from(from) {
        ports.set(index, word, 0).map_err(map_err(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits_change_only_the_words_of_ports_added_or_gone() {
        let key = |port| AutoKey {
            port,
            ..AutoKey::default()
        };
        let old = [key(53), key(9094)];
        let new = [key(53), key(53), key(8053)];
        let before = PortBits::of(old.iter());
        let after = PortBits::of(new.iter());
        let both = before.union(&after);
        // Set first: 8053's word only (53's bit is there, 9094 stays until its entry is gone).
        let (w8053, b8053) = enforcer_common::auto_port_pos(8053);
        let (w9094, _) = enforcer_common::auto_port_pos(9094);
        let (w53, b53) = enforcer_common::auto_port_pos(53);
        assert_eq!(
            both.changes_from(&before).collect::<Vec<_>>(),
            [(w8053, b8053)]
        );
        // Then cleared: 9094's word, which holds no other port now.
        assert_eq!(after.changes_from(&both).collect::<Vec<_>>(), [(w9094, 0)]);
        assert_eq!(after.0[w53 as usize], b53);
        assert_eq!(PortBits::of([].iter()).changes_from(&after).count(), 2);
    }

    #[test]
    fn tracepoint_formats_give_field_offsets() {
        let format = "name: sched_process_fork\nID: 315\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(format, "child_pid"), Some(44));
        assert_eq!(field_offset(format, "parent_comm"), Some(8));
        assert_eq!(field_offset(format, "pid"), None);
        let exec = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(field_offset(exec, "filename"), Some(8));
    }
}
