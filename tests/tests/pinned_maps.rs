//! Every map of the kernel object is pinned, and nothing else is: the object's maps equal the
//! `map_names::ALL` lists the loader pins (a map missing from them would be recreated empty by
//! a restarted agent — rules, counters or targets gone while enforcement stays attached).
use std::collections::BTreeSet;

use enforcer::kernel::{Kernel, pin::Pins};
use enforcer_common as common;
use integration_tests::{PinDir, privileged};

/// The lists the loader pins, as one set (a name in two lists fails the test).
fn pinned_lists() -> BTreeSet<&'static str> {
    let lists: [&[&'static str]; 5] = [
        &common::map_names::ALL,
        &common::fqdn::map_names::ALL,
        &common::identity::map_names::ALL,
        &common::api::map_names::ALL,
        &common::sockets::map_names::ALL,
    ];
    let mut set = BTreeSet::new();
    for name in lists.into_iter().flatten() {
        assert!(set.insert(*name), "{name} is in two ALL lists");
    }
    set
}

#[test]
fn the_objects_maps_are_exactly_the_pinned_lists() {
    if !privileged() {
        return;
    }
    let dir = PinDir::new();
    let pins = Pins::new(&dir.path);
    let mut kernel = Kernel::load_with(Some(pins.clone()), false).unwrap();
    // The object's own maps; `.rodata`, `.bss`, `.data` hold the programs' globals (set at
    // load, never pinned).
    let object: BTreeSet<String> = kernel
        .object_mut()
        .maps()
        .map(|(name, _)| name.to_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    let lists: BTreeSet<String> = pinned_lists().into_iter().map(str::to_owned).collect();
    assert_eq!(
        object.difference(&lists).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "maps of the object that no ALL list names (they would not be pinned)"
    );
    assert_eq!(
        lists.difference(&object).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "names in the ALL lists that the object has no map for"
    );
    // And the loader pinned each of them.
    let pinned: BTreeSet<String> = std::fs::read_dir(pins.maps_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pinned, object);
    drop(kernel);
}
