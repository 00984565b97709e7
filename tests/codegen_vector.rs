//! JIT-runs a Vector-only kernel (load, exp, rowmax/rowsum, broadcast,
//! select with an iota mask, casts to bf16, stores) through the runtime with
//! a partial last block, and checks it against plain Rust.

mod codegen_util;

use std::time::Duration;

use amla::compiler::codegen::{CodegenOptions, compile, emit_clif};
use amla::compiler::ir::{
    Axis, Builder, CmpOp, DType, Dim, Index, InstKind, Kernel, ReduceOp, Role, Space, UnaryOp, Unit,
};
use amla::runtime::{CoreConfig, Gm, LaunchConfig, launch};
use codegen_util::*;

const R: u64 = 8; // rows per block
const C: u64 = 19; // columns: not a multiple of 4 (scalar tails)
const KEEP: i64 = 5; // columns kept by the iota mask

fn kernel() -> Kernel {
    let mut k = Kernel::new("vec_softmaxish");
    let n = dim(&mut k, "N");
    let x = tensor(
        &mut k,
        "x",
        DType::F32,
        vec![Dim::Sym(n), Dim::Const(C)],
        Role::Input,
    );
    let out = tensor(
        &mut k,
        "out",
        DType::Bf16,
        vec![Dim::Sym(n), Dim::Const(C)],
        Role::Output,
    );
    let xb = tensor(
        &mut k,
        "xb",
        DType::Bf16,
        vec![Dim::Sym(n), Dim::Const(C)],
        Role::Output,
    );
    let rmax = tensor(&mut k, "rmax", DType::F32, vec![Dim::Sym(n)], Role::Output);
    let rsum = tensor(&mut k, "rsum", DType::F32, vec![Dim::Sym(n)], Role::Output);
    let top = func(&mut k, Unit::Vector, 1);
    let mut b = Builder::at_end(&mut k, top);
    let zero = iconst(&mut b, 0);
    let nv = b.value(InstKind::DimValue(n)).unwrap();
    let body = b
        .parallel(
            vec![Axis {
                lo: zero,
                hi: nv,
                step: R as i64,
            }],
            &["r0"],
        )
        .unwrap();
    let r0 = b.kernel.blocks[body].params[0];
    b.switch_to(body);
    let ub = Space::Ub;
    let rows = Index::Range { start: r0, len: R };
    let xt = placed(
        &mut b,
        InstKind::Load {
            tensor: x,
            index: vec![rows.clone(), Index::Full],
        },
        ub,
        0,
    );
    let e = placed(&mut b, InstKind::Unary(UnaryOp::Exp, xt), ub, 1024);
    let m = placed(&mut b, InstKind::Reduce(ReduceOp::Max, e), ub, 2048);
    let s = placed(&mut b, InstKind::Reduce(ReduceOp::Sum, e), ub, 2112);
    let mb = placed(
        &mut b,
        InstKind::Broadcast {
            src: m,
            shape: vec![R, C],
        },
        ub,
        3072,
    );
    let io = placed(
        &mut b,
        InstKind::Iota {
            shape: vec![R, C],
            axis: 1,
        },
        ub,
        4096,
    );
    let keep = iconst(&mut b, KEEP);
    let kb = placed(
        &mut b,
        InstKind::Broadcast {
            src: keep,
            shape: vec![R, C],
        },
        ub,
        5120,
    );
    let mask = placed(&mut b, InstKind::Cmp(CmpOp::Lt, io, kb), ub, 6144);
    let sel = placed(&mut b, InstKind::Select(mask, e, mb), ub, 7168);
    let y = placed(&mut b, InstKind::Cast(sel, DType::Bf16), ub, 8192);
    let xbt = placed(&mut b, InstKind::Cast(xt, DType::Bf16), ub, 9216);
    for (t, v) in [(out, y), (xb, xbt)] {
        b.ins(InstKind::Store {
            tensor: t,
            index: vec![rows.clone(), Index::Full],
            value: v,
        })
        .unwrap();
    }
    for (t, v) in [(rmax, m), (rsum, s)] {
        b.ins(InstKind::Store {
            tensor: t,
            index: vec![rows.clone()],
            value: v,
        })
        .unwrap();
    }
    k
}

