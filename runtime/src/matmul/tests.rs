use super::*;
use proptest::prelude::*;

/// Deterministic xorshift values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec<T: CubeInput>(&mut self, n: usize) -> Vec<T> {
        (0..n).map(|_| T::from_f32(self.next_f32())).collect()
    }
}

/// f64 reference and the per-element error bound.
fn reference<T: CubeInput>(g: &Gemm, a: &[T], b: &[T], c0: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut r = vec![0f64; c0.len()];
    let mut tol = vec![0f64; c0.len()];
    for i in 0..g.m {
        for j in 0..g.n {
            let idx = i * g.ldc + j;
            let mut s = if g.mode == AccumMode::Accumulate {
                f64::from(c0[idx])
            } else {
                0.0
            };
            let mut sa = s.abs();
            for kk in 0..g.k {
                let av = f64::from(a[i * g.lda + kk].to_f32());
                let bv = match g.b_layout {
                    BLayout::KN => b[kk * g.ldb + j],
                    BLayout::NK => b[j * g.ldb + kk],
                };
                let p = av * f64::from(bv.to_f32());
                s += p;
                sa += p.abs();
            }
            r[idx] = s;
            tol[idx] = (g.k as f64 + 2.0) * 1.2e-7 * sa + 1e-30;
        }
    }
    (r, tol)
}

type Runner<T> = fn(&Gemm, &[T], &[T], &mut [f32]) -> Result<(), RuntimeError>;

fn runners<T: CubeInput>() -> Vec<(String, Runner<T>)> {
    let mut v: Vec<(String, Runner<T>)> =
        vec![("panels-portable".into(), matmul_panels_portable::<T>)];
    for p in available_paths() {
        let f: Runner<T> = match p {
            MatmulPath::Avx512Bf16 => {
                |g, a, b, c| matmul_with_path(MatmulPath::Avx512Bf16, g, a, b, c)
            }
            MatmulPath::Avx2Fma => |g, a, b, c| matmul_with_path(MatmulPath::Avx2Fma, g, a, b, c),
            MatmulPath::Scalar => |g, a, b, c| matmul_with_path(MatmulPath::Scalar, g, a, b, c),
        };
        v.push((p.name().into(), f));
    }
    v
}

/// Runs every implementation on one case and checks each against f64 and
/// that the padding of C (beyond n, at stride ldc) is untouched.
fn check_case<T: CubeInput>(g: Gemm, seed: u64, extra: &[(String, Runner<T>)]) {
    let (al, bl, cl) = g.required_lens().unwrap();
    let mut rng = Rng(seed | 1);
    let a: Vec<T> = rng.vec(al);
    let b: Vec<T> = rng.vec(bl);
    let c0: Vec<f32> = (0..cl).map(|_| rng.next_f32()).collect();
    let (r, tol) = reference(&g, &a, &b, &c0);
    let mut all = runners::<T>();
    all.extend(extra.iter().cloned());
    for (name, run) in all {
        let mut c = c0.clone();
        run(&g, &a, &b, &mut c).unwrap();
        for i in 0..g.m {
            for j in 0..g.ldc {
                let idx = i * g.ldc + j;
                if idx >= cl {
                    continue;
                }
                if j >= g.n {
                    assert_eq!(
                        c[idx].to_bits(),
                        c0[idx].to_bits(),
                        "{name} {g:?}: wrote padding ({i},{j})"
                    );
                } else {
                    let err = (f64::from(c[idx]) - r[idx]).abs();
                    assert!(
                        err <= tol[idx],
                        "{name} {g:?}: C[{i},{j}] = {} vs {} (tol {})",
                        c[idx],
                        r[idx],
                        tol[idx]
                    );
                }
            }
        }
    }
}

fn bf16_extra() -> Vec<(String, Runner<bf16>)> {
    vec![("pairs-emulated".into(), matmul_bf16_pairs_emulated)]
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 2),
    (1, 1, 3),
    (2, 3, 1),
    (3, 5, 7),
    (8, 32, 2),
    (9, 33, 3),
    (6, 16, 16),
    (7, 17, 31),
    (17, 31, 33),
    (16, 48, 64),
    (33, 65, 129),
    (5, 40, 515),
    (3, 7, 1031),
];

