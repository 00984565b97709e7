//! AMLA's MUL-to-ADD rescale: multiplying an f32 by `2^n` by adding `n << 23`
//! to its bits.
//!
//! Contract of [`exp2_scale_bits`]: `n = 0` is the identity (adding `0 << 23`
//! to the bits changes nothing, subnormals included, as the chip's integer
//! add does: the running maximum did not move, nothing is rescaled). For
//! every finite `x` and every other integer `n` in `[-255, 0]`, the result is
//! bit-identical to `ftz(x · 2^n)` evaluated in f32 with flush-to-zero
//! semantics:
//! - subnormal inputs count as ±0 (denormals-are-zero),
//! - a result whose magnitude is below `f32::MIN_POSITIVE` (2^-126) — i.e.
//!   whose exponent underflows — becomes ±0 with the sign of `x`. Because
//!   `x · 2^n` is exact before any range limit, this is the IEEE "tiny"
//!   condition under both tininess rules, which is what hardware FTZ (x86
//!   MXCSR.FZ) flushes; note it also flushes `x` with an all-ones mantissa
//!   that a non-FTZ multiply would round *up* to 2^-126.
//! - ±0 stays ±0; ±inf and NaN are returned unchanged (same bits).
//!
//! For `n > 0` the same definition holds (overflow gives ±inf), so the
//! function is total. [`exp2_scale_reference`] is that definition computed
//! in f64; the tests and `examples/rescale_exhaustive.rs` prove the two
//! bit-identical (exhaustively over all 2^32 inputs for the listed `n`).

use crate::error::RuntimeError;

const EXP_MASK: u32 = 0x7F80_0000;
const SIGN: u32 = 0x8000_0000;

/// `x · 2^n` by integer addition on the exponent bits, with the guards above
/// (`n = 0`: `x` unchanged).
#[inline]
pub fn exp2_scale_bits(x: f32, n: i32) -> f32 {
    if n == 0 {
        return x;
    }
    let bits = x.to_bits();
    let e = ((bits & EXP_MASK) >> 23) as i32;
    let sign = bits & SIGN;
    let n = n.clamp(-512, 512);
    let ne = e + n;
    // Wrapping is harmless: this value is used only when 1 <= ne <= 254,
    // where the sum stays inside the exponent field.
    let scaled = bits.wrapping_add((n as u32) << 23);
    let out = if e == 255 {
        bits
    } else if e == 0 || ne <= 0 {
        sign
    } else if ne >= 255 {
        sign | EXP_MASK
    } else {
        scaled
    };
    f32::from_bits(out)
}

/// The definition [`exp2_scale_bits`] must match: `x` itself for `n = 0`,
/// else the exact product in f64, then flush-to-zero below 2^-126 (and
/// subnormal inputs as zero).
pub fn exp2_scale_reference(x: f32, n: i32) -> f32 {
    if !x.is_finite() || n == 0 {
        return x;
    }
    if x == 0.0 || x.is_subnormal() {
        return 0f32.copysign(x);
    }
    let n = n.clamp(-600, 600);
    let r = f64::from(x) * f64::from_bits(((1023 + n) as u64) << 52);
    if r.abs() < f64::from(f32::MIN_POSITIVE) {
        0f32.copysign(x)
    } else {
        r as f32
    }
}

/// The range [`frac_delta`] clamps a fractional exponent step to: the lower
/// end flushes every finite f32 (as `n = -255` does), the upper end keeps
/// `bits + delta` inside i32 for every finite input.
pub const FRAC_STEP_RANGE: (f32, f32) = (-255.0, 1.0);

/// The integer added to an f32's bits for a fractional exponent step `x`
/// (CANN's `(n + eps) · 2^23`): `x` clamped to [`FRAC_STEP_RANGE`] (NaN
/// counts as 0), times 2^23 in f32 (exact: a power of two), rounded to the
/// nearest integer, ties to even.
#[inline]
pub fn frac_delta(x: f32) -> i32 {
    let x = if x.is_nan() { 0.0 } else { x };
    let x = x.clamp(FRAC_STEP_RANGE.0, FRAC_STEP_RANGE.1);
    (x * 8_388_608.0).round_ties_even() as i32
}

