//! `e^x` over an f32 slice in place, for the fused Vector loops: the JIT
//! stores a row's `exp` inputs to a buffer and calls [`amla_rt_exp_f32`]
//! once per row instead of evaluating the polynomial 4 lanes at a time in
//! Cranelift's 128-bit SIMD.
//!
//! # The definition (bit-identical to the JIT's)
//!
//! Every path computes, lane by lane, exactly the IEEE single-precision
//! operations of the compiler's `codegen::simd_math::exp_f32x4`, in the same
//! order and without FMA contraction, so the result is the same bits for all
//! 2^32 inputs (`cargo run --release -p amla --example jit_exp_exhaustive`):
//!
//! 1. `xc = x < -104 ? -104 : x` (a compare and a blend; NaN stays `x`);
//! 2. `s = xc·log2(e) + 1.5·2^23`, `nf = s − 1.5·2^23` (round to nearest
//!    even), `n = bits(s) − bits(1.5·2^23)` (i32, wrapping);
//! 3. `r = (xc − nf·c1) − nf·c2` (Cody–Waite, Cephes `c1`, `c2`);
//! 4. `p` = Horner of the Cephes `expf` coefficients in `r`,
//!    `y = ((p·r²) + r) + 1`;
//! 5. `y · 2^(n>>1) · 2^(n − (n>>1))` (two multiplies by powers of two built
//!    from the exponent bits, so subnormal results round once each);
//! 6. `x > 88.72284` → `+inf`; a NaN `x` is returned as it is (payload and
//!    sign kept).
//!
//! Lanes that end up replaced in step 6 compute garbage on the way (integer
//! ops wrap); no float operation traps.
//!
//! # Paths
//!
//! Chosen once per process ([`detected_path`], cached) from the CPU's
//! features: [`ExpPath::Avx512`] (16 lanes, masked tail), [`ExpPath::Avx2`]
//! (8 lanes, the tail through an 8-lane stack copy), [`ExpPath::Scalar`]
//! (portable, one element at a time). [`exp_in_place_with`] runs a given path
//! (the tests run every supported one against the scalar path and against
//! the JIT's `exp_f32x4`).

use std::sync::OnceLock;

/// Inputs below this are clamped to it (`e^-104` is below the smallest
/// subnormal).
const CLAMP_LO: f32 = -104.0;
/// Inputs above this give `+inf`.
const OVER: f32 = 88.722_84;
/// `1.5 · 2^23`: adding it rounds `|t| <= 2^22` to an integer.
const SHIFTER: f32 = 12_582_912.0;
/// Cody–Waite split of `ln 2` (Cephes).
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial, highest degree first.
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// An implementation of [`exp_in_place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpPath {
    /// 16 lanes of AVX-512F.
    Avx512,
    /// 8 lanes of AVX2.
    Avx2,
    /// Portable scalar code.
    Scalar,
}

impl ExpPath {
    /// All paths, fastest first.
    pub const ALL: [ExpPath; 3] = [ExpPath::Avx512, ExpPath::Avx2, ExpPath::Scalar];

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            ExpPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            ExpPath::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            ExpPath::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Name for reports: `avx512`, `avx2`, `scalar`.
    pub const fn name(self) -> &'static str {
        match self {
            ExpPath::Avx512 => "avx512",
            ExpPath::Avx2 => "avx2",
            ExpPath::Scalar => "scalar",
        }
    }
}

/// The paths this CPU supports, fastest first.
pub fn available_paths() -> Vec<ExpPath> {
    ExpPath::ALL
        .into_iter()
        .filter(|p| p.is_supported())
        .collect()
}

/// The fastest supported path (detected once).
pub fn detected_path() -> ExpPath {
    static BEST: OnceLock<ExpPath> = OnceLock::new();
    *BEST.get_or_init(|| {
        ExpPath::ALL
            .into_iter()
            .find(|p| p.is_supported())
            .unwrap_or(ExpPath::Scalar)
    })
}

