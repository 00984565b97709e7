//! Every `dsl-examples/*.amla` goes through the whole pipeline and the JIT
//! backend (compile only; running the real kernels is `amlac run`'s job).

use std::path::Path;

use amla::compiler::codegen::{CodegenOptions, compile};
use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{self, CompileOptions};

#[test]
fn examples_compile_to_native_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "amla"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in files {
        let src = SourceFile::new(
            path.display().to_string(),
            std::fs::read_to_string(&path).unwrap(),
        );
        let opts = CompileOptions::new().unwrap();
        let c = match driver::compile(&src, &opts) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{}: pipeline: {e}", path.display()));
                continue;
            }
        };
        let k = c.ir;
        if let Err(e) = compile(&k, &CodegenOptions::verified()) {
            failures.push(format!("{}: {e}", path.display()));
        }
        // The checked and race-checked code passes Cranelift's verifier too.
        let checked = CodegenOptions {
            verify: true,
            instrument: amla::compiler::codegen::Instrument {
                bounds: true,
                gm_accesses: true,
            },
            ..CodegenOptions::verified()
        };
        if let Err(e) = compile(&k, &checked) {
            failures.push(format!("{} (checked): {e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
