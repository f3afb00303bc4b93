#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| holoroom_fuzzing::sfu(data));
