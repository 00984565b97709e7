//! IR snapshots: every `dsl-examples/*.amla` is compiled through the whole
//! pipeline and the IR after lowering and after each pass is an insta
//! snapshot under `snapshots/passes/` (`<stage>@<example>.snap`), so a
//! compiler change is reviewed as a snapshot diff (`cargo insta review`).
//! Every snapshot must also round-trip: print → parse → print is identical.
//! The pipeline verifies the IR after every pass.

use std::path::Path;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{Compilation, CompileOptions, compile};
use amla::compiler::ir::parse::parse;
use amla::compiler::passes::PrintAfter;

/// Compiles one example with `options` tweaked by `tweak`, printing the IR
/// after every pass.
fn compile_example(path: &Path, tweak: impl FnOnce(&mut CompileOptions)) -> Compilation {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let src = SourceFile::new(path.display().to_string(), text);
    let mut opts = CompileOptions::new().expect("built-in target");
    opts.pipeline.print_after = PrintAfter::All;
    tweak(&mut opts);
    compile(&src, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_round_trips(stage: &str, text: &str) {
    let k = parse(text).unwrap_or_else(|e| panic!("after {stage}: {e}\n{text}"));
    assert_eq!(
        k.to_string(),
        text,
        "after {stage}: print → parse → print differs"
    );
}

#[test]
fn every_example_after_every_pass() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/passes");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!("../dsl-examples", "*.amla", |path| {
            let c = compile_example(path, |_| {});
            let lowered = c.lowered.to_string();
            assert_round_trips("lower", &lowered);
            insta::assert_snapshot!("0-lower", lowered);
            assert_eq!(c.report.dumps.len(), 6, "one dump per pass");
            for (i, d) in c.report.dumps.iter().enumerate() {
                assert_round_trips(d.pass, &d.ir);
                insta::assert_snapshot!(format!("{}-{}", i + 1, d.pass), d.ir);
            }
        });
    });
}

/// The `acc` lines of the loop in a dump: those that name the accumulator.
fn acc_multiplies(ir: &str) -> usize {
    ir.lines().filter(|l| l.contains(" = mul %acc")).count()
}

#[test]
fn mla_decode_rescale_becomes_an_exponent_add_in_gm() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let on = compile_example(&path, |_| {});
    let after = &on
        .report
        .dumps
        .iter()
        .find(|d| d.pass == "mul-to-add")
        .expect("dump")
        .ir;
    assert!(after.contains("atomic_exp_add acc_ws["), "{after}");
    assert!(after.contains("atomic_add acc_ws["), "{after}");
    assert_eq!(
        acc_multiplies(after),
        0,
        "no float multiply of the accumulator may remain:\n{after}"
    );

    let off = compile_example(&path, |o| o.pipeline.disabled.push("mul-to-add".into()));
    let split = &off
        .report
        .dumps
        .iter()
        .find(|d| d.pass == "split")
        .expect("dump")
        .ir;
    assert!(!split.contains("atomic_exp_add"), "{split}");
    assert_eq!(acc_multiplies(&off.lowered.to_string()), 1);
    assert_eq!(
        acc_multiplies(split),
        1,
        "with mul-to-add disabled the multiply stays:\n{split}"
    );
}

/// The loops of the `cube` function of a dump: each loop's variable and
/// the lines of its body.
fn cube_loops(ir: &str) -> Vec<(String, Vec<&str>)> {
    let cube: Vec<&str> = ir
        .lines()
        .skip_while(|l| !l.starts_with("func cube"))
        .take_while(|l| !l.starts_with("func vector"))
        .collect();
    let mut loops = Vec::new();
    for (i, l) in cube.iter().enumerate() {
        let Some((_, rest)) = l.split_once("for ") else {
            continue;
        };
        let iv = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let indent = l.len() - l.trim_start().len();
        let body = cube[i + 1..]
            .iter()
            .take_while(|b| b.len() - b.trim_start().len() > indent)
            .copied()
            .collect();
        loops.push((iv, body));
    }
    loops
}

/// Whether some Cube loop issues a QK matmul for a block other than the
/// loop's own (`kv[%b, <not the loop variable>+:…]`) before it waits for
/// the softmax of its own block (`wait_flag` then the load of P).
fn qk_ahead_of_softmax_wait(ir: &str) -> bool {
    cube_loops(ir).iter().any(|(iv, body)| {
        let own = format!("kv[%b, {iv}+:");
        let ahead_load = body
            .iter()
            .position(|l| l.contains("= load kv[") && !l.contains(&own));
        let qk = body
            .iter()
            .position(|l| l.contains("= matmul") && l.contains(" nk "));
        let wait = body
            .iter()
            .position(|l| l.trim_start().starts_with("wait_flag"));
        matches!((ahead_load, qk, wait), (Some(a), Some(q), Some(w)) if a < q && q < w)
    })
}

#[test]
fn preload_issues_the_next_qk_before_waiting_for_softmax() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let preloaded = |depth: &str| {
        let c = compile_example(&path, |o| o.defines.insert("PRELOAD", depth));
        let ir = c
            .report
            .dumps
            .iter()
            .find(|d| d.pass == "preload")
            .expect("dump")
            .ir
            .clone();
        qk_ahead_of_softmax_wait(&ir)
    };
    assert!(
        preloaded("1"),
        "depth 1: the steady state must issue QK of the next block before waiting for P"
    );
    assert!(preloaded("2"), "depth 2 as well");
    assert!(!preloaded("0"), "depth 0 is the plain schedule");
}
