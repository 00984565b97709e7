//! Regression tests of `mul-to-add` on variations of the examples that
//! `amlac check` accepts: a grid that does not start at 0, and a store of
//! the output inside the KV loop (each used to end in an internal error);
//! and a kernel whose own `exp(-inf - -inf)` is NaN, which the rewrite used
//! to turn into a finite value.

use std::path::Path;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{self, CompileOptions};
use amla::compiler::passes::Explain;
use amla::compiler::run::exec::RunConfig;
use amla::compiler::run::inputs::InputOptions;
use amla::compiler::run::session::{RunRequest, run_source};

/// `mla_decode.amla` with `edit` applied to its text (the edit must apply).
fn variant(edit: impl Fn(&str) -> String) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let text = std::fs::read_to_string(path).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit did not apply");
    SourceFile::new("variant.amla", edited)
}

/// Options binding `defines`, with the `--explain` notes the tests read.
fn options(defines: &[(&str, &str)]) -> CompileOptions {
    let mut o = CompileOptions::new().unwrap();
    o.pipeline.explain = Explain::Record;
    for (k, v) in defines {
        o.defines.insert(*k, *v);
    }
    o
}

#[test]
fn a_grid_that_starts_above_zero_is_rewritten_with_a_slot_per_grid_value() {
    let src = variant(|t| t.replace("parallel b in 0..B", "parallel b in 2..B"));
    let mut o = options(&[("H", "16")]);
    // Only mul-to-add: the later passes' handling of such grids is theirs.
    o.pipeline.disabled = ["split", "preload", "tile", "plan-memory"]
        .map(String::from)
        .to_vec();
    let c = match driver::compile(&src, &o) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    };
    let ir = amla::compiler::ir::print(&c.ir);
    assert!(ir.contains("atomic_exp_add acc_ws["), "{ir}");
    // The workspace has B = 4 slots, indexed by b itself (0 and 1 unused).
    let (_, ws) =
        c.ir.tensors
            .iter()
            .find(|(_, t)| t.name == "acc_ws")
            .unwrap();
    use amla::compiler::ir::Dim;
    assert_eq!(
        ws.shape,
        [Dim::Const(4), Dim::Const(16), Dim::Const(512)],
        "{ws:?}"
    );
    assert!(
        c.notes
            .iter()
            .any(|n| n.text.contains("rewrote the rescale"))
    );
}

#[test]
fn a_store_inside_the_kv_loop_keeps_flash_attention_and_passes_its_check() {
    let src = variant(|t| {
        t.replace(
            "      m = m_new;\n",
            "      m = m_new;\n      out[b] = bf16(acc / l);\n",
        )
    });
    let compile = options(&[("B", "2"), ("H", "16"), ("N", "300")]);
    let c = match driver::compile(&src, &compile) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    };
    assert!(
        c.notes
            .iter()
            .any(|n| n.text.contains("read inside the loop")),
        "{:?}",
        c.notes
    );
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
    let s = match run_source(&src, &req, &mut |_| {}) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(s.checks.len(), 2, "the interpreter and the @reference");
    assert!(s.checks.iter().all(|c| c.comparisons.len() == 2));
    assert!(s.passed(), "{:?}", s.checks);
}

/// `tests/kernels/sliding_window.amla` without its `m_safe` guard: rows
/// whose first block holds no visible key compute `exp(-inf - -inf) = NaN`
/// as written, so their `out` and `lse` are NaN in the float64 interpreter
/// and in FlashAttention. `mul-to-add` must keep that NaN, in every variant.
#[test]
fn a_nan_the_kernel_computes_stays_nan_after_mul_to_add() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernels/sliding_window.amla");
    let text = std::fs::read_to_string(path).unwrap();
    let edited = text
        .replace("      let m_safe = where(m_new == -inf, 0.0, m_new);\n", "")
        .replace("m_safe", "m_new");
    assert!(!edited.contains("m_safe") && edited != text);
    let src = SourceFile::new("sliding_window_unguarded.amla", edited);
    let run = |defines: &[(&str, &str)], disable: bool| {
        let mut compile = options(defines);
        if disable {
            compile.pipeline.disabled = vec!["mul-to-add".into()];
        }
        let c = match driver::compile(&src, &compile) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        };
        let rewrote = c
            .notes
            .iter()
            .any(|n| n.text.contains("rewrote the rescale"));
        assert_eq!(rewrote, !disable, "{defines:?}: {:?}", c.notes);
        let req = RunRequest {
            compile,
            inputs: InputOptions {
                seed: 3,
                scale: 1.0,
            },
            given: Vec::new(),
            run: RunConfig {
                cores: 2,
                ..RunConfig::default()
            },
            check: true,
        };
        match run_source(&src, &req, &mut |_| {}) {
            Ok(s) => s,
            Err(e) => panic!("{defines:?}: {e}"),
        }
    };
    let nan_mask = |s: &amla::compiler::run::session::RunSummary| -> Vec<Vec<bool>> {
        s.output
            .outputs
            .iter()
            .map(|o| o.data.to_f64().iter().map(|x| x.is_nan()).collect())
            .collect()
    };
    let flash = run(&[], true);
    let want = nan_mask(&flash);
    // Rows 101-127 and 159-191 of each head see no key of their first KV
    // block (2 heads × 60 rows): 120 lse values and their `out` rows are NaN.
    let nan_lse = want[1].iter().filter(|&&x| x).count();
    assert_eq!(nan_lse, 120, "the unguarded kernel computes NaN");
    for variant in ["ceil", "nearest", "cann", "anchored"] {
        for comp in ["0", "1"] {
            let s = run(&[("RESCALE", variant), ("COMPENSATE", comp)], false);
            assert!(s.passed(), "{variant} {comp}: {:#?}", s.checks);
            assert_eq!(nan_mask(&s), want, "{variant} COMPENSATE={comp}");
            for c in &s.checks[0].comparisons {
                assert_eq!(
                    c.nan_in_output + c.nan_in_oracle,
                    0,
                    "{variant} {comp}: {c:?}"
                );
                assert!(c.nan_in_both > 0, "{variant} {comp}: {c:?}");
            }
        }
    }
}
