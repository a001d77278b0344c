//! Every pin layout under a bpffs directory, not only this release's: the agents' lock, the
//! hand-over from another layout (an upgrade), the refusal of a newer one (a downgrade), and
//! what `enforcer status` and `enforcer detach` see.
//!
//! An earlier release's pins are found by their path alone (`<root>/v<N>/links/...`,
//! `progs/<program>`, `maps/<MAP>`), whatever `N` is, so a release takes over from any layout
//! before it without a list of old versions; a link pin's name is `<program>-<pid>-<n>` in
//! every layout so far.
use std::{
    collections::BTreeMap,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, MapType, PerCpuArray, PerCpuValues, RingBuf};
use enforcer_common::PIN_LAYOUT_VERSION;

use super::{error::KernelError, pin::Pins};

/// At most this many queued events of a replaced layout are read out (and reported).
pub const DRAIN_CAP: usize = 4096;

fn io(path: &Path) -> impl Fn(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The pinned state of one layout: `<root>/v<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub version: u32,
    pub dir: PathBuf,
}

/// The layouts pinned under `root` (directories `v<N>`), oldest first; none when `root` is
/// missing.
pub fn find(root: &Path) -> Result<Vec<Layout>, KernelError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(root)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_prefix('v'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if entry.file_type().map_err(io(root))?.is_dir() {
            out.push(Layout {
                version,
                dir: entry.path(),
            });
        }
    }
    out.sort_by_key(|l| l.version);
    Ok(out)
}

/// The program a link pin `<program>-<pid>-<n>` belongs to.
pub fn link_program(pin_name: &str) -> &str {
    let mut parts = pin_name.rsplitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(program)) => program,
        _ => pin_name,
    }
}

/// What one layout has pinned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Map pins (`maps/`).
    pub maps: Vec<String>,
    /// Program pins (`progs/`).
    pub programs: Vec<String>,
    /// Link pins by the directory under `links/` that holds them (`cg-<cgroup id>`,
    /// `tracepoints`): the programs they attach, sorted.
    pub links: BTreeMap<String, Vec<String>>,
}

impl Inventory {
    /// Reads the pins of `layout`.
    pub fn read(layout: &Layout) -> Result<Self, KernelError> {
        let names = |dir: &Path| -> Result<Vec<String>, KernelError> {
            let mut names = Vec::new();
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    for e in entries {
                        let e = e.map_err(io(dir))?;
                        names.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(dir)(e)),
            }
            names.sort();
            Ok(names)
        };
        let mut links = BTreeMap::new();
        let links_dir = layout.dir.join("links");
        for target in names(&links_dir)? {
            let mut programs: Vec<String> = names(&links_dir.join(&target))?
                .iter()
                .map(|n| link_program(n).to_owned())
                .collect();
            programs.sort();
            links.insert(target, programs);
        }
        Ok(Self {
            maps: names(&layout.dir.join("maps"))?,
            programs: names(&layout.dir.join("progs"))?,
            links,
        })
    }

    /// The cgroup ids the layout's links attach to (`cg-<id>` directories).
    pub fn cgroup_ids(&self) -> Vec<u64> {
        self.links
            .keys()
            .filter_map(|k| k.strip_prefix("cg-")?.parse().ok())
            .collect()
    }

    /// Number of link pins.
    pub fn link_count(&self) -> usize {
        self.links.values().map(Vec::len).sum()
    }
}

/// The path of the cgroup with inode `id` under the cgroup v2 mount, if it still exists
/// (a bounded walk: for logs and `enforcer status`, not for decisions).
pub fn cgroup_path(id: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let root = crate::cgroup::cgroup2_mount().ok()?;
    let mut stack = vec![root];
    let mut visited = 0usize;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > 100_000 {
            return None;
        }
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            return Some(dir);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    None
}

/// Fails when a layout newer than this release's is pinned under `root`: an older agent never
/// runs beside, or over, a newer release's programs (a downgrade is `enforcer detach`, then
/// the older release).
pub fn refuse_newer(root: &Path) -> Result<(), KernelError> {
    if let Some(newer) = find(root)?
        .into_iter()
        .filter(|l| l.version > PIN_LAYOUT_VERSION)
        .max_by_key(|l| l.version)
    {
        return Err(KernelError::NewerLayout {
            dir: newer.dir,
            found: newer.version,
            ours: PIN_LAYOUT_VERSION,
        });
    }
    Ok(())
}

/// Unlinks every pin under `dir` (recursively), then the directories, `dir` included; the pins
/// under `links/` go first, which detaches the programs before their maps are unpinned.
/// Returns the number of link pins removed.
pub fn remove(dir: &Path) -> Result<usize, KernelError> {
    let links = remove_tree(&dir.join("links"))?;
    remove_tree(dir)?;
    Ok(links)
}

/// Unlinks the files under `dir`, then its directories (missing: nothing); returns the number
/// of files.
fn remove_tree(dir: &Path) -> Result<usize, KernelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            n += remove_tree(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
            n += 1;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(n),
        Err(e) => Err(io(dir)(e)),
    }
}

/// What a hand-over removed of one earlier layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub version: u32,
    /// The layout's pins before the hand-over.
    pub inventory: Inventory,
    /// Link pins removed (each one detached a program from a cgroup or tracepoint).
    pub links: usize,
    /// Events that were still queued in the layout's ring buffers: their record layout is not
    /// this release's, so they are reported as dropped, never decoded.
    pub dropped_events: usize,
    /// Whether more than [`DRAIN_CAP`] events were queued in a ring (the rest went unread).
    pub drain_capped: bool,
    /// Counter maps whose totals were added to this release's map of the same name and shape.
    pub counters_carried: Vec<String>,
    /// Counter maps of the layout with no map of the same name and shape here: their totals
    /// are dropped.
    pub counters_dropped: Vec<String>,
}

/// Removes every layout under `pins`' root other than this release's, after this release's
/// programs are attached: the links first (the earlier programs are detached from every cgroup
/// and tracepoint they were on), then the queued events are read out of their rings, then the
/// maps and programs are unpinned. A newer layout is not touched ([`refuse_newer`] stops the
/// agent before it loads anything).
pub fn take_over(pins: &Pins) -> Result<Vec<Replaced>, KernelError> {
    let mut out = Vec::new();
    for layout in find(pins.root())? {
        if layout.version >= PIN_LAYOUT_VERSION {
            continue;
        }
        let inventory = Inventory::read(&layout)?;
        let links = remove_tree(&layout.dir.join("links"))?;
        let (dropped_events, drain_capped) = drain_rings(&layout.dir.join("maps"));
        let (counters_carried, counters_dropped) =
            carry_counters(&layout.dir.join("maps"), &pins.maps_dir(), &inventory.maps);
        remove_tree(&layout.dir)?;
        out.push(Replaced {
            version: layout.version,
            inventory,
            links,
            dropped_events,
            drain_capped,
            counters_carried,
            counters_dropped,
        });
    }
    Ok(out)
}

/// Reads out the records queued in every ring buffer pinned in `maps_dir` (at most
/// [`DRAIN_CAP`] per ring); returns how many, and whether a ring held more.
fn drain_rings(maps_dir: &Path) -> (usize, bool) {
    let Ok(entries) = std::fs::read_dir(maps_dir) else {
        return (0, false);
    };
    let (mut n, mut capped) = (0, false);
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(Map::RingBuf(data)) = MapData::from_pin(&path).and_then(Map::from_map_data) else {
            continue;
        };
        let Ok(mut ring) = RingBuf::try_from(Map::RingBuf(data)) else {
            continue;
        };
        let mut read = 0;
        while read < DRAIN_CAP {
            if ring.next().is_none() {
                break;
            }
            read += 1;
        }
        if read == DRAIN_CAP && ring.next().is_some() {
            capped = true;
        }
        n += read;
    }
    (n, capped)
}

/// Adds the totals of every per-CPU counter map of an earlier layout (`*COUNTERS*` in
/// `old_maps`) to this release's map of the same name, when both have the same shape (type,
/// key and value size, entries); returns the maps carried over and those dropped. The earlier
/// programs are detached by then; an increment this release's programs make to an entry
/// between its read and its write here (microseconds) is lost, never one of the earlier ones.
fn carry_counters(
    old_maps: &Path,
    new_maps: &Path,
    names: &[String],
) -> (Vec<String>, Vec<String>) {
    let (mut carried, mut dropped) = (Vec::new(), Vec::new());
    for name in names.iter().filter(|n| n.contains("COUNTERS")) {
        if carry_one(&old_maps.join(name), &new_maps.join(name)).is_some() {
            carried.push(name.clone());
        } else {
            dropped.push(name.clone());
        }
    }
    (carried, dropped)
}

fn carry_one(old: &Path, new: &Path) -> Option<()> {
    let (old, new) = (MapData::from_pin(old).ok()?, MapData::from_pin(new).ok()?);
    let (a, b) = (old.info().ok()?, new.info().ok()?);
    let same = a.map_type().ok()? == MapType::PerCpuArray
        && b.map_type().ok()? == MapType::PerCpuArray
        && (a.key_size(), a.value_size(), a.max_entries()) == (b.key_size(), 8, b.max_entries())
        && b.value_size() == 8;
    if !same {
        return None;
    }
    let entries = a.max_entries();
    let old: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(old)).ok()?;
    let mut new: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(new)).ok()?;
    for i in 0..entries {
        let (o, n) = (old.get(&i, 0).ok()?, new.get(&i, 0).ok()?);
        if o.iter().all(|v| *v == 0) {
            continue;
        }
        let sum: Vec<u64> = o
            .iter()
            .zip(n.iter())
            .map(|(o, n)| o.wrapping_add(*n))
            .collect();
        new.set(i, PerCpuValues::try_from(sum).ok()?, 0).ok()?;
    }
    Some(())
}

/// The agents' lock: an exclusive `flock` on the bpffs directory, held for the agent's life, so
/// that two agents never write the same maps or attach two sets.
#[derive(Debug)]
pub struct Lock {
    _dir: File,
}

impl Lock {
    /// Takes the lock on `root` (which must exist), waiting up to `wait` for the agent holding
    /// it to exit; `on_wait` is called once when the lock is held by another.
    pub fn take(root: &Path, wait: Duration, on_wait: impl FnOnce()) -> Result<Self, KernelError> {
        let dir = File::open(root).map_err(io(root))?;
        let deadline = Instant::now() + wait;
        let mut told = Some(on_wait);
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _dir: dir });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(root)(e));
            }
            if let Some(f) = told.take() {
                f();
            }
            if Instant::now() >= deadline {
                return Err(KernelError::Locked {
                    dir: root.to_owned(),
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether an agent holds the lock on `root` now (`enforcer status`).
    pub fn held(root: &Path) -> bool {
        let Ok(dir) = File::open(root) else {
            return false;
        };
        // SAFETY: flock on a descriptor this function owns (closing it releases the lock).
        unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
    }
}

/// `enforcer status`: what is pinned under `root`, by layout and cgroup, and whether an agent
/// holds the lock.
pub fn status(root: &Path) -> Result<String, KernelError> {
    use std::fmt::Write as _;
    let layouts = find(root)?;
    let mut out = String::new();
    if layouts.is_empty() {
        let _ = writeln!(out, "{}: nothing pinned", root.display());
        return Ok(out);
    }
    let agent = if Lock::held(root) {
        "an agent is running (it holds the lock)"
    } else {
        "no agent is running (the lock is free)"
    };
    let _ = writeln!(out, "{}: {agent}", root.display());
    for layout in &layouts {
        let inv = Inventory::read(layout)?;
        let whose = match layout.version.cmp(&PIN_LAYOUT_VERSION) {
            std::cmp::Ordering::Equal => "this release",
            std::cmp::Ordering::Less => "an earlier release: this release's agent takes over",
            std::cmp::Ordering::Greater => "a newer release: this release's agent refuses it",
        };
        let _ = writeln!(out, "layout v{} ({whose})", layout.version);
        for (target, programs) in &inv.links {
            let place = match target.strip_prefix("cg-").and_then(|id| id.parse().ok()) {
                Some(id) => match cgroup_path(id) {
                    Some(p) => format!("cgroup {} (id {id})", p.display()),
                    None => format!("cgroup id {id} (gone: its links attach nothing)"),
                },
                None => target.clone(),
            };
            let _ = writeln!(out, "  attached  {place}: {}", programs.join(" "));
        }
        if inv.links.is_empty() {
            let _ = writeln!(out, "  attached  nothing");
        }
        let _ = writeln!(out, "  programs  {}", inv.programs.join(" "));
        let _ = writeln!(out, "  maps      {} pinned", inv.maps.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_their_program() {
        assert_eq!(link_program("enforcer_connect4-123-0"), "enforcer_connect4");
        assert_eq!(link_program("dns_egress-9-12"), "dns_egress");
        assert_eq!(link_program("odd"), "odd");
    }

    #[test]
    fn layouts_are_the_v_number_directories_oldest_first() {
        let root = std::env::temp_dir().join(format!("enforcer-layouts-{}", std::process::id()));
        for d in ["v13/links/cg-7", "v9", "v14", "vx", "v", "other"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("v15"), b"").unwrap();
        std::fs::write(root.join("v13/links/cg-7/enforcer_connect4-1-0"), b"").unwrap();
        std::fs::write(root.join("v13/links/cg-7/enforcer_sendmsg4-1-1"), b"").unwrap();
        let found: Vec<u32> = find(&root).unwrap().iter().map(|l| l.version).collect();
        assert_eq!(found, [9, 13, 14]);
        let inv = Inventory::read(&find(&root).unwrap()[1]).unwrap();
        assert_eq!(inv.cgroup_ids(), [7]);
        assert_eq!(inv.link_count(), 2);
        assert_eq!(
            inv.links["cg-7"],
            ["enforcer_connect4", "enforcer_sendmsg4"]
        );
        assert_eq!(remove(&root.join("v13")).unwrap(), 2);
        assert!(!root.join("v13").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
