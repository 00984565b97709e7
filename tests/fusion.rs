//! Fused Vector code (element-wise chains in one loop, `codegen::fuse`) and
//! Cube matmuls with their L1 → L0 copies folded in (`codegen::matmul_fold`)
//! give the same bits as the op-per-call code (`CodegenOptions::unfused`)
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
    outputs_with(path, defines, unfused, None)
}

fn outputs_with(
    path: &Path,
    defines: &[(&str, &str)],
    unfused: bool,
    given: Option<Vec<HostTensor>>,
) -> Vec<(String, Vec<u32>)> {
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
    let inputs = match given {
        Some(t) => t,
        None => generate_all(&specs, &InputOptions::default(), |_| None).unwrap(),
    };
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

#[test]
fn a_row_maximum_is_ieee_maximum_in_any_order_fused_or_not() {
    // Rows of 22 (five 4-lane steps and a tail of 2), each with one special
    // pattern somewhere; the expected maximum is `f32::maximum` folded in
    // any order: NaN if any element is NaN, +0 over -0.
    let (b, r, c) = (2usize, 8usize, 22usize);
    let mut x = vec![-1.5f32; b * r * c];
    fn row(x: &mut [f32], n: usize) -> &mut [f32] {
        &mut x[n * 22..(n + 1) * 22]
    }
    row(&mut x, 0).fill(-0.0);
    row(&mut x, 0)[7] = 0.0; // +0 in a middle step
    row(&mut x, 1).fill(-0.0);
    row(&mut x, 1)[21] = 0.0; // +0 in the tail
    row(&mut x, 2).fill(0.0);
    row(&mut x, 2)[3] = -0.0;
    row(&mut x, 3)[5] = f32::NAN; // NaN in a step
    row(&mut x, 4)[20] = f32::NAN; // NaN in the tail
    row(&mut x, 5).fill(f32::NEG_INFINITY);
    row(&mut x, 6)[0] = f32::INFINITY;
    row(&mut x, 6)[1] = f32::NAN;
    for n in 7..b * r {
        for (i, v) in row(&mut x, n).iter_mut().enumerate() {
            *v = ((n * 31 + i * 17) % 23) as f32 - 11.0;
        }
    }
    let want: Vec<f32> = x
        .chunks(c)
        .map(|row| {
            row.iter().fold(f32::NEG_INFINITY, |a, &v| {
                if a.is_nan() || v.is_nan() {
                    f32::NAN
                } else if a == v {
                    if a.is_sign_positive() { a } else { v }
                } else {
                    a.max(v)
                }
            })
        })
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernels/row_stats.amla");
    let input = || {
        Some(vec![HostTensor {
            name: "x".into(),
            shape: vec![b, r, c],
            data: HostData::F32(x.clone()),
        }])
    };
    let fused = outputs_with(&path, &[], false, input());
    let unfused = outputs_with(&path, &[], true, input());
    assert_eq!(fused, unfused, "fused and op-per-loop bits differ");
    let (name, m) = &fused[0];
    assert_eq!(name, "m");
    for (n, (&got, &w)) in m.iter().zip(&want).enumerate() {
        let got = f32::from_bits(got);
        assert!(
            (got.is_nan() && w.is_nan()) || got.to_bits() == w.to_bits(),
            "row {n}: rowmax {got:?} ({:#010x}), want {w:?}",
            got.to_bits()
        );
    }
}

/// Outlined `exp`s (`codegen/fuse.rs`): a chain of two (three phases), a
/// value and a mask carried from phase 0 to phase 2, a bf16 `exp`, rows
/// with a tail; the fused code calls the runtime's `exp` (the op-per-loop
/// code never does) and gives the op-per-loop bits, on the default inputs
/// and on rows full of specials.
#[test]
fn outlined_exps_give_the_bits_of_one_loop_per_op() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/exp_phases.amla");
    let src = SourceFile::new("exp_phases.amla", std::fs::read_to_string(&path).unwrap());
    let opts = CompileOptions::new().expect("built-in target");
    let c = compile(&src, &opts).unwrap();
    let exp_calls = |unfused| {
        let cg = CodegenOptions {
            unfused,
            ..CodegenOptions::default()
        };
        let clif = amla::compiler::codegen::emit_clif(&c.ir, &cg).unwrap();
        // The runtime's `exp` is the only import without a status.
        let Some(f) = clif.lines().find_map(|l| {
            let l = l.trim();
            let (sig, _) = l.split_once(" = (i64, i64) system_v")?;
            Some(sig.to_string())
        }) else {
            return 0;
        };
        let fname = clif
            .lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(" = u0:")?;
                rest.ends_with(&format!(" {f}")).then(|| n.to_string())
            })
            .expect("the exp import");
        clif.matches(&format!("call {fname}(")).count()
    };
    assert_eq!(exp_calls(true), 0);
    assert_eq!(exp_calls(false), 3);
    same_bits(
        outputs(&path, &[], false),
        outputs(&path, &[], true),
        "default inputs",
    );
    let (b, r, cols) = (2usize, 8usize, 37usize);
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(0x007F_FFFF),
        200.0,
        -300.0,
        177.445_68,
        -208.0,
    ];
    let x: Vec<f32> = (0..b * r * cols)
        .map(|i| {
            if i % 5 == 0 {
                specials[(i / 5) % specials.len()]
            } else {
                ((i * 37) % 101) as f32 * 0.9 - 45.0
            }
        })
        .collect();
    let input = || {
        Some(vec![HostTensor {
            name: "x".into(),
            shape: vec![b, r, cols],
            data: HostData::F32(x.clone()),
        }])
    };
    same_bits(
        outputs_with(&path, &[], false, input()),
        outputs_with(&path, &[], true, input()),
        "specials",
    );
}

