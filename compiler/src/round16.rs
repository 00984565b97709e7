//! Rounding an f64 to bf16 or f16, to nearest even, correctly.
//!
//! `half`'s `bf16::from_f64` and `f16::from_f64` drop the low 32 bits of
//! the f64 before rounding, so a value whose only bits below the rounding
//! position lie there looks like a tie and rounds to even, sometimes the
//! wrong way: for an f32 `x` with the round bit set and nothing below it
//! but its last 3 mantissa bits, `bf16::from_f64(x as f64)` differs from
//! `bf16::from_f32(x)` (which is right, and is what the JIT computes).
//! Here the f64 is first rounded to f32 *to odd* (truncated, then the last
//! bit set when anything was dropped), which keeps a sticky bit below every
//! bit a 16-bit type keeps; `half`'s f32 conversions then round correctly.

use half::{bf16, f16};

/// `x` rounded to f32 to odd: exact values stay, others become the
/// neighbour toward zero with its last mantissa bit set.
fn to_f32_odd(x: f64) -> f32 {
    if x.is_nan() {
        return x as f32;
    }
    let t = x as f32;
    if f64::from(t) == x {
        return t;
    }
    let mut bits = t.to_bits();
    // Nearest rounding went away from zero: step back toward zero (the
    // bit patterns of one sign are ordered by magnitude; an infinity steps
    // back to the largest finite value).
    if f64::from(t).abs() > x.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// `x` rounded to the nearest bf16, ties to even.
pub fn bf16_from_f64(x: f64) -> bf16 {
    bf16::from_f32(to_f32_odd(x))
}

/// `x` rounded to the nearest f16, ties to even.
pub fn f16_from_f64(x: f64) -> f16 {
    f16::from_f32(to_f32_odd(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_values_round_as_from_f32_does() {
        // Round bit set, nothing below it in the f64's high word, the last
        // 3 mantissa bits of the f32 set: above the tie.
        let x = f32::from_bits(0x3FAC_8001);
        assert_eq!(bf16_from_f64(f64::from(x)), bf16::from_f32(x));
        assert_ne!(
            bf16::from_f64(f64::from(x)),
            bf16::from_f32(x),
            "half's bug is gone: drop this module"
        );
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits(state as u32);
            if x.is_nan() {
                continue;
            }
            assert_eq!(
                bf16_from_f64(f64::from(x)).to_bits(),
                bf16::from_f32(x).to_bits(),
                "{x:e}"
            );
            assert_eq!(
                f16_from_f64(f64::from(x)).to_bits(),
                f16::from_f32(x).to_bits(),
                "{x:e}"
            );
        }
    }

    #[test]
    fn f64_values_round_to_nearest_even() {
        // Exactly between two bf16 neighbours of 1.0: to even (1.0); a hair
        // above, up.
        let tie = 1.0 + 2f64.powi(-8);
        assert_eq!(bf16_from_f64(tie), bf16::from_f32(1.0));
        assert_eq!(
            bf16_from_f64(tie + 2f64.powi(-40)).to_f64(),
            1.0 + 2f64.powi(-7)
        );
        assert_eq!(
            bf16_from_f64(-(tie + 2f64.powi(-40))).to_f64(),
            -(1.0 + 2f64.powi(-7))
        );
        assert_eq!(
            f16_from_f64(1.0 + 2f64.powi(-11) + 2f64.powi(-45)).to_f64(),
            1.0 + 2f64.powi(-10)
        );
        assert!(bf16_from_f64(1e300).is_infinite() && f16_from_f64(1e6).is_infinite());
        assert!(bf16_from_f64(f64::NAN).is_nan());
        assert_eq!(bf16_from_f64(1e-300).to_f64(), 0.0);
    }
}
