//! Regression tests of the failure classes found by trying variations of
//! the examples as a new user would (issue 8, item 3; `docs/TESTING.md`,
//! "Failure classes fixed"): each kernel here used to crash, hang, end in an
//! internal error or compute wrong numbers; now it runs and matches float64,
//! or is refused with a diagnostic.

use std::path::Path;
use std::time::Duration;

use amla::compiler::diag::{SourceFile, render_plain};
use amla::compiler::driver::{
    CompileError, CompileOptions, compile, lower_source, pass_diagnostic,
};
use amla::compiler::passes::PassError;
use amla::compiler::run::exec::RunConfig;
use amla::compiler::run::session::{Oracle, RunRequest, RunSummary, run_source};

fn example(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example");
    SourceFile::new(format!("dsl-examples/{name}"), text)
}

fn kernel_file(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/failure_kernels")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("kernel");
    SourceFile::new(format!("tests/failure_kernels/{name}"), text)
}

fn options(defines: &[(&str, &str)]) -> CompileOptions {
    let mut o = CompileOptions::new().expect("built-in target");
    for (n, v) in defines {
        o.defines.insert(*n, *v);
    }
    o
}

fn run(src: &SourceFile, defines: &[(&str, &str)]) -> Result<RunSummary, String> {
    let req = RunRequest {
        compile: options(defines),
        inputs: Default::default(),
        given: Vec::new(),
        run: RunConfig {
            cores: 2,
            wait_timeout: Duration::from_secs(20),
            // Checked code: no failure-class kernel may index outside a buffer.
            checked: true,
            ..RunConfig::default()
        },
        check: true,
    };
    run_source(src, &req, &mut |_| {}).map_err(|e| e.to_string())
}

/// Runs with `--check` semantics and asserts every output matched float64.
fn run_checked(src: &SourceFile, defines: &[(&str, &str)]) -> RunSummary {
    let s = run(src, defines).unwrap_or_else(|e| panic!("{} {defines:?}: {e}", src.name));
    assert!(
        s.check(Oracle::Interpreter)
            .is_some_and(|c| !c.comparisons.is_empty()),
        "{}: the interpreter did not check it",
        src.name
    );
    assert!(s.passed(), "{} {defines:?}: {:#?}", src.name, s.checks);
    s
}

/// The user-facing pass error of a compile that must fail.
fn capacity_error(src: &SourceFile, defines: &[(&str, &str)]) -> (PassError, String) {
    match compile(src, &options(defines)) {
        Ok(_) => panic!("{} {defines:?} compiled", src.name),
        Err(CompileError::Pass(p)) => {
            assert!(p.is_user(), "a user error, not a compiler bug: {p}");
            let text = render_plain(src, &[pass_diagnostic(src, &p)]);
            (p, text)
        }
        Err(e) => panic!("{} {defines:?}: expected a pass error, got {e}", src.name),
    }
}

// --- slices of computed tiles, transposes ---------------------------------

#[test]
fn slices_of_computed_tiles_and_transpose_chains_run_right() {
    // `((qt @ k^T) * scale)[.., 0..BN]`, `((k^T)^T^T)^T[.., 0..512]`.
    let src = kernel_file("slice_computed.amla");
    for preload in ["0", "1", "2"] {
        run_checked(&src, &[("PRELOAD", preload)]);
    }
    run_checked(&src, &[("N", "300")]);
}

#[test]
fn slices_of_a_tile_in_gm_scratch_run_right() {
    // `kt = k^T` (bf16[576, 128]) does not fit UB next to the rest: its
    // slices `kt[.., 0..BN]` and `kt[0..512, ..]` read the GM scratch.
    let src = kernel_file("slice_gm_tile.amla");
    for preload in ["0", "2"] {
        run_checked(&src, &[("PRELOAD", preload), ("N", "300")]);
    }
}

// --- f16 -------------------------------------------------------------------

#[test]
fn f16_output_and_f16_casts_of_the_mla_kernel_run_right() {
    run_checked(&kernel_file("mla_f16_out.amla"), &[]);
    run_checked(
        &kernel_file("mla_f16_out.amla"),
        &[("H", "128"), ("N", "300")],
    );
    run_checked(&kernel_file("mla_f16_cast.amla"), &[]);
    run_checked(&kernel_file("mla_f16_cast.amla"), &[("N", "300")]);
}

// --- capacities --------------------------------------------------------------

#[test]
fn huge_var_tiles_are_capacity_errors_before_any_pass() {
    for (dim, overflow) in [("4611686018427387904", true), ("144115188075855872", false)] {
        let text = format!(
            "kernel t(q: f32[B, 16]) -> (out: f32[B, 16])\n{{\n  dim B = 2;\n  parallel b in 0..B {{\n    var x: f32[{dim}, 16] = 0.0;\n    out[b] = q[b];\n  }}\n}}\n"
        );
        let src = SourceFile::new("t.amla", text);
        // Refused by lowering itself: no pass ever sees the tile.
        let Err(CompileError::Pass(p)) = lower_source(&src, &options(&[])) else {
            panic!("a {dim}-row tile lowered");
        };
        let (q, rendered) = capacity_error(&src, &[]);
        assert_eq!(p, q);
        assert!(matches!(p, PassError::DoesNotFit { .. }), "{p}");
        assert!(
            rendered.contains("E0034") && rendered.contains("t.amla:5:"),
            "{rendered}"
        );
        assert_eq!(
            rendered.contains("more than 2^64 bytes"),
            overflow,
            "{rendered}"
        );
    }
}

