//! Comparing a run's outputs with a float64 oracle: the interpreter of the
//! kernel (`crate::interp`) or an attention reference (`run/reference_kind.rs`).
//!
//! An element passes when `|got - want| <= atol + rtol * |want| + mag *
//! mag_i` ([`Tolerance::bound`]), `mag_i` the oracle's *magnitude* of the
//! element (below; only the attention references give one); infinities
//! must match exactly (an empty row's `lse` is `+inf`). A NaN never passes
//! against a reference; against the interpreter it passes where the
//! interpreter has a NaN too ([`NanRule`]): the kernel itself divides 0 by 0
//! there. Every comparison counts its NaN and infinity mismatches, so an
//! all-NaN output does not hide behind a maximum error of 0 (the errors are
//! over finite pairs only), and reports its largest `error / bound` and
//! that element ([`Comparison::worst`], in `amlac run --check --json`).
//!
//! # `out` against a reference: the error the kernel is allowed
//!
//! The reference computes `out_i = Σ_j w_j v_ij` with the exact softmax
//! weights `w_j` and no rounding. Every attention kernel rounds the weights
//! `P` to bf16 before the Cube multiplies them by `V` (FlashAttention does,
//! and so does every `mul-to-add` variant), so it computes `Σ_j w_j (1 +
//! δ_j) v_ij` with `|δ_j| <= u = 2^-8` ([`U_BF16`], bf16's unit roundoff;
//! the f32 arithmetic around it adds a few `2^-24`). To first order that
//! moves `out_i` by
//!
//! ```text
//! |Σ_j w_j δ_j v_ij| <= u · Σ_j w_j |v_ij| = u · mag_i
//! ```
//!
//! `mag_i` is the element's magnitude, computed by the reference alongside
//! `out` ([`crate::reference`]). It is **not** `|out_i|`: where the terms
//! cancel, `out_i` is tiny and the error of the rounded weights is not
//! (`mla_decode -D N=7`, seed 0: `|ref| = 3.7e-3`, `mag = 1.74`, error
//! `4.3e-3`, 0.63 · u · mag). The output's own rounding to bf16 then adds at
//! most `u · |out_i|`. Hence the 16-bit tolerance, with each part the bound
//! of one rounding:
//!
//! - `mag = 1 · u` ([`MAG_C`] = 1): the first-order bound of P's rounding.
//!   It is reached only when every weight is rounded by the full `u` in the
//!   direction of its value; in the `--check` sweep of the MLA kernels (3600
//!   runs) no element comes closer than 0.84 of the whole bound
//!   (`docs/NUMERICS.md`, "The check's tolerance").
//! - `rtol = 2u = 2^-7`: the output's rounding (`u · |out|`), and the same
//!   again for the `lc` compensation (`-D COMPENSATE=1`), whose denominator
//!   `Σ bf16(P)` turns the error into `Σ_j w_j δ_j (v_ij - out_i)`, at most
//!   `u · (mag_i + |out_i|)`.
//! - `atol = 0` ([`ATOL_16`]): nothing in the arithmetic is absolute; an
//!   element whose terms are all 0 (an empty row, a zero channel) is exactly
//!   0 in every kernel. (The former `atol = 2^-8` stood in for `u · mag` and
//!   failed FlashAttention itself where `mag > 1` and `out` cancels.)
//!
//! An error of another kind still fails: a factor `1 + ε` on the output
//! passes only where `ε · |out| <= 2u · |out| + u · mag`, a wrong weight
//! (a wrong softmax scale, a stale max) moves `out` by much more than
//! `u · mag` (`tests/check_sweep.rs`).
//!
//! # `lse`, and the interpreter
//!
//! - `lse` (f32): computed in f32 from an f32 running sum; `1e-5` relative
//!   (the figure the numerics issue holds the kernels to) plus `1e-5`
//!   absolute for values near 0. No magnitude part.
//!
//! Against the interpreter (`session::interpreter_tolerance`): f32 outputs
//! take the same numbers, i32 outputs must match exactly, and 16-bit outputs
//! take `atol = rtol = 2^-7` and no magnitude part, for these reasons. The
//! interpreter honours the kernel's 16-bit roundings inside the kernel
//! (`bf16(p)`), computes the f32 arithmetic between them exactly, and
//! leaves a store's last rounding (`out[b] = bf16(acc / l)`) to this
//! tolerance. What separates it from the JIT is then (1) f32 rounding,
//! summation order and the JIT's polynomial `exp`/`log`, a few f32 ulps,
//! far below both tolerances; (2) the output's rounding, `u` relative as
//! above; (3) P's rounding: `mul-to-add` rounds `P` from a value scaled by
//! `e^(m - m')` (not a power of two), so the JIT's and the interpreter's
//! `bf16(p)` are two *independent* roundings of a weight, each up to `u`.
//! Measured on the five examples at their default shapes, the largest `out`
//! error is `8.5e-3` (flash_prefill, an element of magnitude > 0.1), and
//! `1.1e-6` on `lse` (`amlac run FILE --check --json`); the `--check` sweep
//! of the MLA kernels never failed against the interpreter, so it keeps
//! these numbers.

