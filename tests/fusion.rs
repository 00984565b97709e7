//! Fused Vector code (element-wise chains in one loop, `codegen::fuse`)
//! gives the same bits as the op-per-loop code (`CodegenOptions::unfused`)
//! on every example and every extra kernel, with and without partial last
//! blocks.

use std::path::Path;

use amla::compiler::codegen::CodegenOptions;
use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{CompileOptions, compile};
use amla::compiler::run::exec::{Executable, RunConfig};
use amla::compiler::run::inputs::{InputOptions, generate_all};
use amla::compiler::run::{HostData, HostTensor};

fn bits(t: &HostTensor) -> Vec<u32> {
    match &t.data {
        HostData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        HostData::Bf16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
        HostData::F16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
        HostData::I32(v) => v.iter().map(|&x| x as u32).collect(),
    }
}

fn outputs(path: &Path, defines: &[(&str, &str)], unfused: bool) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let src = SourceFile::new(path.display().to_string(), text);
    let mut opts = CompileOptions::new().expect("built-in target");
    for (n, v) in defines {
        opts.defines.insert(*n, *v);
    }
    let c = compile(&src, &opts).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let cg = CodegenOptions {
        unfused,
        ..CodegenOptions::verified()
    };
    let exe = Executable::with_options(&c, &opts.target, &cg)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let specs = exe.input_specs().unwrap();
    let inputs = generate_all(&specs, &InputOptions::default(), |_| None).unwrap();
    let cfg = RunConfig {
        cores: 2,
        ..RunConfig::default()
    };
    let out = exe
        .run(&inputs, &cfg)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out.outputs
        .iter()
        .map(|t| (t.name.clone(), bits(t)))
        .collect()
}

#[test]
fn fused_vector_code_gives_the_bits_of_one_loop_per_op() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = ["dsl-examples", "tests/kernels"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "amla"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "examples found: {files:?}");
    for f in &files {
        for defines in [&[][..], &[("N", "200")][..]] {
            let name = f.file_name().unwrap().to_string_lossy();
            if !defines.is_empty() && !matches!(&*name, "mla_decode.amla" | "mla_decode_mtp.amla") {
                continue;
            }
            let fused = outputs(f, defines, false);
            let unfused = outputs(f, defines, true);
            assert!(!fused.is_empty());
            for ((n, a), (_, b)) in fused.iter().zip(&unfused) {
                let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert_eq!(
                    diff,
                    0,
                    "{} {defines:?}: `{n}` differs in {diff} elements",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn fusion_removes_loops_from_the_mla_decode_vector_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let src = SourceFile::new("mla_decode.amla", std::fs::read_to_string(&path).unwrap());
    let opts = CompileOptions::new().expect("built-in target");
    let c = compile(&src, &opts).unwrap();
    let loops = |unfused| {
        let cg = CodegenOptions {
            unfused,
            ..CodegenOptions::default()
        };
        let clif = amla::compiler::codegen::emit_clif(&c.ir, &cg).unwrap();
        clif.matches("brif").count()
    };
    let (fused, unfused) = (loops(false), loops(true));
    // Every runtime call's status check is a branch in both; unfused, each
    // of the ~60 Vector ops is a loop besides, fused the [H, BN] softmax
    // chain is four loops and the [H] bookkeeping a handful.
    assert!(
        fused + 25 <= unfused,
        "fused code has {fused} branches, unfused {unfused}"
    );
}