#[test]
fn vector_kernel_matches_rust_with_a_partial_last_block() {
    let k = kernel();
    let opts = CodegenOptions::verified();
    let ck = compile(&k, &opts).unwrap();
    let n = 21usize; // 3 blocks of 8, the last one partial
    let items = ck.work_items(&[n as i64]).unwrap();
    assert_eq!(items, 3);
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut xs: Vec<f32> = (0..n * C as usize).map(|_| rng.f32(-4.0, 4.0)).collect();
    // Special values go through the bf16 cast bit-exactly too.
    xs[3] = f32::from_bits(0x3F80_8000); // a tie: rounds to even
    xs[4] = f32::from_bits(0x3F81_8000);
    xs[5] = -0.0;
    let mut gm = Gm::new();
    gm.add_from("x", &xs).unwrap();
    let outs = [
        ("out", amla::runtime::DType::Bf16, n * C as usize),
        ("xb", amla::runtime::DType::Bf16, n * C as usize),
        ("rmax", amla::runtime::DType::F32, n),
        ("rsum", amla::runtime::DType::F32, n),
    ];
    let mut ids = Vec::new();
    for (name, d, len) in outs {
        ids.push(gm.add_zeroed(name, d, len).unwrap());
    }
    let cfg = LaunchConfig {
        poison_local: true,
        ..LaunchConfig::default()
    }
    .with_cores(2)
    .with_vector_sub_blocks(ck.sub_blocks() as usize)
    .with_wait_timeout(Duration::from_secs(20))
    .with_dims(vec![n as i64]);
    launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    let out = gm.slice::<half::bf16>(ids[0]).unwrap();
    let xb = gm.slice::<half::bf16>(ids[1]).unwrap();
    let rmax = gm.slice::<f32>(ids[2]).unwrap();
    let rsum = gm.slice::<f32>(ids[3]).unwrap();
    for i in 0..n {
        let row: Vec<f64> = (0..C as usize)
            .map(|j| f64::from(xs[i * C as usize + j]).exp())
            .collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().sum();
        assert!(
            (f64::from(rmax[i]) - m).abs() <= 2e-7 * m,
            "rmax[{i}] {} vs {m}",
            rmax[i]
        );
        assert!(
            (f64::from(rsum[i]) - s).abs() <= 1e-6 * s,
            "rsum[{i}] {} vs {s}",
            rsum[i]
        );
        for j in 0..C as usize {
            let want = if (j as i64) < KEEP { row[j] } else { m };
            let got = f64::from(out[i * C as usize + j].to_f32());
            assert!(
                (got - want).abs() <= want / 128.0,
                "out[{i},{j}] {got} vs {want}"
            );
            let x = xs[i * C as usize + j];
            assert_eq!(
                xb[i * C as usize + j].to_bits(),
                half::bf16::from_f32(x).to_bits(),
                "bf16({x})"
            );
        }
    }
    // CLIF text is deterministic.
    assert!(emit_clif(&k, &opts).unwrap() == emit_clif(&k, &opts).unwrap());
}

#[test]
fn missing_dims_and_short_buffers_are_reported_not_crashes() {
    let k = kernel();
    let ck = compile(&k, &CodegenOptions::default()).unwrap();
    let mut gm = Gm::new();
    gm.add_zeroed("x", amla::runtime::DType::F32, 8).unwrap(); // far too short
    for name in ["out", "xb"] {
        gm.add_zeroed(name, amla::runtime::DType::Bf16, 16 * C as usize)
            .unwrap();
    }
    for name in ["rmax", "rsum"] {
        gm.add_zeroed(name, amla::runtime::DType::F32, 16).unwrap();
    }
    let cfg = LaunchConfig::default()
        .with_cores(1)
        .with_vector_sub_blocks(1)
        .with_dims(vec![16]);
    let e = launch(
        &ck.runtime_kernel(),
        &mut gm,
        2,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("100") || format!("{e:?}").contains("100"),
        "{e}"
    );
    let cfg = LaunchConfig::default()
        .with_cores(1)
        .with_vector_sub_blocks(1);
    let e = launch(
        &ck.runtime_kernel(),
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap_err();
    assert!(format!("{e:?}").contains("101"), "{e:?}");
}
