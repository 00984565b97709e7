//! AMLA's MUL-to-ADD rescale: multiplying an f32 by `2^n` by adding `n << 23`
//! to its bits.
//!
//! Contract of [`exp2_scale_bits`]: for every finite `x` and every integer
//! `n` in `[-255, 0]`, the result is bit-identical to `ftz(x · 2^n)`
//! evaluated in f32 with flush-to-zero semantics:
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

/// `x · 2^n` by integer addition on the exponent bits, with the guards above.
#[inline]
pub fn exp2_scale_bits(x: f32, n: i32) -> f32 {
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

/// The definition [`exp2_scale_bits`] must match: the exact product in f64,
/// then flush-to-zero below 2^-126 (and subnormal inputs as zero).
pub fn exp2_scale_reference(x: f32, n: i32) -> f32 {
    if !x.is_finite() {
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn reference_matches_hardware_ftz() {
        let xs = samples();
        for n in all_n() {
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
        // Subnormal input flushes, keeping the sign.
        assert_eq!(exp2_scale_bits(f32::from_bits(SIGN | 5), 0).to_bits(), SIGN);
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
    fn rows_version() {
        let mut d = vec![1.0f32, 2.0, 99.0, 4.0, 8.0, 99.0];
        exp2_scale_rows(&mut d, 2, 2, 3, &[-1, -2]).unwrap();
        assert_eq!(d, vec![0.5, 1.0, 99.0, 1.0, 2.0, 99.0]);
        assert!(exp2_scale_rows(&mut d, 3, 2, 3, &[0, 0, 0]).is_err());
        assert!(exp2_scale_rows(&mut d, 2, 2, 3, &[0]).is_err());
        assert!(exp2_scale_rows(&mut d, 2, 4, 3, &[0, 0]).is_err());
    }
}
