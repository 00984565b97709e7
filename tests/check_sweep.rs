//! A sample of the `--check` sweep of the MLA examples over the KV length
//! and the seed (the whole sweep, every `N` in 1..=300 at seeds 0-3, is
//! `cargo run --release --example check_sweep`): the default pipeline
//! passes the float64 check at the lengths where the AMLA rescale used to
//! fail it (`N = 2, 3, 5, 9, 16` for `mla_decode`, `3, 8` for
//! `mla_decode_mtp`), around the block size, and where FlashAttention and
//! the default both failed the former tolerance (`N = 7`: an output that
//! cancels to 3.7e-3 from terms of magnitude 1.74). The tolerance allows the
//! error of rounding `P` to bf16 and no more (`run/compare.rs`;
//! `docs/NUMERICS.md`, "The check's tolerance"): kernels wrong by a little
//! more still fail it.

mod common_sweep;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::CompileOptions;
use amla::compiler::run::compare::Comparison;
use amla::compiler::run::inputs::InputOptions;
use amla::compiler::run::reference_kind::ReferenceKind;
use amla::compiler::run::session::{Oracle, RunRequest, run_source};

/// A kernel, its sampled KV lengths and its extra `-D` bindings.
type Case = (
    &'static str,
    &'static [usize],
    &'static [(&'static str, &'static str)],
);

#[test]
fn the_default_pipeline_passes_the_check_at_sampled_lengths() {
    let mut failures = Vec::new();
    let cases: [Case; 3] = [
        ("mla_decode.amla", &[1, 2, 3, 5, 7, 9, 16, 129, 300], &[]),
        ("mla_decode_mtp.amla", &[3, 8, 130], &[("B", "2")]),
        ("mla_decode_paged.amla", &[1, 2, 65, 300], &[("B", "2")]),
    ];
    assert_eq!(cases.map(|c| c.0), common_sweep::KERNELS);
    for (kernel, ns, defines) in cases {
        for &n in ns {
            if let Err(e) = common_sweep::check(kernel, n, 0, defines) {
                let flash = match common_sweep::check_pipeline(kernel, n, 0, defines, true) {
                    Err(_) => "FlashAttention fails too",
                    Ok(_) => "FlashAttention passes",
                };
                failures.push(format!("{e} ({flash})"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // N = 7 failed the former tolerance `2^-8 + 2^-7·|ref|`, in the default
    // and in FlashAttention; both pass the magnitude bound with room.
    for flash in [false, true] {
        let m = common_sweep::check_pipeline("mla_decode.amla", 7, 0, &[], flash).unwrap();
        let m = m.max(common_sweep::Margin::default());
        assert!(m.former > 1.0 && m.reference < 0.8, "{m:?}");
        assert!(m.interpreter < 1.0, "{m:?}");
    }
}

/// The `out` comparison against the reference of `mla_decode` at `-D N=n`,
/// its source text edited by replacing `from` with `to` (once).
fn out_of_edited(n: usize, from: &str, to: &str) -> Comparison {
    let src = common_sweep::source("mla_decode.amla");
    assert_eq!(src.text.matches(from).count(), 1, "`{from}`");
    let src = SourceFile::new("mla_decode_edited.amla", src.text.replace(from, to));
    let mut compile = CompileOptions::new().expect("target");
    compile.defines.insert("N", n.to_string());
    let req = RunRequest {
        compile,
        inputs: InputOptions {
            seed: 0,
            scale: 1.0,
        },
        given: Vec::new(),
        run: Default::default(),
        check: true,
    };
    let s = run_source(&src, &req, &mut |_| {}).expect("runs");
    let c = s
        .check(Oracle::Reference(ReferenceKind::Mla))
        .expect("checked against the reference");
    c.comparisons
        .iter()
        .find(|c| c.name == "out")
        .expect("out")
        .clone()
}

#[test]
fn a_kernel_wrong_by_a_little_more_than_the_rounding_of_p_fails() {
    // The unedited kernel passes, with room: its worst error is well under
    // the bound.
    let ok = out_of_edited(7, "* scale;", "* scale;");
    assert!(ok.passed && ok.max_ratio < 0.9, "{ok:#?}");
    // A softmax scale 1% off: every weight moves by about 1% of its score's
    // distance to the mean, a few times bf16's 2^-8.
    let c = out_of_edited(7, "* scale;", "* (scale * 1.01);");
    assert!(!c.passed, "{c:#?}");
    // The output 1.6% (2^-6) too small: a scale error the rounding of `P`
    // cannot make where the output does not cancel.
    let c = out_of_edited(7, "bf16(acc / l)", "bf16(acc / (l * 1.015625))");
    assert!(!c.passed, "{c:#?}");
    // At the default length (8 blocks of 128 keys) 1024 weights average
    // the values, `|out|` is a fraction of `mag`, and 2^-6 stays inside
    // `2^-7·|ref| + 2^-8·mag` (0.95 of it; the former tolerance passed it
    // too); 2^-5 does not.
    let c = out_of_edited(1024, "bf16(acc / l)", "bf16(acc / (l * 1.03125))");
    assert!(!c.passed, "{c:#?}");
}
