//! The differential fuzzer of the whole compiler (`amla::compiler::fuzz`):
//!
//! ```text
//! cargo run --release --example fuzz_compiler -- [CASES] [FIRST_SEED]
//! ```
//!
//! Runs CASES (default 1000) programs from FIRST_SEED (default 0): generated
//! kernels and, every fourth case, mutated examples; each either rejected by
//! the checker or compiled, run and matched against the float64 interpreter
//! under two configurations. Prints every finding with its seed and source,
//! then the counts; exits 1 when there was a finding.

use std::time::{Duration, Instant};

use amla::compiler::fuzz::{Features, Verdict, configs_for, judge, program};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let first: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples");
    let mut examples = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("dsl-examples")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    for p in paths {
        examples.push(std::fs::read_to_string(p).expect("example"));
    }
    let t = Instant::now();
    let (mut rejected, mut refused, mut passed, mut findings) = (0u64, 0u64, 0u64, 0u64);
    let mut judged = 0u64;
    for seed in first..first + cases {
        judged += 1;
        let p = program(seed, &examples, Features::ALL);
        match judge(&p, &configs_for(seed, 2), seed, Duration::from_secs(120)) {
            Verdict::Rejected => rejected += 1,
            Verdict::Refused(_) => refused += 1,
            Verdict::Passed => passed += 1,
            Verdict::Finding(f) => {
                findings += 1;
                println!("FINDING seed {seed}: {f}\n-D {:?}\n{}", p.defines, p.source);
                if f.starts_with("hang") {
                    // The hung case's thread still runs: stop here.
                    break;
                }
            }
        }
        if (seed - first + 1).is_multiple_of(500) {
            eprintln!(
                "{} cases, {:.0} s: {passed} passed, {rejected} rejected, {refused} refused, {findings} findings",
                seed - first + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{judged} cases from seed {first} in {:.1} s: {passed} compiled, ran and matched; {rejected} rejected by the checker; {refused} refused by a pass; {findings} findings",
        t.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(findings > 0));
}
