//! The differential fuzzer of the whole compiler, sampled: generated kernels
//! and mutated examples (`amla::compiler::fuzz`), each rejected by the
//! checker with a diagnostic or compiled, JIT-run and matched against the
//! float64 interpreter, never a panic, internal error, codegen or launch
//! error, or hang. One configuration per case, rotating over the 20 of
//! the full matrix (`fuzz::Config::all`: every preload depth with every
//! optional pass on and without each in turn, 1 and 3 cores). The driver
//! that runs cases in worker processes is tested on a hang and an abort.
//!
//! The heavy run (docs/TESTING.md records its counts):
//! `cargo run --release --example fuzz_compiler -- 10000 0`.

use std::time::Duration;

use amla::compiler::fuzz::workers::{DriveOptions, WorkerOptions, drive, worker};
use amla::compiler::fuzz::{Features, Kind, Verdict, configs_for, generate, judge, program};

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
        let p = program(seed, &ex, Features::ALL);
        match judge(&p, &configs_for(seed, 1), seed, Duration::from_secs(120)) {
            Verdict::Passed => counts[0] += 1,
            Verdict::Rejected => counts[1] += 1,
            Verdict::Refused(_) => counts[2] += 1,
            Verdict::Finding(k, f) => {
                findings.push(format!("seed {seed} [{}]: {f}\n{}", k.name(), p.source))
            }
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

/// The worker end of [`the_driver_survives_a_hang_and_a_crash`]: nothing
/// unless that test started this binary as its worker process.
#[test]
fn worker_entry() {
    if std::env::var_os("AMLA_FUZZ_TEST_WORKER").is_none() {
        return;
    }
    let opts = WorkerOptions {
        examples: examples(),
        per_case: 1,
        features: Features::ALL,
    };
    worker(&opts, std::io::stdin().lock(), std::io::stdout().lock());
}

#[test]
fn the_driver_survives_a_hang_and_a_crash() {
    // Seed 2's case sleeps forever and seed 4's aborts its worker; the run
    // goes on and judges every seed.
    let exe = std::env::current_exe().expect("test binary");
    let spawn = || {
        let mut c = std::process::Command::new(&exe);
        c.args(["worker_entry", "--exact", "--test-threads=1"])
            .env("AMLA_FUZZ_TEST_WORKER", "1")
            .env("AMLA_FUZZ_FAULTS", "hang=2,abort=4");
        c
    };
    let opts = DriveOptions {
        first: 0,
        cases: 7,
        jobs: 2,
        limit: Duration::from_secs(20),
    };
    let mut seen = Vec::new();
    let summary = drive(&opts, &spawn, &mut |seed, v, _| {
        seen.push((seed, v.clone()))
    })
    .expect("worker processes");
    seen.sort_by_key(|(s, _)| *s);
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    for (seed, v) in &seen {
        match (seed, v) {
            (2, Verdict::Finding(Kind::Hang, _)) => {}
            (4, Verdict::Finding(Kind::Signal, m)) => assert!(m.contains("SIGABRT"), "{m}"),
            (2 | 4, v) => panic!("seed {seed}: {v:?}"),
            (_, Verdict::Finding(k, m)) => panic!("seed {seed}: [{}] {m}", k.name()),
            _ => {}
        }
    }
    assert_eq!(summary.judged, 7);
    assert_eq!(summary.finding_count(), 2, "{summary}");
}