#[test]
fn oversized_heads_and_blocks_are_refused_at_their_source_before_any_pass() {
    let src = example("mla_decode.amla");
    for (d, v, needle, at) in [
        ("H", "16384", "bf16[16384, 576]", "mla_decode.amla:23:14"),
        ("BN", "100000", "bf16[100000, 576]", "mla_decode.amla:28:15"),
        ("H", "4096", "bf16[4096, 576]", "mla_decode.amla:23:14"),
    ] {
        assert!(lower_source(&src, &options(&[(d, v)])).is_err());
        let (_, text) = capacity_error(&src, &[(d, v)]);
        for n in ["E0034", "l1", needle, at] {
            assert!(text.contains(n), "-D {d}={v}: `{n}` missing from\n{text}");
        }
    }
}

#[test]
fn a_capacity_error_of_the_mtp_kernel_points_at_the_tile() {
    // (It used to point at line 1, a comment.)
    let (_, text) = capacity_error(&example("mla_decode_mtp.amla"), &[("H", "512")]);
    assert!(text.contains("mla_decode_mtp.amla:25:14"), "{text}");
    assert!(
        text.contains("reshape(q[b, t..t+TS], TS * H, 576)"),
        "{text}"
    );
}

#[test]
fn every_op_of_every_example_has_a_span_after_the_pipeline() {
    for ex in [
        "mla_decode.amla",
        "mla_decode_mtp.amla",
        "mla_decode_paged.amla",
        "gqa_decode.amla",
        "flash_prefill.amla",
    ] {
        let c = compile(&example(ex), &options(&[])).expect("compiles");
        for f in &c.ir.funcs {
            c.ir.walk(f.body, &mut |i| {
                assert!(
                    c.ir.spans[i].is_some(),
                    "{ex}: `{}` has no span",
                    c.ir.kind(i).opcode()
                );
            });
        }
    }
}

// --- steps and i32 ---------------------------------------------------------

#[test]
fn a_step_near_i32_max_ends_its_loop_at_every_preload_depth() {
    // One block per sequence: the step only has to end the loop, at every
    // preload depth (the preload's block arithmetic used to overflow).
    let src = kernel_file("step_i32_max.amla");
    for preload in ["0", "1", "2", "8"] {
        run_checked(&src, &[("PRELOAD", preload)]);
    }
}

// --- division by zero -------------------------------------------------------

#[test]
fn an_index_divided_by_a_zero_read_at_run_time_is_a_named_error() {
    let text = "kernel t(q: f32[B, 16], z: i32[B]) -> (out: f32[B, 16])\n{\n  dim B = 4;\n  parallel b in 0..B {\n    out[b] = q[b / z[b]];\n  }\n}\n";
    let src = SourceFile::new("t.amla", text);
    let mut req = RunRequest {
        compile: options(&[]),
        inputs: Default::default(),
        given: vec![amla::compiler::run::HostTensor {
            name: "z".into(),
            shape: vec![4],
            data: amla::compiler::run::HostData::I32(vec![1, 1, 0, 1]),
        }],
        // Only the divisor is given; `q` is seeded.
        run: RunConfig {
            fill_missing: true,
            ..RunConfig::default()
        },
        check: false,
    };
    let e = run_source(&src, &req, &mut |_| {}).expect_err("a zero divisor ran");
    assert!(e.to_string().contains("division"), "{e}");
    req.given[0].data = amla::compiler::run::HostData::I32(vec![1, 1, 2, 1]);
    run_source(&src, &req, &mut |_| {}).expect("non-zero divisors run");
}

// --- empty rows --------------------------------------------------------------

#[test]
fn multi_token_decode_with_fewer_cached_than_new_tokens_gives_zero_and_inf() {
    let s = run_checked(&example("mla_decode_mtp.amla"), &[("N", "1"), ("H", "16")]);
    let lse = s
        .output
        .outputs
        .iter()
        .find(|o| o.name == "lse")
        .expect("lse");
    let amla::compiler::run::HostData::F32(v) = &lse.data else {
        panic!("lse is f32");
    };
    // Token 0 of each sequence sees no key (cache position -1), token 1
    // sees the one cached token.
    assert!(v.contains(&f32::INFINITY));
    assert!(v.iter().all(|x| !x.is_nan()));
}

// --- --emit stops at its stage ---------------------------------------------

#[test]
fn emit_hir_and_lowered_stop_before_the_passes() {
    // H = 448: qt alone fits L1, qt and k together do not (plan-memory's
    // E0035); the HIR and the lowered IR exist all the same.
    let dir = std::env::temp_dir().join(format!("amla-emit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mla = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let mla = mla.to_str().expect("utf-8 path");
    let amlac = |args: &[&str]| amla::compiler::cli::run(["amlac"].iter().chain(args).copied());
    for (emit, needle) in [("hir", "kernel mla_decode"), ("lowered", "func any")] {
        let out = dir.join(format!("{emit}.txt"));
        let out_s = out.to_str().expect("utf-8 path");
        let code = amlac(&["compile", mla, "-D", "H=448", "--emit", emit, "-o", out_s]);
        assert_eq!(code, 0, "--emit {emit} ran a later stage");
        let text = std::fs::read_to_string(&out).expect("emitted");
        assert!(text.contains(needle), "--emit {emit}:\n{text}");
    }
    // The whole pipeline still reports the error.
    assert_eq!(amlac(&["compile", mla, "-D", "H=448"]), 1);
    std::fs::remove_dir_all(&dir).ok();
}