use serde::Serialize;

/// The unit roundoff of bf16: 8 significant bits, so rounding to nearest
/// moves a value by at most `2^-8` of itself.
pub const U_BF16: f64 = 1.0 / 256.0;

/// `c` of the `c · u · mag` part of the 16-bit tolerance: 1, the
/// first-order bound of rounding the weights (the module doc).
pub const MAG_C: f64 = 1.0;

/// The absolute part of the 16-bit tolerance: 0 (the module doc).
pub const ATOL_16: f64 = 0.0;

/// Tolerances of one comparison: element `i` passes when
/// `|got_i - want_i| <= atol + rtol * |want_i| + mag * mag_i`, `mag_i` the
/// oracle's magnitude of the element (0 when the oracle gives none).
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f64,
    /// Relative part (of the reference value).
    pub rtol: f64,
    /// Part relative to the element's magnitude (`Σ_c w_c |v_c|` for an
    /// attention output, [`crate::reference`]).
    pub mag: f64,
}

impl Tolerance {
    /// The default for an output of `dtype` (see the module doc).
    pub fn for_dtype(dtype: crate::ir::DType) -> Tolerance {
        match dtype {
            crate::ir::DType::F32 => Tolerance {
                atol: 1e-5,
                rtol: 1e-5,
                mag: 0.0,
            },
            _ => Tolerance {
                atol: ATOL_16,
                rtol: 2.0 * U_BF16,
                mag: MAG_C * U_BF16,
            },
        }
    }

    /// The largest error allowed on an element whose oracle value is `want`
    /// and whose magnitude is `mag`.
    pub fn bound(&self, want: f64, mag: f64) -> f64 {
        self.atol + self.rtol * want.abs() + self.mag * mag
    }
}

/// What a NaN in the oracle's output means.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub enum NanRule {
    /// A NaN never passes (the attention references never produce one).
    NeverPasses,
    /// A NaN in the output passes where the oracle has a NaN too (the
    /// interpreter evaluates the kernel itself: `0 / 0` in the source is NaN
    /// in both).
    MatchesNan,
}

/// The result of comparing one output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Output name.
    pub name: String,
    /// Elements compared.
    pub elements: usize,
    /// Largest `|got - want|` over finite pairs.
    pub max_abs_err: f64,
    /// Largest `|got - want| / |want|` over finite pairs with `want != 0`.
    pub max_rel_err: f64,
    /// Elements outside the tolerance.
    pub mismatches: usize,
    /// Index of the first mismatch.
    pub first_mismatch: Option<usize>,
    /// Elements where both sides are finite (the errors above are over
    /// these only).
    pub finite_pairs: usize,
    /// Mismatches where the output is NaN and the oracle is not.
    pub nan_in_output: usize,
    /// Mismatches where the oracle is NaN and the output is not (or, under
    /// [`NanRule::NeverPasses`], is NaN too).
    pub nan_in_oracle: usize,
    /// Elements NaN on both sides (passing under [`NanRule::MatchesNan`]).
    pub nan_in_both: usize,
    /// Mismatches where one side is infinite and the other differs.
    pub inf_mismatches: usize,
    /// The tolerance used.
    pub tolerance: Tolerance,
    /// Largest `|got - want| / bound` over finite pairs (`bound` from
    /// [`Tolerance::bound`]): below 1 when every finite pair passes; how far
    /// below says how much room the tolerance leaves.
    pub max_ratio: f64,
    /// The finite pair with that ratio.
    pub worst: Option<Worst>,
    /// No mismatch.
    pub passed: bool,
}