/// The fractional exponent add: adds `delta` to the magnitude bits of `x`
/// (sign kept). For `delta = n · 2^23` it is [`exp2_scale_bits`]`(x, n)`
/// bit for bit; otherwise it is *not* a multiplication: with
/// `x = 2^e · (1 + f)` and `delta = d · 2^23`, `0 ≤ d < 1 - f` gives
/// `2^e · (1 + f + d)`, i.e. `x · (1 + d / (1 + f))`, which depends on the
/// mantissa `f`. `delta = 0` (after the clamp) is the identity, as
/// `n = 0` is for the integer add. Otherwise guards as for the integer add:
/// ±inf and NaN unchanged; ±0 and subnormal inputs give ±0; a result below the smallest normal
/// (magnitude bits < `0x0080_0000`) flushes to ±0; a result at or above
/// `0x7F80_0000` becomes ±inf. `delta` must come from [`frac_delta`] (so
/// `bits + delta` cannot overflow i32); larger values are clamped to its
/// range.
#[inline]
pub fn exp2_frac_bits(x: f32, delta: i32) -> f32 {
    const LIM: i32 = 255 << 23;
    let delta = delta.clamp(-LIM, 1 << 23);
    if delta == 0 {
        return x;
    }
    let bits = x.to_bits();
    let sign = bits & SIGN;
    let mag = (bits & !SIGN) as i32;
    let e = mag >> 23;
    // Cannot overflow for e < 255 (mag < 0x7F80_0000, delta <= 2^23); for
    // e = 255 the sum is not used.
    let m = mag.wrapping_add(delta);
    let out = if e == 255 {
        bits
    } else if e == 0 || m < (1 << 23) {
        sign
    } else if m >= EXP_MASK as i32 {
        sign | EXP_MASK
    } else {
        sign | m as u32
    };
    f32::from_bits(out)
}

/// The definition [`exp2_frac_bits`] must match, computed on real numbers
/// in f64 rather than on bits: an f32 magnitude `|x| = 2^(E - 127)·(1 + F)`
/// is the point `u = E + F` of the piecewise-linear "bit line"; the add
/// moves it to `u + delta / 2^23` and maps it back (`0` below `u = 1`,
/// `inf` at `u ≥ 255`); `x` itself for `delta = 0`.
pub fn exp2_frac_reference(x: f32, delta: i32) -> f32 {
    if !x.is_finite() || delta == 0 {
        return x;
    }
    if x == 0.0 || x.is_subnormal() {
        return 0f32.copysign(x);
    }
    let delta = delta.clamp(-(255 << 23), 1 << 23);
    let a = f64::from(x).abs();
    let e = a.log2().floor();
    // Exact: a / 2^e is in [1, 2) (a power-of-two division).
    let f = a / e.exp2() - 1.0;
    let u = (e + 127.0) + f + f64::from(delta) / 8_388_608.0;
    let r = if u < 1.0 {
        0.0
    } else if u >= 255.0 {
        f64::INFINITY
    } else {
        let ue = u.floor();
        (ue - 127.0).exp2() * (1.0 + (u - ue))
    };
    (r as f32).copysign(x)
}

/// Applies `row r *= 2^n[r]` (via [`exp2_scale_bits`]) to a `[rows, cols]`
/// region of `data` whose rows start `stride` elements apart.
pub fn exp2_scale_rows(
    data: &mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
    n: &[i32],
) -> Result<(), RuntimeError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if stride < cols {
        return Err(RuntimeError::BadArgument(format!(
            "exp2_scale_rows: stride {stride} < cols {cols}"
        )));
    }
    let end = (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(cols))
        .ok_or_else(|| RuntimeError::BadArgument("exp2_scale_rows: size overflows".into()))?;
    if end > data.len() {
        return Err(RuntimeError::OutOfBounds {
            what: "exp2_scale_rows".into(),
            buffer: "data".into(),
            start: 0,
            end: end as u64,
            capacity: data.len() as u64,
        });
    }
    if n.len() < rows {
        return Err(RuntimeError::BadArgument(format!(
            "exp2_scale_rows: {} exponents for {rows} rows",
            n.len()
        )));
    }
    for (r, &nr) in n.iter().enumerate().take(rows) {
        for v in &mut data[r * stride..r * stride + cols] {
            *v = exp2_scale_bits(*v, nr);
        }
    }
    Ok(())
}

/// The `n` values the exhaustive and sampled checks always cover.
pub const CHECKED_N: [i32; 8] = [0, -1, -2, -23, -126, -127, -149, -255];

#[cfg(test)]
mod tests {
    use super::*;

    /// `x · 2^n` on the real FPU with MXCSR.FZ set (flush-to-zero), in steps
    /// of at most 2^-126 so every factor is a normal f32.
    #[cfg(target_arch = "x86_64")]
    fn hw_ftz(x: f32, n: i32) -> f32 {
        fn mul_ftz(a: f32, b: f32) -> f32 {
            let mut v = a;
            let mut save = 0u32;
            let mut tmp = 0u32;
            // SAFETY: the block saves MXCSR, sets FZ (bit 15), multiplies, and
            // restores MXCSR; both memory operands are live locals.
            unsafe {
                std::arch::asm!(
                    "stmxcsr [{s}]",
                    "mov {w:e}, [{s}]",
                    "or {w:e}, 0x8000",
                    "mov [{t}], {w:e}",
                    "ldmxcsr [{t}]",
                    "mulss {v}, {b}",
                    "ldmxcsr [{s}]",
                    s = in(reg) &mut save,
                    t = in(reg) &mut tmp,
                    w = out(reg) _,
                    v = inout(xmm_reg) v,
                    b = in(xmm_reg) b,
                    options(nostack),
                );
            }
            v
        }
        let mut v = x;
        let mut n = n;
        while n < -126 {
            v = mul_ftz(v, f32::from_bits(1 << 23));
            n += 126;
        }
        mul_ftz(v, f32::from_bits(((127 + n) as u32) << 23))
    }

