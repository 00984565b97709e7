//! JIT-runs a Cube matmul kernel (K loop accumulating in L0C, both B
//! layouts) that hands its result to the Vector side through a GM workspace
//! with flags; the two Vector sub-blocks each take half of the rows.

mod codegen_util;

use std::time::Duration;

use amla::compiler::codegen::{CodegenOptions, compile};
use amla::compiler::ir::{
    Axis, BLayout, BinaryOp, Builder, DType, Dim, Index, InstKind, Kernel, Role, Space, Unit,
};
use amla::runtime::{CoreConfig, Gm, LaunchConfig, launch};
use codegen_util::*;
use half::bf16;

const M: u64 = 16;
const K: u64 = 64;
const KC: u64 = 32; // K chunk per loop step
const N: u64 = 24;

fn kernel(layout: BLayout) -> Kernel {
    let mut k = Kernel::new(format!("mm_{layout:?}"));
    let bd = dim(&mut k, "B");
    let a = tensor(
        &mut k,
        "a",
        DType::Bf16,
        vec![Dim::Sym(bd), Dim::Const(M), Dim::Const(K)],
        Role::Input,
    );
    let bshape = match layout {
        BLayout::KN => vec![Dim::Sym(bd), Dim::Const(K), Dim::Const(N)],
        BLayout::NK => vec![Dim::Sym(bd), Dim::Const(N), Dim::Const(K)],
    };
    let bt = tensor(&mut k, "b", DType::Bf16, bshape, Role::Input);
    let out = tensor(
        &mut k,
        "out",
        DType::F32,
        vec![Dim::Sym(bd), Dim::Const(M), Dim::Const(N)],
        Role::Output,
    );
    let ws = tensor(
        &mut k,
        "s_ws",
        DType::F32,
        vec![Dim::Sym(bd), Dim::Const(M), Dim::Const(N)],
        Role::Workspace,
    );

    // Cube.
    let top = func(&mut k, Unit::Cube, 1);
    let mut b = Builder::at_end(&mut k, top);
    let zero = iconst(&mut b, 0);
    let bv = b.value(InstKind::DimValue(bd)).unwrap();
    let body = b
        .parallel(
            vec![Axis {
                lo: zero,
                hi: bv,
                step: 1,
            }],
            &["bi"],
        )
        .unwrap();
    let bi = b.kernel.blocks[body].params[0];
    b.switch_to(body);
    let z = fconst(&mut b, 0.0);
    let c0 = placed(
        &mut b,
        InstKind::Broadcast {
            src: z,
            shape: vec![M, N],
        },
        Space::L0C,
        0,
    );
    let kmax = iconst(&mut b, K as i64);
    let (f, fb) = b.for_loop(zero, kmax, KC as i64, vec![c0], "j").unwrap();
    let (j, acc) = (b.kernel.blocks[fb].params[0], b.kernel.blocks[fb].params[1]);
    place(b.kernel, acc, Space::L0C, 0);
    let res = b.kernel.insts[f].results[0];
    place(b.kernel, res, Space::L0C, 0);
    b.switch_to(fb);
    let kr = Index::Range { start: j, len: KC };
    let at = placed(
        &mut b,
        InstKind::Load {
            tensor: a,
            index: vec![Index::Point(bi), Index::Full, kr.clone()],
        },
        Space::L1,
        0,
    );
    let bidx = match layout {
        BLayout::KN => vec![Index::Point(bi), kr.clone(), Index::Full],
        BLayout::NK => vec![Index::Point(bi), Index::Full, kr.clone()],
    };
    let btl = placed(
        &mut b,
        InstKind::Load {
            tensor: bt,
            index: bidx,
        },
        Space::L1,
        4096,
    );
    let a0 = placed(
        &mut b,
        InstKind::Copy {
            src: at,
            to: Space::L0A,
        },
        Space::L0A,
        0,
    );
    let b0 = placed(
        &mut b,
        InstKind::Copy {
            src: btl,
            to: Space::L0B,
        },
        Space::L0B,
        0,
    );
    let c = placed(
        &mut b,
        InstKind::Matmul {
            a: a0,
            b: b0,
            b_layout: layout,
            acc: Some(acc),
        },
        Space::L0C,
        0,
    );
    b.ins(InstKind::Yield(vec![c])).unwrap();
    b.switch_to(body);
    let all = vec![Index::Point(bi), Index::Full, Index::Full];
    b.ins(InstKind::Store {
        tensor: ws,
        index: all.clone(),
        value: res,
    })
    .unwrap();
    b.ins(InstKind::SetFlag(0)).unwrap();
    b.ins(InstKind::WaitFlag(1)).unwrap();

    // Vector: each sub-block doubles half of the rows and adds 1.
    let top = func(&mut k, Unit::Vector, 2);
    let mut b = Builder::at_end(&mut k, top);
    let zero = iconst(&mut b, 0);
    let bv = b.value(InstKind::DimValue(bd)).unwrap();
    let body = b
        .parallel(
            vec![Axis {
                lo: zero,
                hi: bv,
                step: 1,
            }],
            &["bi"],
        )
        .unwrap();
    let bi = b.kernel.blocks[body].params[0];
    b.switch_to(body);
    b.ins(InstKind::WaitFlag(0)).unwrap();
    let sb = b.value(InstKind::SubBlock).unwrap();
    let half_rows = iconst(&mut b, (M / 2) as i64);
    let r0 = b
        .value(InstKind::Binary(BinaryOp::Mul, sb, half_rows))
        .unwrap();
    let idx = vec![
        Index::Point(bi),
        Index::Range {
            start: r0,
            len: M / 2,
        },
        Index::Full,
    ];
    let t = placed(
        &mut b,
        InstKind::Load {
            tensor: ws,
            index: idx.clone(),
        },
        Space::Ub,
        0,
    );
    let two = fconst(&mut b, 2.0);
    let one = fconst(&mut b, 1.0);
    let sh = vec![M / 2, N];
    let tb = placed(
        &mut b,
        InstKind::Broadcast {
            src: two,
            shape: sh.clone(),
        },
        Space::Ub,
        1024,
    );
    let ob = placed(
        &mut b,
        InstKind::Broadcast {
            src: one,
            shape: sh,
        },
        Space::Ub,
        2048,
    );
    let y = placed(
        &mut b,
        InstKind::Binary(BinaryOp::Mul, t, tb),
        Space::Ub,
        3072,
    );
    let y = placed(
        &mut b,
        InstKind::Binary(BinaryOp::Add, y, ob),
        Space::Ub,
        4096,
    );
    b.ins(InstKind::Store {
        tensor: out,
        index: idx,
        value: y,
    })
    .unwrap();
    b.ins(InstKind::SetFlag(1)).unwrap();
    k
}

