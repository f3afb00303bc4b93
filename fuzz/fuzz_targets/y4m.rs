#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| holoroom_fuzzing::y4m(data));