/// Fused outputs `a` and op-per-loop outputs `b` are the same bits.
fn same_bits(a: Vec<(String, Vec<u32>)>, b: Vec<(String, Vec<u32>)>, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        let diff = x.iter().zip(y).filter(|(p, q)| p != q).count();
        assert_eq!(diff, 0, "{what}: `{n}` differs in {diff} elements");
    }
}

#[test]
fn a_load_read_in_place_past_the_end_reads_zeros() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/point_past_the_end.amla");
    let fused = outputs(&path, &[], false);
    assert_eq!(fused, outputs(&path, &[], true));
    let (name, y) = &fused[0];
    assert_eq!(name, "y");
    // Item 2 of 3 reads x[3]: zeros, so y = 0 * 2 + 1.
    let last = &y[2 * 32..];
    assert!(last.iter().all(|&b| b == 1.0f32.to_bits()), "{last:x?}");
    assert!(y[..2 * 32].iter().any(|&b| b != 1.0f32.to_bits()));
}

/// Folding MLA decode's L1 → L0 copies and K chains into
/// `amla_rt_matmul_folded` calls leaves the per-pipe calls, bytes and
/// flops what the program's ops are (only the busy times differ), and the
/// folded code makes far fewer runtime calls (per KV block, `Q·Kᵀ`'s six
/// K tiles and twelve copies are one call, `P·V`'s five copies go).
/// (The Vector's fused group reads `S` in GM in place and records the
/// load it stands for: `amla_rt_note_read_in_place`.)
#[test]
fn folded_matmuls_count_the_programs_copies_and_matmuls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let src = SourceFile::new("mla_decode.amla", std::fs::read_to_string(&path).unwrap());
    let opts = CompileOptions::new().expect("built-in target");
    let c = compile(&src, &opts).unwrap();
    let run = |unfused| {
        let cg = CodegenOptions {
            unfused,
            ..CodegenOptions::verified()
        };
        let clif = amla::compiler::codegen::emit_clif(&c.ir, &cg).unwrap();
        let exe = Executable::with_options(&c, &opts.target, &cg).unwrap();
        let specs = exe.input_specs().unwrap();
        let inputs = generate_all(&specs, &InputOptions::default(), |_| None).unwrap();
        let out = exe.run(&inputs, &RunConfig::default()).unwrap();
        let counts: Vec<_> = out
            .report
            .stats
            .total
            .iter()
            .map(|(p, c)| (p, c.calls, c.bytes, c.flops))
            .collect();
        (clif, counts)
    };
    let (folded_clif, folded) = run(false);
    let (plain_clif, plain) = run(true);
    assert_eq!(folded, plain, "per-pipe (calls, bytes, flops)");
    let n_calls = |clif: &str| clif.matches("= call ").count();
    assert!(
        n_calls(&folded_clif) + 20 <= n_calls(&plain_clif),
        "folded code makes {} runtime calls, unfolded {}",
        n_calls(&folded_clif),
        n_calls(&plain_clif)
    );
}

