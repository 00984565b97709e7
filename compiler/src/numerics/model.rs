//! A scalar model of one query row through the online softmax, as each
//! `mul-to-add` variant rewrites it: the same formulas the pass emits, in
//! f32, with the accumulator scaled by the runtime's exact exponent add
//! ([`amla_runtime::rescale::exp2_scale_bits`]) and the Cube's operand
//! rounded to bf16.
//!
//! It exists to test properties of the rewritten formulas that a JIT run
//! cannot observe directly: the largest `P` the Cube ever multiplies (at
//! most 1 for `ceil`, at most √2 for `nearest`), the exponent steps (always
//! in `[-255, 0]`), and that `l` stays finite and masked rows give no NaN.

use amla_runtime::rescale::{exp2_frac_bits, exp2_scale_bits, frac_delta};
use half::bf16;

use crate::passes::mul_to_add::RescaleVariant;

/// What the model observed for one row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowTrace {
    /// The largest `P` (after the bf16 rounding) the Cube multiplied.
    pub max_p: f32,
    /// Every exponent step `n` applied to the accumulator.
    pub steps: Vec<i32>,
    /// The final `l` (natural units relative to the final max).
    pub l: f32,
    /// The final output `acc / l` of each value channel (0 where `l = 0`).
    pub out: Vec<f32>,
    /// `lse` (`+inf` for a row that sees no key).
    pub lse: f32,
}

fn bf(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// Which value the Cube multiplies in [`run_row_with`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Operand {
    /// `bf16(P · c)` (with `c` rounded to bf16 first where the variant
    /// rounds it): what the pass emits.
    #[default]
    Kernel,
    /// A what-if no integer rescale can emit (the Cube takes bf16
    /// operands): `bf16(P) · c` in f32, FlashAttention's rounding of `P`
    /// times the variant's per-block factor. The difference between the
    /// two is exactly where `P · c` is rounded (`docs/NUMERICS.md`, "Where
    /// AMLA's extra error came from", item 8).
    FlashRounding,
}

/// Runs one row: `scores` (natural-log units, `-inf` for masked keys) in
/// blocks of `block`, values `v` (`scores.len()` rows of `dv`), with the
/// given variant and compensation, as the pass rewrites the kernel.
pub fn run_row(
    scores: &[f32],
    v: &[f32],
    dv: usize,
    block: usize,
    variant: RescaleVariant,
    compensation: bool,
) -> RowTrace {
    run_row_with(scores, v, dv, block, variant, compensation, Operand::Kernel)
}

