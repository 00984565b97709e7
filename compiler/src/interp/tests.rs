use super::*;
use crate::check::Defines;
use crate::diag::SourceFile;
use crate::run::tensor::HostData;

fn hir(src: &str) -> Kernel {
    let f = SourceFile::new("t.amla", src);
    crate::check::check(&f, &Defines::new()).unwrap_or_else(|d| panic!("{d:?}"))
}

fn f32t(name: &str, shape: &[usize], f: impl Fn(usize) -> f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor {
        name: name.into(),
        shape: shape.to_vec(),
        data: HostData::F32((0..n).map(f).collect()),
    }
}

fn run(k: &Kernel, inputs: &[HostTensor]) -> Vec<Output> {
    let dims: Vec<i64> = k.dims.iter().map(|d| d.value.unwrap_or(0)).collect();
    interpret(k, &dims, inputs, &Options::default()).unwrap()
}

#[test]
fn elementwise_masks_reductions_and_out_of_range_slices() {
    let k = hir("kernel t(x: f32[R, 6]) -> (o: f32[R, 4], s: f32[R]) {
        dim R = 3;
        parallel r in 0..R {
          let a = x[r..r+2, r+2..r+6];           // rows past R and cols past 6 read 0
          let m = where(col_index(a) <= row_index(a), a, -inf);
          o[r..r+2] = max(m, 0.0);
          s[r] = rowmax(m)[0] + rowsum(a)[1];
        }
      }");
    let x = f32t("x", &[3, 6], |i| i as f32);
    let out = run(&k, &[x]);
    let (o, s) = (&out[0].data, &out[1].data);
    // Row r of o is written by work items r and r - 1 (the later wins): the
    // last writer of row r is item r, whose row 0 is x[r, r+2..r+6] masked
    // to its first column.
    assert_eq!(o[0..4], [2.0, 0.0, 0.0, 0.0]);
    assert_eq!(o[4..8], [9.0, 0.0, 0.0, 0.0]);
    assert_eq!(o[8..12], [16.0, 0.0, 0.0, 0.0]);
    // s[r] = x[r, r+2] + x[r+1, r+2..r+6]; row 3 and column 6 read 0.
    assert_eq!(*s, vec![2.0 + 38.0, 9.0 + 48.0, 16.0]);
}

#[test]
fn casts_round_and_f32_is_exact_in_range() {
    let k = hir(
        "kernel t(x: f32[4]) -> (o: f32[4], p: bf16[4], q: f32[4], r: bf16[2, 2]) {
        parallel i in 0..1 {
          let t = x[..];
          o[..] = t * 3.0;
          r[..] = reshape(bf16(t * 3.0), 2, 2);
          p[..] = bf16(t) + bf16(t);
          q[..] = f32(i32(t)) + exp(t * 100.0);
        }
      }",
    );
    let x = f32t("x", &[4], |i| [1.0 / 3.0, 1.0 + 1.0 / 256.0, -2.75, 1.0][i]);
    let out = run(&k, &[x]);
    let third = (1.0f32 / 3.0) as f64;
    assert_eq!(out[0].data[0], third * 3.0, "no f32 rounding in between");
    // bf16(1 + 2^-8) rounds to 1.0 (ties to even); the sum is exact.
    assert_eq!(out[1].data[1], 2.0);
    assert_eq!(out[2].data[2], -2.0 + (-275.0f64).exp());
    // exp(100) overflows f32.
    assert_eq!(out[2].data[3], f64::INFINITY);
    // A store's last rounding to its 16-bit output is left to the tolerance:
    // the oracle holds the exact value.
    assert_eq!(out[3].data[0], third * 3.0);
    assert_eq!(out[3].shape, vec![2, 2]);
}

#[test]
fn loops_vars_matmul_and_data_dependent_bounds() {
    let k = hir(
        "kernel t(a: bf16[2, 4, 8], b: bf16[16, 8], n: i32[2]) -> (o: f32[2, 4, 8]) {
        parallel i in 0..2 {
          var acc: f32[4, 8] = 0.0;
          for j in 0..n[i] step 8 {
            acc = acc + a[i] @ b[j..j+8]^T;
          }
          o[i] = acc;
        }
      }",
    );
    let mk = |name: &str, shape: &[usize], f: &dyn Fn(usize) -> f64| HostTensor {
        name: name.into(),
        shape: shape.to_vec(),
        data: HostData::Bf16(
            (0..shape.iter().product())
                .map(|i| half::bf16::from_f64(f(i)))
                .collect(),
        ),
    };
    let a = mk("a", &[2, 4, 8], &|i| (i % 5) as f64 - 2.0);
    let b = mk("b", &[16, 8], &|i| (i % 3) as f64);
    let n = HostTensor {
        name: "n".into(),
        shape: vec![2],
        data: HostData::I32(vec![16, 0]),
    };
    let out = run(&k, &[a.clone(), b.clone(), n]);
    let (av, bv) = (a.data.to_f64(), b.data.to_f64());
    for r in 0..4 {
        for c in 0..8 {
            let want: f64 = (0..16)
                .step_by(8)
                .map(|j| {
                    (0..8)
                        .map(|t| av[r * 8 + t] * bv[(j + c) * 8 + t])
                        .sum::<f64>()
                })
                .sum();
            assert_eq!(out[0].data[r * 8 + c], want, "({r}, {c})");
        }
    }
    assert!(
        out[0].data[32..].iter().all(|&x| x == 0.0),
        "n[1] = 0: no iteration"
    );
}

#[test]
fn integer_semantics_and_scalar_loads_past_the_end() {
    let k = hir("kernel t(t: i32[3]) -> (o: i32[4]) {
        parallel i in 0..4 {
          let v = t[i];                           // t[3] reads 0
          o[i..i+1] = v / (v - v) + v % 2 + (0 - v) * 2;
        }
      }");
    let t = HostTensor {
        name: "t".into(),
        shape: vec![3],
        data: HostData::I32(vec![5, -3, 7]),
    };
    let out = run(&k, &[t]);
    assert_eq!(out[0].data, vec![1.0 - 10.0, -1.0 + 6.0, 1.0 - 14.0, 0.0]);
}

#[test]
fn the_budget_stops_a_huge_loop() {
    let k = hir("kernel t(x: f32[1]) -> (o: f32[1]) {
        parallel i in 0..1 {
          var a: f32 = 0.0;
          for j in 0..2000000000 { a = a + 1.0; }
          o[0] = a;
        }
      }");
    let x = f32t("x", &[1], |_| 0.0);
    let e = interpret(&k, &[], &[x], &Options { budget: 1_000_000 }).unwrap_err();
    assert!(e.to_string().contains("budget"), "{e}");
}