/// A copy whose L1 source is overwritten before its matmul runs is not
/// folded: the edited program (a load of sequence 0's KV block into `%k`'s
/// L1 bytes between `%k_k0`'s copy to L0B and the first matmul) gives the
/// same bits folded and op-per-call, and they differ from the unedited
/// program's (sequence 1's later K tiles read the clobbered bytes in both).
#[test]
fn a_copy_whose_source_is_overwritten_before_its_matmul_is_not_folded() {
    clobbered_k_gives_op_per_call_bits("%k_k0_l0b = copy %k_k0 to l0b");
}

/// MLA decode (B = 2, H = 16, N = 256) with a load of sequence 0's KV
/// block into `%k`'s L1 bytes inserted after the line containing `after`:
/// the edited program gives the same bits folded and op-per-call, and they
/// differ from the unedited program's.
fn clobbered_k_gives_op_per_call_bits(after: &str) {
    use amla::compiler::ir;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let src = SourceFile::new("mla_decode.amla", std::fs::read_to_string(&path).unwrap());
    let mut opts = CompileOptions::new().expect("built-in target");
    for (n, v) in [("B", "2"), ("H", "16"), ("N", "256")] {
        opts.defines.insert(n, v);
    }
    let c = compile(&src, &opts).unwrap();
    let text = ir::print::print(&c.ir);
    let at = text
        .lines()
        .find(|l| l.contains(after))
        .unwrap_or_else(|| panic!("no line with {after}"));
    let load = text
        .lines()
        .find(|l| l.contains("%k = load kv[%b, %j+:128, ..]"))
        .expect("the K block load");
    let clobber = load
        .replace("%k = ", "%clobber = ")
        .replace("kv[%b,", "kv[%0,");
    let edited_text = text.replacen(at, &format!("{at}\n{clobber}"), 1);
    assert_ne!(edited_text, text);
    let k = ir::parse::parse(&edited_text).unwrap_or_else(|e| panic!("{e:?}"));
    ir::verify::verify(&k).unwrap_or_else(|e| panic!("{e:?}"));
    let mut edited = c.clone();
    edited.ir = k;
    let run = |c: &amla::compiler::driver::Compilation, unfused| {
        let cg = CodegenOptions {
            unfused,
            ..CodegenOptions::verified()
        };
        let exe = Executable::with_options(c, &opts.target, &cg).unwrap();
        let specs = exe.input_specs().unwrap();
        let inputs = generate_all(&specs, &InputOptions::default(), |_| None).unwrap();
        let out = exe.run(&inputs, &RunConfig::default()).unwrap();
        out.outputs.iter().map(bits).collect::<Vec<_>>()
    };
    let folded = run(&edited, false);
    assert_eq!(
        folded,
        run(&edited, true),
        "edited program, folded against op-per-call"
    );
    assert_ne!(
        folded,
        run(&c, false),
        "the clobbering load changes the result"
    );
}

