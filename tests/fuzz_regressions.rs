//! Replays every input kept under `fuzz/regressions/TARGET/` (inputs the fuzzers
//! found, or seeds worth keeping) through the fuzz targets' own bodies, so a
//! regression fails `cargo test` and not only a fuzzing run. The targets are run
//! by `cargo fuzz` (see `fuzz/` and the README's "Fuzzing").

#![allow(clippy::unwrap_used, dead_code)]

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    n
}

#[test]
fn every_kept_input_passes_its_target() {
    assert_eq!(
        targets::verifier_count(),
        hookgate::config::presets::all().len(),
        "the verify target covers every preset"
    );
    let counts = [
        ("verify", replay("verify", targets::verify)),
        ("timestamp", replay("timestamp", targets::timestamp)),
        ("json_pointer", replay("json_pointer", targets::json_pointer)),
        ("template", replay("template", targets::template)),
        ("config", replay("config", targets::config)),
    ];
    for (target, n) in counts {
        assert!(n > 0, "{target}: no kept inputs");
    }
}