fn run(layout: BLayout) {
    let k = kernel(layout);
    let ck = compile(&k, &CodegenOptions::verified()).unwrap();
    assert_eq!(ck.sub_blocks(), 2);
    let batch = 5usize;
    let items = ck.work_items(&[batch as i64]).unwrap();
    assert_eq!(items, batch as u64);
    let mut rng = Rng(77);
    let (m, kk, n) = (M as usize, K as usize, N as usize);
    let av: Vec<bf16> = (0..batch * m * kk)
        .map(|_| bf16::from_f32(rng.f32(-1.0, 1.0)))
        .collect();
    let bv: Vec<bf16> = (0..batch * kk * n)
        .map(|_| bf16::from_f32(rng.f32(-1.0, 1.0)))
        .collect();
    let mut gm = Gm::new();
    gm.add_from("a", &av).unwrap();
    gm.add_from("b", &bv).unwrap();
    let out = gm
        .add_zeroed("out", amla::runtime::DType::F32, batch * m * n)
        .unwrap();
    gm.add_zeroed("s_ws", amla::runtime::DType::F32, batch * m * n)
        .unwrap();
    let cfg = LaunchConfig::default()
        .with_cores(2)
        .with_vector_sub_blocks(ck.sub_blocks() as usize)
        .with_wait_timeout(Duration::from_secs(20))
        .with_dims(vec![batch as i64]);
    let rep = launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    assert!(rep.pending_flags.is_empty(), "{:?}", rep.pending_flags);
    let got = gm.slice::<f32>(out).unwrap();
    for it in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..kk {
                    let bval = match layout {
                        BLayout::KN => bv[it * kk * n + p * n + j],
                        BLayout::NK => bv[it * n * kk + j * kk + p],
                    };
                    s +=
                        f64::from(av[it * m * kk + i * kk + p].to_f32()) * f64::from(bval.to_f32());
                }
                let want = 2.0 * s + 1.0;
                let g = f64::from(got[it * m * n + i * n + j]);
                assert!(
                    (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "[{it},{i},{j}] {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn cube_matmul_kn_hands_off_to_vector() {
    run(BLayout::KN);
}

#[test]
fn cube_matmul_nk_hands_off_to_vector() {
    run(BLayout::NK);
}