/// The matmuls of a KV block read it in GM in place when its load's box
/// lies inside `kv` (the trace has one folded load per such block), and
/// the partial last block (N = 300) is copied into L1, zero-filled, as
/// op-per-call code does; the P tile of every block, which the Vector
/// writes into `ws_cast`, is read in GM too, and every S is computed in
/// GM by its chain's call instead of stored: the same bits and the same
/// per-pipe calls, bytes and flops either way.
#[test]
fn a_kv_block_inside_the_tensor_is_read_in_gm_by_its_matmuls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let src = SourceFile::new("mla_decode.amla", std::fs::read_to_string(&path).unwrap());
    let mut opts = CompileOptions::new().expect("built-in target");
    for (n, v) in [("B", "2"), ("H", "16"), ("N", "300")] {
        opts.defines.insert(n, v);
    }
    let c = compile(&src, &opts).unwrap();
    let run = |unfused| {
        let cg = CodegenOptions {
            unfused,
            ..CodegenOptions::verified()
        };
        let exe = Executable::with_options(&c, &opts.target, &cg).unwrap();
        let specs = exe.input_specs().unwrap();
        let inputs = generate_all(&specs, &InputOptions::default(), |_| None).unwrap();
        let cfg = RunConfig {
            trace: true,
            ..RunConfig::default()
        };
        let out = exe.run(&inputs, &cfg).unwrap();
        // The Cube's: op-per-call Vector code copies its GM inputs to UB
        // (fused code reads them in place), so the Vector's MTE2 differs.
        let mut cube = amla_runtime::stats::PipeStats::default();
        for u in &out.report.stats.units {
            if u.unit == amla_runtime::UnitKind::Cube {
                cube.merge(&u.pipes);
            }
        }
        let counts: Vec<_> = cube
            .iter()
            .map(|(p, c)| (p, c.calls, c.bytes, c.flops))
            .collect();
        let names: Vec<String> = out
            .report
            .trace
            .expect("traced")
            .events
            .into_iter()
            .map(|e| e.name)
            .collect();
        let outs: Vec<_> = out.outputs.iter().map(bits).collect();
        (outs, counts, names)
    };
    let (folded, folded_counts, folded_names) = run(false);
    let (plain, plain_counts, plain_names) = run(true);
    assert_eq!(folded, plain, "folded against op-per-call bits");
    assert_eq!(
        folded_counts, plain_counts,
        "the Cube's per-pipe (calls, bytes, flops)"
    );
    let count = |names: &[String], n: &str| names.iter().filter(|x| *x == n).count();
    let in_place = format!("copy {}", amla_runtime::FOLDED_LOAD_PATH);
    // Per sequence: blocks 0 and 1 (QK and PV loads each) lie inside kv;
    // block 2 (rows 256..384 of 300) is partial: its two loads copy. Each
    // block's P tile (the Vector's `ws_cast` slot) is read in place too.
    let per_seq = 4 + 3;
    assert_eq!(count(&plain_names, &in_place), 0);
    assert_eq!(
        count(&folded_names, &in_place),
        2 * per_seq,
        "{folded_names:?}"
    );
    assert_eq!(
        count(&folded_names, "copy gm->l1"),
        count(&plain_names, "copy gm->l1") - 2 * per_seq
    );
    // The store of every block's S after its `Q·Kᵀ` chain is the chain's
    // call (C computed in GM).
    let stored = format!("copy {}", amla_runtime::FOLDED_STORE_PATH);
    assert_eq!(count(&plain_names, &stored), 0);
    assert_eq!(count(&folded_names, &stored), 2 * 3);
    assert_eq!(
        count(&folded_names, "copy l0c->gm"),
        count(&plain_names, "copy l0c->gm") - 2 * 3
    );
}

/// A load whose L1 tile is overwritten before its copies read it is not
/// read in GM in place: the edited program (the clobbering load right after
/// `%k`'s load, before any copy) gives the op-per-call bits, which read
/// the clobbered tile.
#[test]
fn a_load_whose_tile_is_overwritten_before_its_copies_is_not_read_in_gm() {
    clobbered_k_gives_op_per_call_bits("%k = load kv[%b, %j+:128, ..]");
}
