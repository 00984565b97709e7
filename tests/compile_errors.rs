//! Errors the passes report for a well-formed program the target cannot
//! hold: rendered like checker diagnostics (code, file:line:col, snippet) and
//! snapshotted under `snapshots/compile_errors/`.

use std::path::Path;

use amla::compiler::diag::{SourceFile, render_plain};
use amla::compiler::driver::{CompileError, CompileOptions, compile, pass_diagnostic};

fn compile_error(example: &str, defines: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(example);
    let text = std::fs::read_to_string(&path).expect("example");
    let src = SourceFile::new(format!("dsl-examples/{example}"), text);
    let mut opts = CompileOptions::new().expect("target");
    for (n, v) in defines {
        opts.defines.insert(*n, *v);
    }
    match compile(&src, &opts) {
        Ok(_) => panic!("{example} {defines:?} compiled"),
        Err(CompileError::Pass(p)) => {
            assert!(
                p.is_user(),
                "a capacity error is the user's, not a compiler bug: {p}"
            );
            render_plain(&src, &[pass_diagnostic(&src, &p)])
        }
        Err(e) => panic!("{example} {defines:?}: expected a pass error, got {e}"),
    }
}

#[test]
fn a_kv_block_too_big_for_l1_names_buffer_tile_and_bytes() {
    let out = compile_error("mla_decode.amla", &[("BN", "1024"), ("N", "4096")]);
    for needle in [
        "E0034",
        "l1",
        "bf16[1024, 576]",
        "1179648",
        "524288",
        "mla_decode.amla:28:15",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots/compile_errors");
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!("mla_decode_bn1024", out));
}
