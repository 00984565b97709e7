//! The exponent add's exactness for *every* step `n` in `[-255, 0]` (the
//! sampled runtime and JIT tests cover the eight `CHECKED_N` and a few
//! random ones): the runtime's scalar `exp2_scale_bits` and the JIT-emitted
//! SIMD loop, both against the definition `exp2_scale_reference`, on every
//! exponent edge pattern and a slice of random patterns. The exhaustive
//! runs (all 2^32 inputs) are the `rescale_exhaustive` and
//! `jit_rescale_exhaustive` examples (see `docs/NUMERICS.md`).

use amla::compiler::codegen::rescale::JitRescale;
use amla::runtime::rescale::{exp2_scale_bits, exp2_scale_reference};

/// Every exponent with mantissas 0, 1, 2, mid, mid+1, all-ones − 1,
/// all-ones and an odd one, both signs: 4096 patterns.
fn edges() -> Vec<u32> {
    let mut v = Vec::new();
    for e in 0u32..=255 {
        for m in [
            0u32, 1, 2, 0x40_0000, 0x40_0001, 0x7F_FFFE, 0x7F_FFFF, 0x12_3457,
        ] {
            for s in [0u32, 0x8000_0000] {
                v.push(s | (e << 23) | m);
            }
        }
    }
    v
}

#[test]
fn every_step_in_range_is_exact_on_every_exponent_edge() {
    let j = JitRescale::new().unwrap();
    let mut xs = edges();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..(1 << 12) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        xs.push(s as u32);
    }
    xs.push(0x3F80_0001); // odd length: the scalar tail
    let mut checked = 0u64;
    for n in -255..=0 {
        let mut got = xs.clone();
        j.apply(&mut got, n);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = exp2_scale_reference(f32::from_bits(x), n).to_bits();
            assert_eq!(
                exp2_scale_bits(f32::from_bits(x), n).to_bits(),
                want,
                "runtime: x = {x:#010x}, n = {n}"
            );
            assert_eq!(g, want, "JIT: x = {x:#010x}, n = {n}");
            checked += 1;
        }
    }
    assert_eq!(checked, 256 * xs.len() as u64);
}

#[test]
fn clamping_the_step_at_minus_255_is_exact() {
    // Every finite f32 times 2^-255 flushes to ±0, so any n below -255 may
    // be replaced by -255 (what the pass does).
    let j = JitRescale::new().unwrap();
    let xs = edges();
    for n in [-256, -300, -1000, i32::MIN] {
        let mut a = xs.clone();
        let mut b = xs.clone();
        j.apply(&mut a, n);
        j.apply(&mut b, -255);
        assert_eq!(a, b, "n = {n}");
        for (&x, &r) in xs.iter().zip(&b) {
            let f = f32::from_bits(x);
            if f.is_finite() {
                assert_eq!(r, x & 0x8000_0000, "x = {x:#010x}");
            }
        }
    }
}

/// The fractional exponent add (`atomic_exp_add` with f32 steps, CANN's
/// `(n + eps) · 2^23`): the JIT loop against the runtime's scalar
/// `exp2_frac_bits` and both against the float64 model
/// `exp2_frac_reference`, bit for bit, for whole, fractional and
/// out-of-range steps, NaN, on every exponent edge and random patterns.
#[test]
fn the_fractional_step_matches_its_float64_model_in_jit_and_runtime() {
    use amla::compiler::codegen::rescale::JitFracRescale;
    use amla::runtime::rescale::{exp2_frac_bits, exp2_frac_reference, frac_delta};
    let j = JitFracRescale::new().unwrap();
    let mut xs = edges();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..(1 << 12) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        xs.push(s as u32);
    }
    xs.push(0x3F80_0001); // odd length: the scalar tail
    let mut steps = vec![
        0.0f32,
        -1.0,
        -30.0,
        -255.0,
        -300.0,
        1.0,
        5.0,
        f32::NAN,
        1e-6,
        -1e-6,
        0.004_2,
        -0.004_2,
        -29.995,
        -0.5,
        0.5,
        -126.3,
    ];
    for i in 0..64 {
        steps.push(-30.0 * (i as f32) / 64.0 + 1.5 * ((i * 37 % 17) as f32 / 17.0 - 0.5) * 0.01);
    }
    let mut checked = 0u64;
    for &x in &steps {
        let mut buf = xs.clone();
        j.apply(&mut buf, x);
        let d = frac_delta(x);
        for (&b, &got) in xs.iter().zip(&buf) {
            let v = f32::from_bits(b);
            let rt = exp2_frac_bits(v, d).to_bits();
            let model = exp2_frac_reference(v, d).to_bits();
            assert_eq!(got, rt, "JIT vs runtime: x={x} bits={b:#x}");
            assert_eq!(rt, model, "runtime vs model: x={x} bits={b:#x}");
            checked += 1;
        }
    }
    assert!(checked > 600_000, "{checked}");
    // Whole steps are the exact integer add.
    for n in [0, -1, -23, -126, -255] {
        let mut buf = xs.clone();
        j.apply(&mut buf, n as f32);
        for (&b, &got) in xs.iter().zip(&buf) {
            assert_eq!(got, exp2_scale_bits(f32::from_bits(b), n).to_bits());
        }
    }
}