/// `e^x` of one f32: the definition (steps 1–6 of the module comment).
pub fn exp_scalar(x: f32) -> f32 {
    let xc = if x < CLAMP_LO { CLAMP_LO } else { x };
    let t = xc * std::f32::consts::LOG2_E;
    let s = t + SHIFTER;
    let nf = s - SHIFTER;
    let n = (s.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let r = xc - nf * C1;
    let r = r - nf * C2;
    let mut p = POLY[0];
    for &c in &POLY[1..] {
        p = p * r + c;
    }
    let rr = r * r;
    let y = p * rr;
    let y = y + r;
    let y = y + 1.0;
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    let pow2 = |e: i32| f32::from_bits(e.wrapping_add(127).wrapping_shl(23) as u32);
    let y = y * pow2(n1);
    let y = y * pow2(n2);
    let y = if x > OVER { f32::INFINITY } else { y };
    if x.is_nan() { x } else { y }
}

/// `xs[i] = e^xs[i]` on the detected path.
pub fn exp_in_place(xs: &mut [f32]) {
    exp_in_place_with(detected_path(), xs);
}

/// `xs[i] = e^xs[i]` on `path`.
///
/// # Panics
/// If this CPU does not support `path`.
pub fn exp_in_place_with(path: ExpPath, xs: &mut [f32]) {
    assert!(
        path.is_supported(),
        "exp path {} not supported here",
        path.name()
    );
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: avx512f checked above.
        ExpPath::Avx512 => unsafe { x86::exp_avx512(xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: avx2 checked above.
        ExpPath::Avx2 => unsafe { x86::exp_avx2(xs) },
        _ => xs.iter_mut().for_each(|x| *x = exp_scalar(*x)),
    }
}

/// JIT entry: `p[i] = e^p[i]` for `i < n` on the detected path. No context,
/// no status, no allocation.
///
/// # Safety
/// `p` must be valid for reads and writes of `n` f32 (any alignment of 4)
/// and not be accessed by anything else during the call; `n == 0` allows
/// any `p`.
pub unsafe extern "C" fn amla_rt_exp_f32(p: *mut f32, n: u64) {
    if n == 0 {
        return;
    }
    // SAFETY: the caller's contract.
    let xs = unsafe { std::slice::from_raw_parts_mut(p, n as usize) };
    exp_in_place(xs);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{C1, C2, CLAMP_LO, OVER, POLY, SHIFTER};

    /// 16 lanes of the definition.
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let lo = _mm512_set1_ps(CLAMP_LO);
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
        let xc = _mm512_mask_blend_ps(below, x, lo);
        let t = _mm512_mul_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let k = _mm512_set1_ps(SHIFTER);
        let s = _mm512_add_ps(t, k);
        let nf = _mm512_sub_ps(s, k);
        let n = _mm512_sub_epi32(
            _mm512_castps_si512(s),
            _mm512_set1_epi32(SHIFTER.to_bits() as i32),
        );
        let r = _mm512_sub_ps(xc, _mm512_mul_ps(nf, _mm512_set1_ps(C1)));
        let r = _mm512_sub_ps(r, _mm512_mul_ps(nf, _mm512_set1_ps(C2)));
        let mut p = _mm512_set1_ps(POLY[0]);
        for &c in &POLY[1..] {
            p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
        }
        let rr = _mm512_mul_ps(r, r);
        let y = _mm512_mul_ps(p, rr);
        let y = _mm512_add_ps(y, r);
        let y = _mm512_add_ps(y, _mm512_set1_ps(1.0));
        let n1 = _mm512_srai_epi32::<1>(n);
        let n2 = _mm512_sub_epi32(n, n1);
        let bias = _mm512_set1_epi32(127);
        let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
        let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
        let y = _mm512_mul_ps(_mm512_mul_ps(y, s1), s2);
        let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(OVER));
        let y = _mm512_mask_blend_ps(over, y, _mm512_set1_ps(f32::INFINITY));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_blend_ps(nan, y, x)
    }

    /// 8 lanes of the definition.
    #[target_feature(enable = "avx2")]
    fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(CLAMP_LO);
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo);
        let xc = _mm256_blendv_ps(x, lo, below);
        let t = _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E));
        let k = _mm256_set1_ps(SHIFTER);
        let s = _mm256_add_ps(t, k);
        let nf = _mm256_sub_ps(s, k);
        let n = _mm256_sub_epi32(
            _mm256_castps_si256(s),
            _mm256_set1_epi32(SHIFTER.to_bits() as i32),
        );
        let r = _mm256_sub_ps(xc, _mm256_mul_ps(nf, _mm256_set1_ps(C1)));
        let r = _mm256_sub_ps(r, _mm256_mul_ps(nf, _mm256_set1_ps(C2)));
        let mut p = _mm256_set1_ps(POLY[0]);
        for &c in &POLY[1..] {
            p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
        }
        let rr = _mm256_mul_ps(r, r);
        let y = _mm256_mul_ps(p, rr);
        let y = _mm256_add_ps(y, r);
        let y = _mm256_add_ps(y, _mm256_set1_ps(1.0));
        let n1 = _mm256_srai_epi32::<1>(n);
        let n2 = _mm256_sub_epi32(n, n1);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        let y = _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
        let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(OVER));
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over);
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        _mm256_blendv_ps(y, x, nan)
    }

    /// # Safety
    /// The CPU must support avx512f.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_avx512(xs: &mut [f32]) {
        // Two independent vectors a step: their dependency chains (about 25
        // operations each) overlap.
        let mut pairs = xs.chunks_exact_mut(32);
        for c in &mut pairs {
            // SAFETY: `c` holds 32 f32; unaligned loads and stores.
            unsafe {
                let v0 = _mm512_loadu_ps(c.as_ptr());
                let v1 = _mm512_loadu_ps(c.as_ptr().add(16));
                let (r0, r1) = (exp16(v0), exp16(v1));
                _mm512_storeu_ps(c.as_mut_ptr(), r0);
                _mm512_storeu_ps(c.as_mut_ptr().add(16), r1);
            }
        }
        let mut chunks = pairs.into_remainder().chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 f32; unaligned load and store.
            unsafe {
                let v = _mm512_loadu_ps(c.as_ptr());
                _mm512_storeu_ps(c.as_mut_ptr(), exp16(v));
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let m: __mmask16 = (1u32 << tail.len()) as u16 - 1;
            // SAFETY: masked-off lanes are neither read nor written (no
            // fault either), the `tail.len()` others are `tail`'s.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, tail.as_ptr());
                _mm512_mask_storeu_ps(tail.as_mut_ptr(), m, exp16(v));
            }
        }
    }

    /// # Safety
    /// The CPU must support avx2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn exp_avx2(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 f32; unaligned load and store.
            unsafe {
                let v = _mm256_loadu_ps(c.as_ptr());
                _mm256_storeu_ps(c.as_mut_ptr(), exp8(v));
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut t = [0f32; 8];
            t[..tail.len()].copy_from_slice(tail);
            // SAFETY: `t` holds 8 f32.
            unsafe {
                let v = _mm256_loadu_ps(t.as_ptr());
                _mm256_storeu_ps(t.as_mut_ptr(), exp8(v));
            }
            tail.copy_from_slice(&t[..tail.len()]);
        }
    }
}

