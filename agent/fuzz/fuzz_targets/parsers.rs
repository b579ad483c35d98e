//! Every parser of what the system hands hostprobe, picked by the first
//! byte (see agent/tests/parsers/dispatch.rs, which the corpus test shares).
#![no_main]

// The corpus test uses all of it; the fuzzer only `run`.
#[allow(dead_code)]
#[path = "../../tests/parsers/dispatch.rs"]
mod dispatch;

libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch::run(data));
