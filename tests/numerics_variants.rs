//! Every `mul-to-add` variant (`-D RESCALE=ceil|nearest`, `-D COMPENSATE=0|1`)
//! keeps every example passing its float64 check (`out` within the bf16
//! tolerance, `lse` within 1e-5 relative); empty sequences give out 0 and
//! lse +inf, never NaN; bad option values are clear errors.

use std::path::Path;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{self, CompileError, CompileOptions};
use amla::compiler::run::exec::RunConfig;
use amla::compiler::run::inputs::InputOptions;
use amla::compiler::run::session::{RunRequest, RunSummary, run_source};
use amla::compiler::run::{HostData, HostTensor};

fn source(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(name);
    SourceFile::new(name, std::fs::read_to_string(path).unwrap())
}

fn request(defines: &[(&str, &str)], given: Vec<HostTensor>) -> RunRequest {
    let mut compile = CompileOptions::new().unwrap();
    for (k, v) in defines {
        compile.defines.insert(*k, *v);
    }
    RunRequest {
        compile,
        inputs: InputOptions {
            seed: 3,
            scale: 1.0,
        },
        given,
        run: RunConfig {
            cores: 2,
            // Tests give some inputs (e.g. only the lengths) and draw the rest.
            fill_missing: true,
            ..RunConfig::default()
        },
        check: true,
    }
}

fn run(name: &str, defines: &[(&str, &str)], given: Vec<HostTensor>) -> RunSummary {
    let mut req = request(defines, given);
    // `RESCALE=flash`: FlashAttention, mul-to-add disabled (a test-only name).
    if defines.contains(&("RESCALE", "flash")) {
        req.compile.defines.map.remove("RESCALE");
        req.compile.defines.map.remove("COMPENSATE");
        req.compile.pipeline.disabled.push("mul-to-add".into());
    }
    let src = source(name);
    match run_source(&src, &req, &mut |_| {}) {
        Ok(s) => s,
        Err(e) => panic!("{name} {defines:?}: {e}"),
    }
}

const VARIANTS: [[(&str, &str); 2]; 10] = [
    [("RESCALE", "ceil"), ("COMPENSATE", "0")],
    [("RESCALE", "ceil"), ("COMPENSATE", "1")],
    [("RESCALE", "nearest"), ("COMPENSATE", "0")],
    [("RESCALE", "nearest"), ("COMPENSATE", "1")],
    [("RESCALE", "cann"), ("COMPENSATE", "0")],
    [("RESCALE", "cann"), ("COMPENSATE", "1")],
    [("RESCALE", "anchored"), ("COMPENSATE", "0")],
    [("RESCALE", "anchored"), ("COMPENSATE", "1")],
    [("RESCALE", "exact"), ("COMPENSATE", "0")],
    [("RESCALE", "exact"), ("COMPENSATE", "1")],
];

#[test]
fn every_variant_passes_the_float64_check_on_every_example() {
    // Small dims keep the debug build fast; N = 300 leaves a partial block.
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("mla_decode.amla", &[("B", "2"), ("H", "32"), ("N", "300")]),
        (
            "mla_decode_mtp.amla",
            &[("B", "1"), ("H", "16"), ("N", "300")],
        ),
        ("mla_decode_paged.amla", &[("B", "3"), ("H", "16")]),
        ("gqa_decode.amla", &[("B", "2"), ("N", "300")]),
        (
            "flash_prefill.amla",
            &[("B", "1"), ("H", "2"), ("S", "192")],
        ),
    ];
    for (file, dims) in cases {
        for v in VARIANTS {
            let mut d = dims.to_vec();
            d.extend(v);
            let s = run(file, &d, Vec::new());
            assert_eq!(s.checks.len(), 2, "{file}");
            for c in s.checks.iter().flat_map(|c| &c.comparisons) {
                assert!(c.passed, "{file} {d:?}: {c:?}");
            }
        }
    }
}