#[test]
fn bf16_all_paths_agree_with_f64_on_edge_shapes() {
    let extra = bf16_extra();
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        for layout in [BLayout::KN, BLayout::NK] {
            for mode in [AccumMode::Overwrite, AccumMode::Accumulate] {
                check_case::<bf16>(Gemm::dense(m, n, k, layout, mode), 7 + s as u64, &extra);
            }
        }
    }
}

#[test]
fn f16_all_paths_agree_with_f64_on_edge_shapes() {
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        for layout in [BLayout::KN, BLayout::NK] {
            check_case::<f16>(
                Gemm::dense(m, n, k, layout, AccumMode::Accumulate),
                99 + s as u64,
                &[],
            );
        }
    }
}

#[test]
fn strided_operands_leave_padding_alone() {
    let extra = bf16_extra();
    for layout in [BLayout::KN, BLayout::NK] {
        let mut g = Gemm::dense(13, 37, 45, layout, AccumMode::Overwrite);
        g.lda = 50;
        g.ldb += 3;
        g.ldc = 41;
        check_case::<bf16>(g, 5, &extra);
        check_case::<f16>(g, 6, &[]);
    }
}

#[test]
fn mla_sized_tiles() {
    // QKᵀ of one 128-row pass against a 64-token block, and a P·V slice.
    let extra = bf16_extra();
    check_case::<bf16>(
        Gemm::dense(128, 64, 576, BLayout::NK, AccumMode::Overwrite),
        11,
        &extra,
    );
    check_case::<bf16>(
        Gemm::dense(64, 128, 64, BLayout::KN, AccumMode::Accumulate),
        12,
        &extra,
    );
}

#[test]
fn exact_small_integers_are_exact() {
    // Integer-valued bf16 products and sums below 2^24 are exact on every path.
    let g = Gemm::dense(9, 35, 21, BLayout::NK, AccumMode::Overwrite);
    let (al, bl, cl) = g.required_lens().unwrap();
    let a: Vec<bf16> = (0..al)
        .map(|i| bf16::from_f32((i % 7) as f32 - 3.0))
        .collect();
    let b: Vec<bf16> = (0..bl)
        .map(|i| bf16::from_f32((i % 5) as f32 - 2.0))
        .collect();
    let (r, _) = reference(&g, &a, &b, &vec![0.0; cl]);
    let mut all = runners::<bf16>();
    all.extend(bf16_extra());
    for (name, run) in all {
        let mut c = vec![f32::NAN; cl];
        run(&g, &a, &b, &mut c).unwrap();
        for (x, y) in c.iter().zip(&r) {
            assert_eq!(f64::from(*x), *y, "{name}");
        }
    }
}

#[test]
fn k_zero_and_empty_shapes() {
    let a: Vec<bf16> = vec![];
    let b: Vec<bf16> = vec![];
    let mut c = vec![5.0f32; 6];
    matmul(
        &Gemm::dense(2, 3, 0, BLayout::KN, AccumMode::Accumulate),
        &a,
        &b,
        &mut c,
    )
    .unwrap();
    assert_eq!(c, vec![5.0; 6]);
    matmul(
        &Gemm::dense(2, 3, 0, BLayout::KN, AccumMode::Overwrite),
        &a,
        &b,
        &mut c,
    )
    .unwrap();
    assert_eq!(c, vec![0.0; 6]);
    let mut none: Vec<f32> = vec![];
    matmul(
        &Gemm::dense(0, 3, 4, BLayout::KN, AccumMode::Overwrite),
        &a,
        &[bf16::ZERO; 12],
        &mut none,
    )
    .unwrap();
}

#[test]
fn bad_shapes_are_errors() {
    let a = vec![bf16::ONE; 10];
    let b = vec![bf16::ONE; 10];
    let mut c = vec![0f32; 10];
    let g = Gemm::dense(4, 4, 4, BLayout::KN, AccumMode::Overwrite);
    let e = matmul(&g, &a, &b, &mut c).unwrap_err();
    assert!(e.to_string().contains("A needs 16"), "{e}");
    let mut g2 = Gemm::dense(2, 2, 4, BLayout::NK, AccumMode::Overwrite);
    g2.ldb = 3;
    assert!(matmul(&g2, &a, &b, &mut c).is_err());
    let huge = Gemm::dense(usize::MAX, 2, 2, BLayout::KN, AccumMode::Overwrite);
    assert!(matmul(&huge, &a, &b, &mut c).is_err());
}