/// Inputs that exercise every branch of the definition: NaN payloads of
/// both signs, ±inf, ±0, subnormals, the clamp and overflow thresholds ±1
/// and ±2 ulp, values around `k·ln2/2` (where the rounding of `n` flips)
/// for every `k` of the range, and `count` pseudo-random bit patterns and
/// pseudo-random values in `[-110, 95]`. Deterministic (fixed seed).
pub fn sample_inputs(count: usize) -> Vec<f32> {
    let mut v: Vec<u32> = vec![
        0x7FC0_0000,
        0xFFC0_0000,
        0x7F80_0001,
        0x7FA5_5A5A,
        0xFF80_0001,
        0xFFFF_FFFF,
        0x7FFF_FFFF,
        0x7F80_0000,
        0xFF80_0000,
        0x0000_0000,
        0x8000_0000,
        0x0000_0001,
        0x8000_0001,
        0x007F_FFFF,
        0x807F_FFFF,
        0x0080_0000,
        0x8080_0000,
        0x7F7F_FFFF,
        0xFF7F_FFFF,
    ];
    let around = |v: &mut Vec<u32>, x: f32| {
        for d in -2i32..=2 {
            v.push(x.to_bits().wrapping_add_signed(d));
        }
    };
    for x in [
        CLAMP_LO,
        OVER,
        -OVER,
        -87.336_55,
        -103.972_08,
        88.0,
        -88.0,
        1.0,
        -1.0,
    ] {
        around(&mut v, x);
    }
    let ln2 = std::f64::consts::LN_2;
    for k in -300i32..=260 {
        around(&mut v, (k as f64 * ln2 / 2.0) as f32);
    }
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..count {
        v.push(next() as u32);
        let u = (next() >> 40) as f32 / (1u64 << 24) as f32;
        v.push((-110.0 + 205.0 * u).to_bits());
    }
    v.into_iter().map(f32::from_bits).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(xs: &[f32]) -> Vec<u32> {
        xs.iter().map(|x| x.to_bits()).collect()
    }

    /// Every supported path gives the scalar path's bits on the sampled
    /// inputs, at every slice length and offset 0..=17 (full vectors and
    /// every tail length).
    #[test]
    fn every_path_matches_scalar() {
        let xs = sample_inputs(100_000);
        let want: Vec<u32> = xs.iter().map(|&x| exp_scalar(x).to_bits()).collect();
        let paths = available_paths();
        assert!(paths.contains(&ExpPath::Scalar));
        for &p in &paths {
            let mut got = xs.clone();
            exp_in_place_with(p, &mut got);
            let got = bits(&got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{}: exp({:#010x})", p.name(), xs[i].to_bits());
            }
            for off in 0..=17 {
                for len in 0..=40 {
                    let mut buf = xs[off..off + len].to_vec();
                    exp_in_place_with(p, &mut buf);
                    assert_eq!(
                        bits(&buf),
                        want[off..off + len],
                        "{} off={off} len={len}",
                        p.name()
                    );
                }
            }
        }
        if !ExpPath::Avx512.is_supported() || !ExpPath::Avx2.is_supported() {
            eprintln!("paths run here: {paths:?}");
        }
    }

    /// The definition's specials, and accuracy against f64 on the sampled
    /// finite range (the JIT's sweep bound: 2 ulp).
    #[test]
    fn scalar_specials_and_accuracy() {
        assert_eq!(exp_scalar(0.0), 1.0);
        assert_eq!(exp_scalar(-0.0), 1.0);
        assert_eq!(exp_scalar(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_scalar(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_scalar(-200.0), 0.0);
        assert_eq!(exp_scalar(89.0), f32::INFINITY);
        for b in [0x7FC0_0000u32, 0xFFA5_5A5A, 0x7F80_0001] {
            assert_eq!(exp_scalar(f32::from_bits(b)).to_bits(), b);
        }
        let mut worst = 0f64;
        for x in sample_inputs(20_000) {
            if !(-87.0..=88.0).contains(&x) {
                continue;
            }
            let y = exp_scalar(x) as f64;
            let r = (x as f64).exp();
            let ulp = (r as f32).to_bits() as f64;
            let ulp = f32::from_bits(ulp as u32 + 1) as f64 - f32::from_bits(ulp as u32) as f64;
            worst = worst.max((y - r).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
    }

    /// The JIT entry point works on an unaligned slice and on `n == 0`.
    #[test]
    fn entry_point() {
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 4.0).collect();
        let want: Vec<u32> = v[1..].iter().map(|&x| exp_scalar(x).to_bits()).collect();
        // SAFETY: v[1..] is 36 valid f32.
        unsafe { amla_rt_exp_f32(v.as_mut_ptr().add(1), 36) };
        assert_eq!(bits(&v[1..]), want);
        // SAFETY: n == 0 reads nothing.
        unsafe { amla_rt_exp_f32(std::ptr::null_mut(), 0) };
    }
}