#[test]
fn empty_sequences_give_zero_and_infinite_lse_in_every_variant_and_flash() {
    // Sequence 1 is empty, sequence 0 short, sequence 2 full (16 pages).
    let lens = HostTensor {
        name: "cache_seqlens".into(),
        shape: vec![3],
        data: HostData::I32(vec![5, 0, 1024]),
    };
    let mut all = VARIANTS.to_vec();
    all.push([("RESCALE", "flash"), ("COMPENSATE", "0")]);
    for v in all {
        let mut d = vec![("B", "3"), ("H", "16")];
        d.extend(v);
        let s = run("mla_decode_paged.amla", &d, vec![lens.clone()]);
        for c in s.checks.iter().flat_map(|c| &c.comparisons) {
            assert!(c.passed, "{d:?}: {c:?}");
        }
        let out = s.output.outputs.iter().find(|o| o.name == "out").unwrap();
        let lse = s.output.outputs.iter().find(|o| o.name == "lse").unwrap();
        let (o, l) = (out.data.to_f64(), lse.data.to_f64());
        assert!(o.iter().chain(&l).all(|x| !x.is_nan()), "{d:?}");
        let per = o.len() / 3;
        assert!(o[per..2 * per].iter().all(|&x| x == 0.0), "{d:?}");
        assert!(l[16..32].iter().all(|&x| x == f64::INFINITY), "{d:?}");
        assert!(l[..16].iter().chain(&l[32..]).all(|x| x.is_finite()));
    }
}

#[test]
fn anchored_and_exact_are_flash_attention_bit_for_bit_on_one_block() {
    // One KV block (N <= 128): the grid is anchored at the block's max, so
    // c = 1 and the Cube multiplies the kernel's own bf16(exp(s - m_new));
    // `l`, `m` and `lse` are the kernel's own too. Every bit of `out` and
    // `lse` equals FlashAttention's (docs/NUMERICS.md, item 2).
    for n in ["1", "77", "128"] {
        let dims = [("B", "2"), ("H", "32"), ("N", n)];
        let outputs = |v: [(&'static str, &'static str); 2]| {
            let mut d = dims.to_vec();
            d.extend(v);
            let s = run("mla_decode.amla", &d, Vec::new());
            s.output
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.data.to_f64()))
                .collect::<Vec<_>>()
        };
        let flash = outputs([("RESCALE", "flash"), ("COMPENSATE", "0")]);
        for v in ["anchored", "exact"] {
            let got = outputs([("RESCALE", v), ("COMPENSATE", "0")]);
            for ((name, g), (_, f)) in got.iter().zip(&flash) {
                let same = g.iter().zip(f).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && g.len() == f.len(),
                    "{v} N = {n}: `{name}` differs from FlashAttention's"
                );
            }
        }
    }
}

#[test]
fn bad_option_values_are_clear_errors() {
    let src = source("mla_decode.amla");
    for (k, v, want) in [
        (
            "RESCALE",
            "floor",
            "-D RESCALE=floor: expected one of `ceil`, `nearest`, `cann`, `anchored`, `exact`",
        ),
        ("COMPENSATE", "yes", "-D COMPENSATE=yes: expected 0 or 1"),
    ] {
        let mut o = CompileOptions::new().unwrap();
        o.defines.insert(k, v);
        match driver::compile(&src, &o) {
            Err(CompileError::Option(m)) => assert_eq!(m, want),
            other => panic!("{k}={v}: {:?}", other.map(|_| ())),
        }
    }
    // The CLI reports it and exits 1, no panic.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let code = amla::compiler::cli::run([
        "amlac",
        "compile",
        "-D",
        "RESCALE=x",
        path.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
}