#[test]
fn path_detection_and_per_launch_choice() {
    use crate::config::LaunchConfig;
    assert!(MatmulPath::Scalar.is_supported());
    assert!(detected_path().is_supported());
    assert_eq!(available_paths().first().copied(), Some(detected_path()));
    // The path is a launch's choice; nothing process-wide changes.
    let cfg = LaunchConfig::default();
    assert_eq!(cfg.resolved_matmul_path(), detected_path());
    for p in MatmulPath::ALL {
        let cfg = LaunchConfig::default().with_matmul_path(Some(p));
        assert_eq!(cfg.resolved_matmul_path(), p);
        assert_eq!(cfg.validate().is_ok(), p.is_supported(), "{p}");
    }
    assert_eq!(detected_path(), available_paths()[0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_shapes(m in 1usize..40, n in 1usize..70, k in 1usize..90, nk in any::<bool>(),
                     acc in any::<bool>(), seed in any::<u64>()) {
        let layout = if nk { BLayout::NK } else { BLayout::KN };
        let mode = if acc { AccumMode::Accumulate } else { AccumMode::Overwrite };
        check_case::<bf16>(Gemm::dense(m, n, k, layout, mode), seed, &bf16_extra());
    }
}

/// The AVX-512 B packer writes the same bits as the portable one, on full
/// and edge panels, both layouts, odd and even K, strided B and K blocks
/// that start past 0 and end off a multiple of 16 pairs.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_b_packing_matches_portable() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("avx512f not available: AVX-512 B packing not run");
        return;
    }
    let mut rng = Rng(17);
    for &(n, k) in &[
        (32, 2),
        (64, 96),
        (40, 33),
        (96, 576),
        (33, 64),
        (128, 128),
        (31, 40),
        (64, 35),
    ] {
        for layout in [BLayout::KN, BLayout::NK] {
            for pad in [0, 3] {
                let mut g = Gemm::dense(8, n, k, layout, AccumMode::Overwrite);
                g.ldb += pad;
                let (_, bl, _) = g.required_lens().unwrap();
                let b: Vec<bf16> = rng.vec(bl);
                let steps = k.div_ceil(2);
                for (s0, pc) in [
                    (0, steps),
                    (steps / 3, steps - steps / 3),
                    (0, steps.min(17)),
                ] {
                    if pc == 0 {
                        continue;
                    }
                    let len = n.div_ceil(pairs::NR) * pc * pairs::NR;
                    let mut want = vec![0xDEAD_BEEFu32; len];
                    let mut got = want.clone();
                    pairs::pack_b(&g, &b, &mut want, s0, pc);
                    // SAFETY: avx512f detected above; g describes b; the
                    // buffer is sized as pack_b's.
                    unsafe { super::x86::pack_b_pairs(&g, &b, &mut got, s0, pc) };
                    assert_eq!(got, want, "{g:?} s0={s0} pc={pc}");
                }
            }
        }
    }
}

/// The AVX2 f32-panel packer of bf16 B writes the same bits as the
/// portable one (NaNs, infinities and subnormals among the values).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_panel_packing_matches_portable() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("avx2 not available: AVX2 panel packing not run");
        return;
    }
    let mut rng = Rng(23);
    let specials = [0x7FC1u16, 0xFF81, 0x7F80, 0x0001, 0x8000, 0x7FFF];
    for &(n, k) in &[
        (16, 1),
        (32, 96),
        (40, 33),
        (96, 576),
        (17, 64),
        (128, 128),
        (15, 40),
        (48, 35),
    ] {
        for layout in [BLayout::KN, BLayout::NK] {
            for pad in [0, 3] {
                let mut g = Gemm::dense(6, n, k, layout, AccumMode::Overwrite);
                g.ldb += pad;
                let (_, bl, _) = g.required_lens().unwrap();
                let mut b: Vec<bf16> = rng.vec(bl);
                for (i, s) in specials.iter().enumerate() {
                    if let Some(x) = b.get_mut(i * 7) {
                        *x = bf16::from_bits(*s);
                    }
                }
                for (s0, pc) in [(0, k), (k / 3, k - k / 3), (0, k.min(13))] {
                    if pc == 0 {
                        continue;
                    }
                    let len = n.div_ceil(panels::NR) * pc * panels::NR;
                    let mut want = vec![f32::from_bits(0xDEAD_BEEF); len];
                    let mut got = want.clone();
                    panels::pack_b(&g, &b, &mut want, s0, pc);
                    // SAFETY: avx2 detected above; g describes b; the
                    // buffer is sized as pack_b's.
                    unsafe { super::x86::pack_b_panels_bf16(&g, &b, &mut got, s0, pc) };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{g:?} s0={s0} pc={pc}");
                }
            }
        }
    }
}

