//! The policy parser and compiler on arbitrary input (see `enforcer_fuzz::policy`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| enforcer_fuzz::policy(data));