/// The element of a comparison nearest to (or furthest past) its bound.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Worst {
    /// Row-major index.
    pub index: usize,
    /// The run's value.
    pub got: f64,
    /// The oracle's value.
    pub want: f64,
    /// The oracle's magnitude of the element (0 when it gives none).
    pub mag: f64,
    /// The allowed error, [`Tolerance::bound`].
    pub bound: f64,
}

/// Compares `got` with `want` element by element; a NaN never passes. No
/// magnitudes: the tolerance's `mag` part is 0 (see [`compare_magnitudes`]).
pub fn compare(name: &str, got: &[f64], want: &[f64], tolerance: Tolerance) -> Comparison {
    compare_with(name, got, want, tolerance, NanRule::NeverPasses)
}

/// Compares `got` with `want` element by element, NaNs judged by `nan`; no
/// magnitudes.
pub fn compare_with(
    name: &str,
    got: &[f64],
    want: &[f64],
    tolerance: Tolerance,
    nan: NanRule,
) -> Comparison {
    compare_all(name, got, want, None, tolerance, nan)
}

/// Compares `got` with an attention reference's `want` and the magnitudes
/// `mag` of its elements (the module doc); a NaN never passes. A `mag` of
/// another length than `want` is a mismatch of every element.
pub fn compare_magnitudes(
    name: &str,
    got: &[f64],
    want: &[f64],
    mag: &[f64],
    tolerance: Tolerance,
) -> Comparison {
    compare_all(name, got, want, Some(mag), tolerance, NanRule::NeverPasses)
}