#[test]
fn the_variants_emit_what_they_say() {
    let src = source("mla_decode.amla");
    let ir = |v: &[(&str, &str)]| {
        let mut o = CompileOptions::new().unwrap();
        o.pipeline.disabled = vec![
            "split".into(),
            "preload".into(),
            "tile".into(),
            "plan-memory".into(),
        ];
        for (k, x) in v {
            o.defines.insert(*k, *x);
        }
        amla::compiler::ir::print(&driver::compile(&src, &o).unwrap().ir)
    };
    assert_eq!(
        ir(&[]),
        ir(&[("RESCALE", "anchored"), ("COMPENSATE", "0")]),
        "anchored without compensation is the default"
    );
    let ceil = ir(&VARIANTS[1]);
    assert!(ceil.contains("ceil ") && !ceil.contains("round "), "{ceil}");
    let cann = ir(&[("RESCALE", "cann"), ("COMPENSATE", "0")]);
    // The fractional step: an f32 exponent `%x`, clamped at -30.
    assert!(cann.contains("%eps") && cann.contains("%cof"), "{cann}");
    assert!(
        cann.lines()
            .any(|l| l.contains("atomic_exp_add") && l.contains("%x")),
        "{cann}"
    );
    assert!(cann.contains("-30"), "{cann}");
    // Anchored: cann's form, plus the carried anchor `%mu`, and no 1e-6.
    let anchored = ir(&[("RESCALE", "anchored"), ("COMPENSATE", "0")]);
    assert!(
        anchored.contains("%mu") && anchored.contains("%eps"),
        "{anchored}"
    );
    assert!(!cann.contains("%mu") && cann.contains("1e-6"), "{cann}");
    assert!(!anchored.contains("1e-6"), "{anchored}");
    // Exact: anchored's grid, `c` not rounded (no cast of `%c` to bf16), no
    // `cof`, no `eps`: the step is the integer `%n`, clamped at -255.
    let exact = ir(&[("RESCALE", "exact"), ("COMPENSATE", "0")]);
    assert!(exact.contains("%mu") && exact.contains("%c "), "{exact}");
    assert!(
        !exact.contains("%eps") && !exact.contains("%cof") && !exact.contains("-30"),
        "{exact}"
    );
    assert!(
        exact
            .lines()
            .any(|l| l.contains("atomic_exp_add") && l.contains("%n")),
        "{exact}"
    );
    assert!(
        !exact
            .lines()
            .any(|l| l.contains("%c") && l.contains("bf16") && l.contains("cast")),
        "{exact}"
    );
    assert!(ceil.contains("%lc"), "{ceil}");
    let plain = ir(&VARIANTS[0]);
    assert!(!plain.contains("%lc") && plain.contains("ceil "), "{plain}");
    let near = ir(&VARIANTS[2]);
    assert!(near.contains("round ") && !near.contains("ceil "), "{near}");
    assert!(near.contains("%pc ") && near.contains("%c "), "{near}");
    for t in [&ceil, &near, &plain] {
        assert!(t.contains("atomic_exp_add") && t.contains("atomic_add"));
    }
}

#[test]
fn the_fidelity_report_measures_every_variant() {
    use amla::compiler::numerics::fidelity::{Distribution, Request, Variant, measure, table};
    let mut compile = CompileOptions::new().unwrap();
    for (k, v) in [("B", "1"), ("H", "16"), ("N", "256")] {
        compile.defines.insert(k, v);
    }
    let req = Request {
        compile,
        seed: 1,
        distributions: vec![Distribution::Outliers],
        variants: Variant::all(),
        long_n: 512,
        grid: Vec::new(),
        run: RunConfig {
            cores: 2,
            ..RunConfig::default()
        },
    };
    let rows = measure(&source("mla_decode.amla"), &req, &mut |_| {}).unwrap();
    assert_eq!(rows.len(), 1);
    let errs: Vec<_> = rows[0]
        .cells
        .iter()
        .map(|c| {
            c.result
                .clone()
                .unwrap_or_else(|e| panic!("{}: {e}", c.variant))
        })
        .collect();
    assert_eq!(errs.len(), 11);
    for e in &errs {
        assert_eq!(e.nans, 0);
        assert!(e.cos_diff < 5e-5 && e.lse_max_rel < 1e-5, "{e:?}");
    }
    // Compensation removes ceil's scale error when one key dominates.
    assert!(errs[2].max_abs < errs[1].max_abs, "{errs:?}");
    let t = table(&rows);
    assert!(
        t.contains("ceil+comp") && t.contains("cann+comp") && t.contains("exact+comp"),
        "{t}"
    );
    assert!(t.contains("fails") && t.contains("check"), "{t}");
    // A grid of N and H values gives one row per point; bad lists exit 2.
    let mut req = req.clone();
    req.variants = vec![Variant::all()[0], Variant::all()[6]];
    req.grid = vec![
        vec![("N".into(), "2".into())],
        vec![("N".into(), "129".into())],
    ];
    let rows = measure(&source("mla_decode.amla"), &req, &mut |_| {}).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].dims.iter().find(|d| d.0 == "N").unwrap().1, 129);
    assert_eq!(cli_code(&["--variant", "floor"]), 2);
    assert_eq!(cli_code(&["-D", "N=4", "--n", "2,3"]), 2);
    // Usage errors exit 2, not a panic.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let p = path.to_str().unwrap();
    let cli =
        |args: &[&str]| amla::compiler::cli::run(["amlac", "numerics"].iter().chain(args).copied());
    assert_eq!(cli(&[p, "--only", "uniform"]), 2);
    assert_eq!(cli(&[p, "-D", "RESCALE=ceil"]), 2);
}

fn cli_code(args: &[&str]) -> u8 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let mut all = vec!["amlac", "numerics", path.to_str().unwrap()];
    all.extend(args);
    amla::compiler::cli::run(all)
}
