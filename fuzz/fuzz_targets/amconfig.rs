//! The alertmanager.yml reader, decider and reports on arbitrary input (see
//! `enforcer_fuzz::amconfig`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| enforcer_fuzz::amconfig(data));