fn compare_all(
    name: &str,
    got: &[f64],
    want: &[f64],
    mag: Option<&[f64]>,
    tolerance: Tolerance,
    nan: NanRule,
) -> Comparison {
    let mut c = Comparison {
        name: name.to_string(),
        elements: want.len(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        mismatches: 0,
        first_mismatch: None,
        finite_pairs: 0,
        nan_in_output: 0,
        nan_in_oracle: 0,
        nan_in_both: 0,
        inf_mismatches: 0,
        tolerance,
        max_ratio: 0.0,
        worst: None,
        passed: true,
    };
    if got.len() != want.len() || mag.is_some_and(|m| m.len() != want.len()) {
        c.mismatches = got.len().abs_diff(want.len()).max(1);
        c.passed = false;
        return c;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if g.is_nan() && w.is_nan() {
            c.nan_in_both += 1;
            let ok = nan == NanRule::MatchesNan;
            if !ok {
                c.nan_in_oracle += 1;
            }
            ok
        } else if g.is_nan() {
            c.nan_in_output += 1;
            false
        } else if w.is_nan() {
            c.nan_in_oracle += 1;
            false
        } else if w.is_infinite() || g.is_infinite() {
            let ok = g == w;
            c.inf_mismatches += usize::from(!ok);
            ok
        } else {
            c.finite_pairs += 1;
            let err = (g - w).abs();
            c.max_abs_err = c.max_abs_err.max(err);
            if w != 0.0 {
                c.max_rel_err = c.max_rel_err.max(err / w.abs());
            }
            let m = mag.map_or(0.0, |m| m[i]);
            let bound = tolerance.bound(w, m);
            let ratio = if err == 0.0 { 0.0 } else { err / bound };
            if c.worst.is_none() || ratio > c.max_ratio {
                c.max_ratio = ratio;
                c.worst = Some(Worst {
                    index: i,
                    got: g,
                    want: w,
                    mag: m,
                    bound,
                });
            }
            err <= bound
        };
        if !ok {
            c.mismatches += 1;
            c.first_mismatch.get_or_insert(i);
        }
    }
    c.passed = c.mismatches == 0;
    c
}

/// The mismatches of `c` in words: `12 of 100 elements, first at 3; 12 NaN
/// in the output`.
pub fn describe(c: &Comparison) -> String {
    let mut s = format!(
        "{} of {} elements, first at {}",
        c.mismatches,
        c.elements,
        c.first_mismatch.unwrap_or(0)
    );
    for (n, what) in [
        (c.nan_in_output, "NaN in the output"),
        (c.nan_in_oracle, "NaN in the oracle"),
        (c.inf_mismatches, "infinities that differ"),
    ] {
        if n > 0 {
            s += &format!("; {n} {what}");
        }
    }
    if c.finite_pairs == 0 && c.elements > 0 {
        s += "; no finite pair";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tolerance = Tolerance {
        atol: 1e-3,
        rtol: 1e-2,
        mag: 0.0,
    };

    #[test]
    fn within_tolerance_passes_and_reports_errors() {
        let c = compare(
            "out",
            &[1.005, 0.0005, f64::INFINITY],
            &[1.0, 0.0, f64::INFINITY],
            T,
        );
        assert!(c.passed, "{c:?}");
        assert!((c.max_abs_err - 0.005).abs() < 1e-12);
        assert!((c.max_rel_err - 0.005).abs() < 1e-12);
    }

    #[test]
    fn nan_inf_and_large_errors_fail() {
        let c = compare(
            "out",
            &[f64::NAN, 2.0, 5.0, f64::INFINITY],
            &[1.0, 1.0, f64::INFINITY, 3.0],
            T,
        );
        assert!(!c.passed);
        assert_eq!((c.mismatches, c.first_mismatch), (4, Some(0)));
        assert_eq!(
            (c.nan_in_output, c.inf_mismatches, c.finite_pairs),
            (1, 2, 1)
        );
        assert!(!compare("x", &[1.0], &[1.0, 2.0], T).passed);
    }

    #[test]
    fn an_all_nan_output_is_counted_not_hidden_behind_a_zero_error() {
        let c = compare("out", &[f64::NAN; 3], &[1.0, 2.0, 3.0], T);
        assert!(!c.passed);
        assert_eq!((c.mismatches, c.nan_in_output, c.finite_pairs), (3, 3, 0));
        assert_eq!(
            describe(&c),
            "3 of 3 elements, first at 0; 3 NaN in the output; no finite pair"
        );
    }

    #[test]
    fn the_magnitude_allows_the_rounding_of_the_weights_and_no_more() {
        let t = Tolerance::for_dtype(crate::ir::DType::Bf16);
        // Two keys of weight 1/2 on values +2 and -2: out cancels to 0, the
        // magnitude is 2. Rounding both weights by ±u moves out by u · 2.
        let u = U_BF16;
        let got = 0.5 * (1.0 + u) * 2.0 - 0.5 * (1.0 - u) * 2.0;
        let c = compare_magnitudes("out", &[got], &[0.0], &[2.0], t);
        assert!(c.passed, "{c:?}");
        assert!((c.max_ratio - 1.0).abs() < 1e-12, "{c:?}");
        // Without the magnitude the same error fails (the bound is 0).
        assert!(!compare("out", &[got], &[0.0], t).passed);
        // Twice the bound fails, and the worst element is reported.
        let c = compare_magnitudes("out", &[0.5, 2.0 * got], &[0.5, 0.0], &[0.5, 2.0], t);
        assert!(!c.passed);
        let w = c.worst.as_ref().expect("a worst element");
        assert_eq!((w.index, w.want, w.mag), (1, 0.0, 2.0));
        assert!((c.max_ratio - 2.0).abs() < 1e-12 && (w.bound - 2.0 * u).abs() < 1e-15);
        // A scale error where nothing cancels fails: out = mag = 1, 2^-6 off.
        let c = compare_magnitudes("out", &[1.0 - 2f64.powi(-6)], &[1.0], &[1.0], t);
        assert!(!c.passed, "{c:?}");
        // Magnitudes of the wrong length fail the comparison.
        assert!(!compare_magnitudes("out", &[0.0], &[0.0], &[], t).passed);
    }

    #[test]
    fn nan_matches_nan_only_when_asked() {
        let (g, w) = ([f64::NAN, 1.0], [f64::NAN, 1.0]);
        let strict = compare("o", &g, &w, T);
        assert!(!strict.passed);
        assert_eq!((strict.nan_in_both, strict.nan_in_oracle), (1, 1));
        let c = compare_with("o", &g, &w, T, NanRule::MatchesNan);
        assert!(c.passed, "{c:?}");
        assert_eq!((c.nan_in_both, c.mismatches), (1, 0));
        let c = compare_with("o", &[1.0, f64::NAN], &w, T, NanRule::MatchesNan);
        assert_eq!((c.nan_in_output, c.nan_in_oracle, c.mismatches), (1, 1, 2));
    }
}
