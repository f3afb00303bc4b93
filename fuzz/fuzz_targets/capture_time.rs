#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| holoroom_fuzzing::capture_time(data));