/// [`run_row`] with the Cube's operand chosen by `operand`.
pub fn run_row_with(
    scores: &[f32],
    v: &[f32],
    dv: usize,
    block: usize,
    variant: RescaleVariant,
    compensation: bool,
    operand: Operand,
) -> RowTrace {
    let log2e = std::f32::consts::LOG2_E;
    let mut m = f32::NEG_INFINITY; // carried max, base 2 (M for ceil)
    let mut l = 0f32;
    let mut lc = 0f32;
    let mut acc = vec![0f32; dv];
    let mut trace = RowTrace {
        max_p: 0.0,
        steps: Vec::new(),
        l: 0.0,
        out: Vec::new(),
        lse: 0.0,
    };
    let nearest = variant != RescaleVariant::Ceil;
    let anchored = variant.anchors_grid();
    let cann = variant.corrects_c();
    let leftover = |x: f32| {
        let c = (x - x.round()).exp2();
        if variant.rounds_c() { bf(c) } else { c }
    };
    let mut cof_prev = 1f32;
    let mut mu = 0f32; // anchored: the grid's anchor, the first block's max
    for (bi, sb) in scores.chunks(block.max(1)).enumerate() {
        // anchored/exact keep the kernel's natural-log max, `p` and `alpha`
        // and take the base-2 max only for the grid; the others carry the
        // base-2 max.
        let (m_new, p) = if anchored {
            let m_new = sb.iter().copied().fold(m, f32::max);
            (
                m_new,
                sb.iter().map(|s| (s - m_new).exp()).collect::<Vec<f32>>(),
            )
        } else {
            let s2: Vec<f32> = sb.iter().map(|s| s * log2e).collect();
            let r = s2.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m.max(if nearest { r } else { r.ceil() });
            // Unguarded, as the kernel wrote it: NaN while the row has seen no key.
            (m_new, s2.iter().map(|x| (x - m_new).exp2()).collect())
        };
        let first = m == f32::NEG_INFINITY;
        if anchored && first {
            mu = m_new * log2e;
        }
        // The base-2 max relative to the grid's anchor (0 but for anchored).
        let (mo, mn) = if anchored {
            (m * log2e - mu, m_new * log2e - mu)
        } else {
            (m, m_new)
        };
        let (step, alpha_l, c) = if nearest {
            let step = mo.round() - mn.round();
            let alpha = if first {
                1.0
            } else if anchored {
                (m - m_new).exp()
            } else {
                (m - m_new).exp2()
            };
            (step, alpha, leftover(mn))
        } else {
            let step = m - m_new;
            (step, 0.0, 1.0)
        };
        let nf = (if first { 0.0 } else { step }).max(variant.step_floor() as f32);
        let n = nf as i32;
        let mut alpha2 = nf.exp2();
        let alpha_l = if nearest { alpha_l } else { alpha2 };
        trace.steps.push(n);
        if cann {
            // x = n + 1.5 · (cof_prev / cof - 1) + 1e-6, cof = c / bf16(c).
            let cof = (mn - mn.round()).exp2() / c;
            let ratio = cof_prev / cof;
            let bias = variant.eps_bias() as f32;
            let eps = if first {
                0.0
            } else {
                1.5 * (ratio - 1.0) + bias
            };
            let d = frac_delta(nf + eps);
            for a in &mut acc {
                *a = exp2_frac_bits(*a, d);
            }
            if !first {
                alpha2 *= ratio;
            }
            cof_prev = cof;
        } else {
            for a in &mut acc {
                *a = exp2_scale_bits(*a, n);
            }
        }
        let pm: Vec<f32> = match operand {
            Operand::Kernel => p.iter().map(|x| bf(x * c)).collect(),
            Operand::FlashRounding => p.iter().map(|x| bf(*x) * c).collect(),
        };
        for (k, &pk) in pm.iter().enumerate() {
            trace.max_p = trace.max_p.max(pk);
            let row = &v[(bi * block + k) * dv..(bi * block + k + 1) * dv];
            for (a, x) in acc.iter_mut().zip(row) {
                *a += pk * bf(*x);
            }
        }
        l = l * alpha_l + p.iter().sum::<f32>();
        lc = lc * alpha2 + pm.iter().sum::<f32>();
        m = m_new;
    }
    let ms = if m == f32::NEG_INFINITY {
        0.0
    } else if anchored {
        m * log2e - mu
    } else {
        m
    };
    let g = if compensation {
        if lc == 0.0 { 0.0 } else { l / lc }
    } else if nearest {
        1.0 / leftover(ms)
    } else {
        1.0
    };
    trace.l = l;
    trace.out = acc
        .iter()
        .map(|a| if l > 0.0 { a * g / l } else { 0.0 })
        .collect();
    trace.lse = if l > 0.0 && anchored {
        m + l.ln()
    } else if l > 0.0 {
        m * std::f32::consts::LN_2 + l.ln()
    } else {
        f32::INFINITY
    };
    trace
}