/// Asking the caches for memory ahead (`matmul_with_path_ahead`) changes
/// no bit of C on any path this CPU has, bf16 and f16, with an `ahead`
/// shorter, as long as and far longer than the call's tiles.
#[test]
fn the_ahead_hint_changes_no_result() {
    fn case<T: CubeInput>(seed: u64) {
        let mut rng = Rng(seed);
        for layout in [BLayout::KN, BLayout::NK] {
            let g = Gemm::dense(64, 96, 130, layout, AccumMode::Overwrite);
            let (al, bl, cl) = g.required_lens().unwrap();
            let a: Vec<T> = rng.vec(al);
            let b: Vec<T> = rng.vec(bl);
            let after: Vec<T> = rng.vec(3 * bl);
            for path in [
                MatmulPath::Scalar,
                MatmulPath::Avx2Fma,
                MatmulPath::Avx512Bf16,
            ] {
                if !path.is_supported() {
                    continue;
                }
                let mut want = vec![0f32; cl];
                matmul_with_path(path, &g, &a, &b, &mut want).unwrap();
                for len in [1, bl, 3 * bl] {
                    let mut got = vec![f32::NAN; cl];
                    matmul_with_path_ahead(path, &g, &a, &b, &mut got, &after[..len]).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{path} {layout:?} ahead {len}");
                }
            }
        }
    }
    case::<bf16>(31);
    case::<f16>(37);
}

/// `AddAfter` gives, bit for bit, C plus what `Overwrite` computes (the
/// L0C → GM add it stands for), on every path, edge tiles, strided C and
/// more K than one block (the scratch-C fallback); padding is untouched.
#[test]
fn add_after_is_overwrite_then_add_on_every_path() {
    let mut shapes = SHAPES.to_vec();
    shapes.extend([(128, 128, 128), (37, 45, 600), (16, 32, 1100)]);
    for (n_case, &(m, n, k)) in shapes.iter().enumerate() {
        for layout in [BLayout::KN, BLayout::NK] {
            let mut g = Gemm::dense(m, n, k, layout, AccumMode::Overwrite);
            g.ldc = n + 3;
            let (al, bl, cl) = g.required_lens().unwrap();
            let mut rng = Rng(0x5EED ^ (n_case as u64) << 8 | 1);
            let a: Vec<bf16> = rng.vec(al);
            let b: Vec<bf16> = rng.vec(bl);
            let c0: Vec<f32> = (0..cl).map(|_| rng.next_f32() * 8.0).collect();
            let mut all = runners::<bf16>();
            all.extend(bf16_extra());
            for (name, run) in all {
                let mut ov = vec![0f32; cl];
                run(&g, &a, &b, &mut ov).unwrap();
                let mut c = c0.clone();
                let ga = Gemm {
                    mode: AccumMode::AddAfter,
                    ..g
                };
                run(&ga, &a, &b, &mut c).unwrap();
                for i in 0..m {
                    for j in 0..g.ldc {
                        let idx = i * g.ldc + j;
                        if idx >= cl {
                            continue;
                        }
                        let want = if j < n { c0[idx] + ov[idx] } else { c0[idx] };
                        assert_eq!(
                            c[idx].to_bits(),
                            want.to_bits(),
                            "{name} {ga:?}: C[{i},{j}]"
                        );
                    }
                }
            }
        }
    }
}
