//! Regression tests of what the differential fuzzer found
//! (`docs/TESTING.md`, "Findings"): each minimised kernel of
//! `tests/failure_kernels/fuzz_*.amla` runs with `--check` semantics (the
//! float64 interpreter) at every preload depth, with and without
//! `mul-to-add`, and matches.

use std::path::Path;
use std::time::Duration;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{CompileOptions, compile};
use amla::compiler::ir::print;
use amla::compiler::run::exec::RunConfig;
use amla::compiler::run::session::{Oracle, RunRequest, run_source};

fn kernel_file(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/failure_kernels")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("kernel");
    SourceFile::new(format!("tests/failure_kernels/{name}"), text)
}

fn options(preload: u8, mul_to_add: bool) -> CompileOptions {
    let mut o = CompileOptions::new().expect("built-in target");
    o.defines.insert("PRELOAD", preload.to_string());
    if !mul_to_add {
        o.pipeline.disabled.push("mul-to-add".into());
    }
    o
}

/// Runs `name` checked in every configuration; returns whether
/// `mul-to-add` rewrote it (its IR has an `atomic_exp_add`).
fn runs_right_everywhere(name: &str) -> bool {
    let src = kernel_file(name);
    for preload in 0..3 {
        for mul_to_add in [true, false] {
            let req = RunRequest {
                compile: options(preload, mul_to_add),
                inputs: Default::default(),
                given: Vec::new(),
                run: RunConfig {
                    cores: 2,
                    wait_timeout: Duration::from_secs(20),
                    ..RunConfig::default()
                },
                check: true,
            };
            let s = run_source(&src, &req, &mut |_| {}).unwrap_or_else(|e| {
                panic!("{name} PRELOAD={preload} mul-to-add {mul_to_add}: {e}")
            });
            assert!(
                s.check(Oracle::Interpreter)
                    .is_some_and(|c| !c.comparisons.is_empty()),
                "{name}: the interpreter did not check it"
            );
            assert!(
                s.passed(),
                "{name} PRELOAD={preload} mul-to-add {mul_to_add}: {:#?}",
                s.checks
            );
        }
    }
    let c = compile(&src, &options(0, true)).expect("compiles");
    print(&c.ir).contains("atomic_exp_add")
}

#[test]
fn a_running_sum_that_starts_at_one_is_rewritten_right() {
    // Still rewritten: the start of `l` is dropped on the first block, and
    // kept by a loop that runs no block.
    assert!(runs_right_everywhere("fuzz_sum_starts_at_one.amla"));
}

#[test]
fn a_p_scaled_before_its_cast_is_left_as_flash_attention() {
    assert!(!runs_right_everywhere("fuzz_p_scaled_before_cast.amla"));
}

#[test]
fn a_row_that_sees_no_key_is_nan_as_written() {
    assert!(runs_right_everywhere("fuzz_row_without_key.amla"));
}

#[test]
fn a_bf16_cast_of_an_f32_input_rounds_as_the_jit_does() {
    use amla::compiler::fuzz::{Config, Program, Verdict, run_case};
    let src = kernel_file("fuzz_bf16_of_f32.amla");
    let p = Program {
        source: src.text.clone(),
        defines: Vec::new(),
        rounds_inside: false,
    };
    // The fuzzer's inputs of seed 1084 hold an f32 that `half` rounded the
    // wrong way.
    let v = run_case(&p, &Config::all()[..2], 1084);
    assert_eq!(v, Verdict::Passed);
}

#[test]
fn a_row_whose_first_block_is_masked_is_nan_as_written() {
    assert!(runs_right_everywhere("fuzz_first_block_masked.amla"));
}
