//! Scalar codegen: i32 index math on launch-time dims (wrapping, division
//! and remainder by 0 end the launch with a named error, `i32::MIN / -1`
//! wraps), compares and selects on scalars, and scalar stores to GM
//! (out-of-range stores dropped).

mod codegen_util;

use amla::compiler::codegen::{CodegenOptions, compile};
use amla::compiler::ir::{
    Axis, BinaryOp, Builder, CmpOp, DType, Dim, Index, InstKind, Kernel, Role, Unit,
};
use amla::runtime::{CoreConfig, Gm, LaunchConfig, launch};
use codegen_util::*;

fn kernel() -> Kernel {
    kernel_with(false)
}

/// The test kernel; with `divide_by_z`, it also divides and takes the
/// remainder by the dim `Z`.
fn kernel_with(divide_by_z: bool) -> Kernel {
    let mut k = Kernel::new("scalars");
    let names = ["D", "Z", "M1", "MIN"];
    let ds: Vec<_> = names.iter().map(|n| dim(&mut k, n)).collect();
    let out = tensor(&mut k, "out", DType::I32, vec![Dim::Const(9)], Role::Output);
    let top = func(&mut k, Unit::Vector, 1);
    let mut b = Builder::at_end(&mut k, top);
    let zero = iconst(&mut b, 0);
    let one = iconst(&mut b, 1);
    let body = b
        .parallel(
            vec![Axis {
                lo: zero,
                hi: one,
                step: 1,
            }],
            &["i"],
        )
        .unwrap();
    b.switch_to(body);
    let v: Vec<_> = ds
        .iter()
        .map(|d| b.value(InstKind::DimValue(*d)).unwrap())
        .collect();
    let (d, z, m1, min) = (v[0], v[1], v[2], v[3]);
    let bin = |b: &mut Builder, op, x, y| b.value(InstKind::Binary(op, x, y)).unwrap();
    let two = iconst(&mut b, 2);
    let zc = iconst(&mut b, 0);
    let negd = bin(&mut b, BinaryOp::Sub, zc, d);
    let mx = bin(&mut b, BinaryOp::Max, d, z);
    let mn = bin(&mut b, BinaryOp::Min, d, m1);
    let gt = b.value(InstKind::Cmp(CmpOp::Gt, d, z)).unwrap();
    let sq = bin(&mut b, BinaryOp::Mul, d, d);
    let (q0, r0) = if divide_by_z {
        (
            bin(&mut b, BinaryOp::Div, d, z),
            bin(&mut b, BinaryOp::Rem, d, z),
        )
    } else {
        (zc, zc)
    };
    let results = vec![
        q0,
        r0,
        bin(&mut b, BinaryOp::Div, min, m1),
        bin(&mut b, BinaryOp::Rem, min, m1),
        bin(&mut b, BinaryOp::Div, negd, two),
        bin(&mut b, BinaryOp::Rem, negd, two),
        bin(&mut b, BinaryOp::Sub, mx, mn),
        b.value(InstKind::Select(gt, sq, zc)).unwrap(),
        bin(&mut b, BinaryOp::Add, min, m1), // wraps to i32::MAX
    ];
    for (i, r) in results.into_iter().enumerate() {
        let at = iconst(&mut b, i as i64);
        b.ins(InstKind::Store {
            tensor: out,
            index: vec![Index::Point(at)],
            value: r,
        })
        .unwrap();
    }
    // Out of range: dropped.
    let far = iconst(&mut b, 100);
    b.ins(InstKind::Store {
        tensor: out,
        index: vec![Index::Point(far)],
        value: d,
    })
    .unwrap();
    k
}

#[test]
fn scalar_integer_semantics() {
    let k = kernel();
    let ck = compile(&k, &CodegenOptions::verified()).unwrap();
    let dims = vec![7, 0, -1, i64::from(i32::MIN)];
    assert_eq!(ck.work_items(&dims).unwrap(), 1);
    let mut gm = Gm::new();
    let out = gm.add_zeroed("out", amla::runtime::DType::I32, 9).unwrap();
    let cfg = LaunchConfig::default()
        .with_cores(1)
        .with_vector_sub_blocks(1)
        .with_dims(dims);
    launch(
        &ck.runtime_kernel(),
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    assert_eq!(
        gm.slice::<i32>(out).unwrap(),
        &[0, 0, i32::MIN, 0, -3, -1, 8, 49, i32::MAX]
    );
}

#[test]
fn division_by_a_zero_dim_is_a_named_runtime_error() {
    let k = kernel_with(true);
    let ck = compile(&k, &CodegenOptions::verified()).unwrap();
    let mut gm = Gm::new();
    let out = gm.add_zeroed("out", amla::runtime::DType::I32, 9).unwrap();
    let run = |z: i64, gm: &mut Gm| {
        let cfg = LaunchConfig::default()
            .with_cores(1)
            .with_vector_sub_blocks(1)
            .with_dims(vec![7, z, -1, i64::from(i32::MIN)]);
        launch(&ck.runtime_kernel(), gm, 1, &CoreConfig::default(), &cfg)
    };
    let e = run(0, &mut gm).expect_err("7 / 0 must not give a value");
    match e {
        amla::runtime::RuntimeError::KernelStatus { code, .. } => {
            assert_eq!(code, amla::compiler::codegen::abi::STATUS_DIVISION_BY_ZERO);
            let m = amla::compiler::codegen::abi::status_meaning(code).unwrap();
            assert!(m.contains("division"), "{m}");
        }
        e => panic!("expected the division status, got {e}"),
    }
    // A non-zero divisor runs: 7 / 2 = 3, 7 % 2 = 1.
    run(2, &mut gm).unwrap();
    assert_eq!(&gm.slice::<i32>(out).unwrap()[..2], &[3, 1]);
}
