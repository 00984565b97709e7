//! Regression tests of the pass pipeline on options and variations of the
//! examples that `amlac check` accepts: disabling a pass codegen needs, and
//! a grid that does not start at 0 with `mul-to-add` disabled. Each used to
//! end in an internal error.

use std::path::Path;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{self, CompileError, CompileOptions};
use amla::compiler::run::exec::{Executable, RunConfig, RunError};
use amla::compiler::run::inputs::InputOptions;
use amla::compiler::run::session::{Oracle, RunRequest, run_source};

fn example(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(name);
    SourceFile::new(name, std::fs::read_to_string(path).unwrap())
}

fn options(disabled: &[&str]) -> CompileOptions {
    let mut o = CompileOptions::new().unwrap();
    o.pipeline.disabled = disabled.iter().map(|s| s.to_string()).collect();
    o
}

#[test]
fn disabling_split_alone_is_a_usage_error_naming_the_passes_codegen_needs() {
    let src = example("flash_prefill.amla");
    let e = match driver::compile(&src, &options(&["split"])) {
        Ok(_) => panic!("compiled without split"),
        Err(CompileError::Pass(e)) => e,
        Err(e) => panic!("{e:?}"),
    };
    assert!(e.is_user(), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("pass `preload` needs `split`, which is disabled") && m.contains("plan-memory"),
        "{m}"
    );
}

#[test]
fn a_kernel_without_split_or_plan_memory_compiles_to_ir_but_does_not_run() {
    let src = example("flash_prefill.amla");
    let target = amla::compiler::target::Target::ascend910b();
    for (disabled, says) in [
        (
            &["split", "preload", "tile", "plan-memory"][..],
            "is `split` disabled?",
        ),
        (&["plan-memory"][..], "is `plan-memory` disabled?"),
    ] {
        let c = driver::compile(&src, &options(disabled)).unwrap();
        let e = match Executable::new(&c, &target) {
            Ok(_) => panic!("{disabled:?}: ran"),
            Err(e) => e,
        };
        assert!(matches!(e, RunError::Usage(_)), "{disabled:?}: {e}");
        let m = e.to_string();
        assert!(
            m.contains(says) && m.contains("`split` and `plan-memory`"),
            "{m}"
        );
    }
}

#[test]
fn a_grid_that_starts_above_zero_splits_and_compiles_without_mul_to_add() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let text = std::fs::read_to_string(path).unwrap();
    let edited = text.replace("parallel b in 0..B", "parallel b in 2..B");
    assert_ne!(edited, text);
    let src = SourceFile::new("variant.amla", edited);
    for depth in ["0", "1", "2"] {
        let mut o = options(&["mul-to-add"]);
        o.defines.insert("PRELOAD", depth);
        o.defines.insert("H", "16");
        let c = match driver::compile(&src, &o) {
            Ok(c) => c,
            Err(e) => panic!("PRELOAD={depth}: {e:?}"),
        };
        assert!(
            c.ir.to_string().contains("parallel %b in %"),
            "PRELOAD={depth}"
        );
        Executable::new(&c, &amla::compiler::target::Target::ascend910b())
            .unwrap_or_else(|e| panic!("PRELOAD={depth}: {e}"));
    }
}

#[test]
fn a_grid_that_starts_above_zero_runs_and_matches_the_interpreter_without_mul_to_add() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let text = std::fs::read_to_string(path).unwrap();
    let src = SourceFile::new(
        "variant.amla",
        text.replace("parallel b in 0..B", "parallel b in 2..B"),
    );
    let mut compile = options(&["mul-to-add"]);
    for (k, v) in [("B", "4"), ("H", "16"), ("N", "300")] {
        compile.defines.insert(k, v);
    }
    let req = RunRequest {
        compile,
        inputs: InputOptions {
            seed: 1,
            scale: 1.0,
        },
        given: Vec::new(),
        run: RunConfig {
            cores: 2,
            ..RunConfig::default()
        },
        check: true,
    };
    let s = run_source(&src, &req, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    // The `@reference` computes every b (the kernel leaves b = 0, 1 at 0);
    // the interpreter of the kernel itself is the oracle here.
    let interp = s
        .checks
        .iter()
        .find(|c| matches!(c.oracle, Oracle::Interpreter))
        .expect("an interpreter check");
    assert!(interp.passed(), "{:?}", interp.comparisons);
}
