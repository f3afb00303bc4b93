//! Every input kept in `regressions/<target>/` (crashes fuzzing found, and seeds worth keeping)
//! runs through its target's harness, so a fixed crash stays fixed.

use std::path::Path;

#[test]
fn kept_fuzz_inputs_replay_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (name, target) in holoroom_fuzzing::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).expect("a kept input reads");
            eprintln!("{name}: {}", path.display());
            target(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs under {}", root.display());
}

#[test]
fn every_target_takes_empty_and_random_inputs() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (name, target) in holoroom_fuzzing::TARGETS {
        target(&[]);
        for len in [1, 7, 64, 600] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            eprintln!("{name}: {len} random bytes");
            target(&data);
        }
    }
}