/// FlashAttention's row as `mla_decode.amla` writes it (mul-to-add
/// disabled): `p = exp(s - m_new)` and `alpha = exp(m - m_new)` in f32,
/// `l = l·alpha + Σ p`, `acc = acc·alpha + Σ bf16(p)·v`, `out = acc / l`
/// (0 where `l` is not positive), `lse = m + ln l`. `steps` is empty.
pub fn flash_row(scores: &[f32], v: &[f32], dv: usize, block: usize) -> RowTrace {
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    let mut acc = vec![0f32; dv];
    let mut max_p = 0f32;
    for (bi, sb) in scores.chunks(block.max(1)).enumerate() {
        let m_new = sb.iter().copied().fold(m, f32::max);
        let alpha = (m - m_new).exp();
        let p: Vec<f32> = sb.iter().map(|s| (s - m_new).exp()).collect();
        acc.iter_mut().for_each(|a| *a *= alpha);
        for (k, &pk) in p.iter().enumerate() {
            let pk = bf(pk);
            max_p = max_p.max(pk);
            let row = &v[(bi * block + k) * dv..(bi * block + k + 1) * dv];
            for (a, x) in acc.iter_mut().zip(row) {
                *a += pk * bf(*x);
            }
        }
        l = l * alpha + p.iter().sum::<f32>();
        m = m_new;
    }
    RowTrace {
        max_p,
        steps: Vec::new(),
        l,
        out: acc
            .iter()
            .map(|a| if l > 0.0 { a / l } else { 0.0 })
            .collect(),
        lse: if l > 0.0 { m + l.ln() } else { f32::INFINITY },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn exact(scores: &[f32], v: &[f32], dv: usize) -> (Vec<f64>, f64) {
        let mx = scores
            .iter()
            .map(|&s| f64::from(s))
            .fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|&s| (f64::from(s) - mx).exp()).collect();
        let sum: f64 = w.iter().sum();
        let mut out = vec![0.0; dv];
        for (k, wk) in w.iter().enumerate() {
            for (o, x) in out.iter_mut().zip(&v[k * dv..(k + 1) * dv]) {
                *o += wk / sum * f64::from(*x);
            }
        }
        (out, mx + sum.ln())
    }

    #[test]
    fn p_never_exceeds_one_for_ceil_or_sqrt2_for_nearest() {
        let mut seed = 1;
        for trial in 0..200 {
            let spread = [0.01f32, 1.0, 10.0, 60.0][trial % 4];
            let scores: Vec<f32> = (0..97).map(|_| lcg(&mut seed) * spread).collect();
            let v: Vec<f32> = (0..97).map(|_| lcg(&mut seed)).collect();
            for comp in [false, true] {
                let c = run_row(&scores, &v, 1, 16, RescaleVariant::Ceil, comp);
                assert!(c.max_p <= 1.0, "ceil: {}", c.max_p);
                let n = run_row(&scores, &v, 1, 16, RescaleVariant::Nearest, comp);
                assert!(n.max_p <= std::f32::consts::SQRT_2, "nearest: {}", n.max_p);
                let h = run_row(&scores, &v, 1, 16, RescaleVariant::Cann, comp);
                assert!(h.max_p <= std::f32::consts::SQRT_2, "cann: {}", h.max_p);
                assert!(h.steps.iter().all(|s| (-30..=0).contains(s)));
                let a = run_row(&scores, &v, 1, 16, RescaleVariant::Anchored, comp);
                assert!(a.max_p <= std::f32::consts::SQRT_2, "anchored: {}", a.max_p);
                assert!(a.steps.iter().all(|s| (-30..=0).contains(s)));
                let x = run_row(&scores, &v, 1, 16, RescaleVariant::Exact, comp);
                assert!(x.max_p <= std::f32::consts::SQRT_2, "exact: {}", x.max_p);
                for t in [&c, &n, &h, &a, &x] {
                    assert!(t.steps.iter().all(|s| (-255..=0).contains(s)));
                    let (want, lse) = exact(&scores, &v, 1);
                    assert!((f64::from(t.out[0]) - want[0]).abs() < 2e-2, "{t:?}");
                    assert!((f64::from(t.lse) - lse).abs() <= 1e-5 * lse.abs().max(1.0));
                }
            }
        }
        // Nearest really uses the range above 1 (c up to √2).
        let scores = [0.4f32 * std::f32::consts::LN_2, 0.0];
        let t = run_row(&scores, &[1.0, 1.0], 1, 2, RescaleVariant::Nearest, false);
        assert!(
            t.max_p > 1.0 && t.max_p <= std::f32::consts::SQRT_2,
            "{t:?}"
        );
    }

    #[test]
    fn anchored_multiplies_flash_attentions_p_until_the_max_moves() {
        let mut seed = 7;
        for trial in 0..50 {
            let spread = [0.01f32, 1.0, 10.0][trial % 3];
            // The largest score first, so the max never moves after block 0.
            let mut scores: Vec<f32> = (0..40).map(|_| lcg(&mut seed) * spread).collect();
            scores[0] = 2.0 * spread;
            let v: Vec<f32> = (0..40).map(|_| lcg(&mut seed)).collect();
            let a = run_row(&scores, &v, 1, 16, RescaleVariant::Anchored, true);
            // c = 1: the largest P is exactly 1 and every step a whole 0.
            assert_eq!(a.max_p, 1.0, "{a:?}");
            assert!(a.steps.iter().all(|&s| s == 0), "{a:?}");
            // Without compensation it is FlashAttention bit for bit.
            let a0 = run_row(&scores, &v, 1, 16, RescaleVariant::Anchored, false);
            let f = flash_row(&scores, &v, 1, 16);
            assert_eq!(
                (&a0.out, a0.l, a0.lse),
                (&f.out, f.l, f.lse),
                "{a0:?} {f:?}"
            );
            // cann's c is 2^frac(m), rounded: its largest operand is not 1.
            let h = run_row(&scores, &v, 1, 16, RescaleVariant::Cann, true);
            let m2 = scores[0] * std::f32::consts::LOG2_E;
            if (m2 - m2.round()).abs() > 0.01 {
                assert_ne!(h.max_p, 1.0, "{h:?}");
            }
            // exact is anchored on the same grid: the same operands here.
            let x = run_row(&scores, &v, 1, 16, RescaleVariant::Exact, true);
            assert_eq!((x.max_p, &x.steps, &x.out), (a.max_p, &a.steps, &a.out));
        }
    }

    #[test]
    fn exact_keeps_c_unrounded_and_takes_only_whole_steps() {
        // The max moves by a fraction (0.3 in base 2) in the second block:
        // from then on c = 2^0.3, not a bf16 value. anchored multiplies
        // P · bf16(c) (its largest operand is bf16(c)), exact P · c
        // rounded once (its largest operand is bf16(c) too, but the other
        // keys are rounded at P · c); exact's steps are whole numbers, and
        // its output is within the bf16 rounding of float64.
        let ln2 = std::f32::consts::LN_2;
        let mut seed = 3;
        let mut scores: Vec<f32> = (0..48).map(|_| lcg(&mut seed) * 0.5).collect();
        scores[0] = 2.0 * ln2;
        scores[20] = 2.3 * ln2;
        let v: Vec<f32> = (0..48).map(|_| lcg(&mut seed)).collect();
        let (want, lse) = exact(&scores, &v, 1);
        for comp in [false, true] {
            let x = run_row(&scores, &v, 1, 16, RescaleVariant::Exact, comp);
            assert_eq!(x.steps, vec![0, 0, 0], "{x:?}");
            let c = 0.3f32.exp2();
            assert_eq!(x.max_p, bf(c), "{x:?}");
            assert!((f64::from(x.out[0]) - want[0]).abs() < 1e-2, "{x:?}");
            assert!((f64::from(x.lse) - lse).abs() <= 1e-5 * lse.abs().max(1.0));
            // The same row with anchored differs (its c was rounded first).
            let a = run_row(&scores, &v, 1, 16, RescaleVariant::Anchored, comp);
            assert_ne!(a.out, x.out, "{a:?} {x:?}");
        }
    }

    #[test]
    fn exact_with_flash_attentions_rounding_of_p_is_flash_attention() {
        // Rows whose max moves by fractions across blocks: `exact` takes
        // only whole, exact steps, so with the what-if operand `bf16(P)·c`
        // it is FlashAttention (`flash_row`) up to f32 rounding (exp2 of
        // base-2 scores against exp); with the operand the Cube takes,
        // `bf16(P·c)`, it is not (docs/NUMERICS.md, item 8).
        let mut seed = 11;
        let dv = 8;
        let mut differs = 0;
        for trial in 0..40 {
            let spread = [1.0f32, 5.0, 12.0][trial % 3];
            let scores: Vec<f32> = (0..300).map(|_| lcg(&mut seed) * spread).collect();
            let v: Vec<f32> = (0..300 * dv).map(|_| lcg(&mut seed)).collect();
            let f = flash_row(&scores, &v, dv, 64);
            let (want, lse) = exact(&scores, &v, dv);
            let x = run_row_with(
                &scores,
                &v,
                dv,
                64,
                RescaleVariant::Exact,
                false,
                Operand::FlashRounding,
            );
            let k = run_row_with(
                &scores,
                &v,
                dv,
                64,
                RescaleVariant::Exact,
                false,
                Operand::Kernel,
            );
            assert!(x.steps.iter().all(|&s| s <= 0), "{x:?}");
            for ((a, b), w) in x.out.iter().zip(&f.out).zip(&want) {
                assert!((a - b).abs() <= 2e-6, "trial {trial}: {a} vs flash {b}");
                assert!((f64::from(*b) - w).abs() < 2e-2, "flash {b} vs {w}");
            }
            assert!((f64::from(f.lse) - lse).abs() <= 1e-5 * lse.abs().max(1.0));
            differs += usize::from(k.out != x.out);
        }
        assert!(
            differs > 30,
            "the operand knob changed only {differs} of 40 rows"
        );
    }

    /// FlashAttention's `l` for one row, as a kernel writes it (no guard):
    /// `exp(s - m_new)` and `exp(m - m_new)` in f32.
    fn flash_l(scores: &[f32], block: usize) -> f32 {
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        for sb in scores.chunks(block) {
            let m_new = sb.iter().copied().fold(m, f32::max);
            let p: f32 = sb.iter().map(|s| (s - m_new).exp()).sum();
            l = l * (m - m_new).exp() + p;
            m = m_new;
        }
        l
    }

    #[test]
    fn masked_rows_keep_the_kernels_own_nan_and_empty_rows_stay_finite() {
        let ninf = f32::NEG_INFINITY;
        for variant in RescaleVariant::ALL {
            for comp in [false, true] {
                // All masked: the kernel's `exp(-inf - -inf)` makes l NaN,
                // in FlashAttention as written and in every variant; the
                // kernel's `where(l > 0.0, …)` guard gives out 0, lse +inf.
                let t = run_row(&[ninf; 40], &[1.0; 40], 1, 16, variant, comp);
                assert!(flash_l(&[ninf; 40], 16).is_nan());
                assert!(t.l.is_nan(), "{variant:?}: {t:?}");
                assert_eq!((t.out[0], t.lse), (0.0, f32::INFINITY));
                assert!(t.steps.iter().all(|&s| s == 0));
                // Empty sequence: no block, l = 0, no NaN.
                let t = run_row(&[], &[], 1, 16, variant, comp);
                assert_eq!((t.l, t.lse), (0.0, f32::INFINITY));
                // A fully masked first block, then keys: the NaN of the
                // first block stays, as in FlashAttention (`NaN · 0 = NaN`).
                let mut s = vec![ninf; 16];
                s.extend([3.0f32, 1.0]);
                assert!(flash_l(&s, 16).is_nan());
                let t = run_row(&s, &[0.5; 18], 1, 16, variant, comp);
                assert!(t.l.is_nan(), "{variant:?}: {t:?}");
                // The same keys with a finite first block: finite and right.
                let mut s = vec![-50.0f32; 16];
                s.extend([3.0f32, 1.0]);
                let t = run_row(&s, &[0.5; 18], 1, 16, variant, comp);
                assert!(t.l.is_finite() && t.l > 0.0 && !t.out[0].is_nan(), "{t:?}");
                assert!((t.out[0] - 0.5).abs() < 1e-2, "{t:?}");
                // Steps below -255 are clamped (exact: every f32 flushes).
                let t = run_row(&[-400.0, 400.0], &[1.0, 2.0], 1, 1, variant, comp);
                let floor = if matches!(variant, RescaleVariant::Cann | RescaleVariant::Anchored) {
                    -30
                } else {
                    -255
                };
                assert_eq!(t.steps[1], floor, "{t:?}");
                assert!((t.out[0] - 2.0).abs() < 1e-2, "{t:?}");
            }
        }
    }
}