    fn samples() -> Vec<u32> {
        let mut v = Vec::new();
        let mants = [
            0u32, 1, 2, 3, 0x40_0000, 0x40_0001, 0x7F_FFFE, 0x7F_FFFF, 0x55_5555, 0x2A_AAAA,
        ];
        for sign in [0u32, SIGN] {
            for e in 0..=255u32 {
                for &m in &mants {
                    v.push(sign | (e << 23) | m);
                }
            }
        }
        // Random bit patterns (xorshift), about two million.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2_000_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.push((s >> 16) as u32);
        }
        v
    }

    fn all_n() -> Vec<i32> {
        let mut ns = CHECKED_N.to_vec();
        let mut s = 12345u64;
        for _ in 0..8 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ns.push(-(((s >> 33) % 256) as i32));
        }
        ns
    }

    #[test]
    fn matches_reference_on_samples() {
        let xs = samples();
        for n in all_n() {
            let mut bad = 0u64;
            let mut first = None;
            for &b in &xs {
                let x = f32::from_bits(b);
                let got = exp2_scale_bits(x, n).to_bits();
                let want = exp2_scale_reference(x, n).to_bits();
                if got != want {
                    bad += 1;
                    first.get_or_insert((b, got, want));
                }
            }
            assert_eq!(
                bad, 0,
                "n = {n}: first mismatch (x, got, want) = {first:x?}"
            );
        }
    }

    /// For every `n` but 0: the FPU under FZ flushes a subnormal even when
    /// multiplied by 1, while a zero exponent step is no operation at all
    /// (`zero_step_is_the_identity`).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn reference_matches_hardware_ftz() {
        let xs = samples();
        for n in all_n().into_iter().filter(|&n| n != 0) {
            for &b in xs.iter().step_by(16) {
                let x = f32::from_bits(b);
                if x.is_nan() {
                    continue;
                }
                assert_eq!(
                    exp2_scale_reference(x, n).to_bits(),
                    hw_ftz(x, n).to_bits(),
                    "x = {b:#010x}, n = {n}"
                );
            }
        }
    }

    #[test]
    fn edges() {
        assert_eq!(exp2_scale_bits(0.0, -5).to_bits(), 0);
        assert_eq!(exp2_scale_bits(-0.0, -5).to_bits(), SIGN);
        assert_eq!(exp2_scale_bits(8.0, -3), 1.0);
        assert_eq!(exp2_scale_bits(-8.0, 0), -8.0);
        // Subnormal input flushes, keeping the sign (for a non-zero step).
        assert_eq!(
            exp2_scale_bits(f32::from_bits(SIGN | 5), -1).to_bits(),
            SIGN
        );
        // Smallest normal times 2^-1 underflows to zero.
        assert_eq!(exp2_scale_bits(f32::MIN_POSITIVE, -1).to_bits(), 0);
        // All-ones mantissa at the underflow edge flushes (FTZ), not 2^-126.
        assert_eq!(
            exp2_scale_bits(f32::from_bits(0x00FF_FFFF), -1).to_bits(),
            0
        );
        assert_eq!(exp2_scale_bits(f32::MAX, -255).to_bits(), 0);
        // MAX = 0x7F7F_FFFF (exponent 254); 2^-253 leaves exponent 1.
        assert_eq!(exp2_scale_bits(f32::MAX, -253).to_bits(), 0x00FF_FFFF);
        assert_eq!(exp2_scale_bits(f32::INFINITY, -7), f32::INFINITY);
        assert_eq!(exp2_scale_bits(f32::NEG_INFINITY, -255), f32::NEG_INFINITY);
        let nan = f32::from_bits(0x7FC0_1234);
        assert_eq!(exp2_scale_bits(nan, -3).to_bits(), 0x7FC0_1234);
        // n > 0 overflows to infinity.
        assert_eq!(exp2_scale_bits(f32::MAX, 1), f32::INFINITY);
        assert_eq!(exp2_scale_bits(-1.5, 2), -6.0);
    }

    #[test]
    fn frac_add_matches_its_float64_definition() {
        // Every sample pattern against deltas that are whole steps, pure
        // fractions (CANN's eps alone) and mixtures, both signs.
        let mut deltas: Vec<i32> = vec![0, 1, -1, 8, 1 << 22, -(1 << 22), (1 << 23) - 1];
        for x in [
            -30.0f32, -1.5, -0.75, -0.004_5, 0.003, 0.999, 1.0, -255.0, -254.9, -1.0e-6,
        ] {
            deltas.push(frac_delta(x));
        }
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..24 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            deltas.push(frac_delta(
                -((seed >> 40) as f32 / (1u64 << 24) as f32) * 40.0 + 0.5,
            ));
        }
        // The exponent edges and 200k random patterns (the f64 model is slow
        // in debug builds).
        let xs: Vec<u32> = samples().into_iter().take(5120 + 200_000).collect();
        for &d in &deltas {
            for &x in &xs {
                let x = f32::from_bits(x);
                let (got, want) = (exp2_frac_bits(x, d), exp2_frac_reference(x, d));
                assert!(
                    got.to_bits() == want.to_bits(),
                    "x={x:e} ({:#x}) d={d}: {got:e} vs {want:e}",
                    x.to_bits()
                );
            }
        }
    }

    #[test]
    fn frac_add_with_whole_steps_is_the_integer_add() {
        for n in all_n().into_iter().filter(|n| (-255..=1).contains(n)) {
            let d = frac_delta(n as f32);
            assert_eq!(d, n << 23);
            for &x in &samples() {
                let x = f32::from_bits(x);
                assert_eq!(
                    exp2_frac_bits(x, d).to_bits(),
                    exp2_scale_bits(x, n).to_bits()
                );
            }
        }
        // The delta: clamped, rounded to nearest even, NaN as 0.
        assert_eq!(frac_delta(-1000.0), -255 << 23);
        assert_eq!(frac_delta(7.0), 1 << 23);
        assert_eq!(frac_delta(f32::NAN), 0);
        assert_eq!(frac_delta(1.5 / 8_388_608.0), 2);
        assert_eq!(frac_delta(2.5 / 8_388_608.0), 2);
        // A fraction multiplies by 1 + d / (1 + f): not a power of two.
        let d = frac_delta(0.25);
        assert_eq!(exp2_frac_bits(1.0, d), 1.25);
        assert_eq!(exp2_frac_bits(1.5, d), 1.75);
        // 1.875 + 0.25 carries into the exponent: 2 · 1.125.
        assert_eq!(exp2_frac_bits(-1.875, d), -2.25);
        assert_eq!(exp2_frac_bits(f32::MIN_POSITIVE, -1), 0.0);
        assert_eq!(exp2_frac_bits(f32::MAX, 1), f32::INFINITY);
    }

    /// A zero step leaves every bit pattern as it is (subnormals, ±0, inf,
    /// NaN payloads), in both adds and both definitions; the smallest
    /// non-zero steps still flush subnormals.
    #[test]
    fn zero_step_is_the_identity() {
        for b in samples() {
            let x = f32::from_bits(b);
            assert_eq!(exp2_scale_bits(x, 0).to_bits(), b, "{b:#x}");
            assert_eq!(exp2_scale_reference(x, 0).to_bits(), b, "{b:#x}");
            assert_eq!(exp2_frac_bits(x, 0).to_bits(), b, "{b:#x}");
            assert_eq!(exp2_frac_reference(x, 0).to_bits(), b, "{b:#x}");
        }
        // frac_delta of a step too small to move a bit is 0: the identity.
        assert_eq!(frac_delta(1e-9), 0);
        let sub = f32::from_bits(0x8000_0003);
        assert_eq!(exp2_scale_bits(sub, 0).to_bits(), 0x8000_0003);
        assert_eq!(exp2_scale_bits(sub, -1).to_bits(), SIGN);
        assert_eq!(exp2_scale_bits(sub, 1).to_bits(), SIGN);
        assert_eq!(exp2_frac_bits(sub, 1).to_bits(), SIGN);
        assert_eq!(exp2_frac_bits(sub, -1).to_bits(), SIGN);
    }

    #[test]
    fn rows_version() {
        let mut d = vec![1.0f32, 2.0, 99.0, 4.0, 8.0, 99.0];
        exp2_scale_rows(&mut d, 2, 2, 3, &[-1, -2]).unwrap();
        assert_eq!(d, vec![0.5, 1.0, 99.0, 1.0, 2.0, 99.0]);
        assert!(exp2_scale_rows(&mut d, 3, 2, 3, &[0, 0, 0]).is_err());
        assert!(exp2_scale_rows(&mut d, 2, 2, 3, &[0]).is_err());
        assert!(exp2_scale_rows(&mut d, 2, 4, 3, &[0, 0]).is_err());
    }
}
