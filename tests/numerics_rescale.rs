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
