//! The differential fuzzer of the whole compiler, sampled: generated kernels
//! and mutated examples (`amla::compiler::fuzz`), each rejected by the
//! checker with a diagnostic or compiled, JIT-run and matched against the
//! float64 interpreter, never a panic, internal error, codegen or launch
//! error, or hang. The configurations rotate over every preload depth,
//! `mul-to-add` on and off, 1 and 3 cores.
//!
//! The heavy run (docs/TESTING.md records its counts):
//! `cargo run --release --example fuzz_compiler -- 10000`.

use std::time::Duration;

use amla::compiler::fuzz::{Features, Verdict, configs_for, generate, judge, program};

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("dsl-examples")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("example"))
        .collect()
}

/// Seeds sampled by the default suite (a debug build runs them in well
/// under a minute on 2 cores).
const SAMPLE: u64 = 160;

#[test]
fn sampled_cases_are_rejected_or_match_the_interpreter() {
    let ex = examples();
    let mut counts = [0usize; 3];
    let mut findings = Vec::new();
    for seed in 0..SAMPLE {
        // Grids that start above 0 still end in an internal error in split
        // (open in docs/TESTING.md); the heavy run keeps them.
        let p = program(seed, &ex, Features { grid_offset: false });
        match judge(&p, &configs_for(seed, 1), seed, Duration::from_secs(120)) {
            Verdict::Passed => counts[0] += 1,
            Verdict::Rejected => counts[1] += 1,
            Verdict::Refused(_) => counts[2] += 1,
            Verdict::Finding(f) => findings.push(format!("seed {seed}: {f}\n{}", p.source)),
        }
    }
    assert!(findings.is_empty(), "{}", findings.join("\n\n"));
    // Most generated programs are well-formed and run: the fuzzer tests the
    // back end, not only the checker.
    assert!(counts[0] * 2 > SAMPLE as usize, "{counts:?}");
}

#[test]
fn the_generator_is_deterministic_and_varied() {
    assert_eq!(generate(7).source, generate(7).source);
    let distinct: std::collections::HashSet<String> = (0..50).map(|s| generate(s).source).collect();
    assert!(distinct.len() >= 45, "{}", distinct.len());
}
