//! Comparing a run's outputs with a float64 oracle: the interpreter of the
//! kernel (`crate::interp`) or an attention reference (`run/reference_kind.rs`).
//!
//! An element passes when `|got - want| <= atol + rtol * |want|`; infinities
//! must match exactly (an empty row's `lse` is `+inf`). A NaN never passes
//! against a reference; against the interpreter it passes where the
//! interpreter has a NaN too ([`NanRule`]): the kernel itself divides 0 by 0
//! there. Every comparison counts its NaN and infinity mismatches, so an
//! all-NaN output does not hide behind a maximum error of 0 (the errors are
//! over finite pairs only). The default tolerances and why:
//!
//! - `out` (bf16): the kernel rounds its output to bf16 (half an ulp is
//!   `2^-9` relative) and the Cube multiplies `P` after rounding it to bf16
//!   (another `2^-9` relative per term); `rtol = 2^-7` leaves a factor of
//!   two over both, and `atol = 2^-8` covers outputs near 0, where the
//!   absolute error of the rounded `P` dominates.
//! - `lse` (f32): computed in f32 from an f32 running sum; `1e-5` relative
//!   (the figure the numerics issue holds the kernels to) plus `1e-5`
//!   absolute for values near 0.
//!
//! Against the interpreter (`session::interpreter_tolerance`): f32 outputs
//! take the same numbers, i32 outputs must match exactly, and 16-bit outputs
//! take `atol = rtol = 2^-7`, for these reasons. The interpreter honours the
//! kernel's 16-bit roundings inside the kernel (`bf16(p)`), computes the f32
//! arithmetic between them exactly, and leaves a store's last rounding
//! (`out[b] = bf16(acc / l)`) to this tolerance, as the reference does. What
//! separates it from the JIT is then (1) f32 rounding, summation order and
//! the JIT's polynomial `exp`/`log`, a few f32 ulps, far below both
//! tolerances; (2) the output's rounding, `2^-9` relative as above; (3) P's
//! rounding: `mul-to-add` rounds `P` from a value scaled by `e^(m - m')`
//! (not a power of two), so the JIT's and the interpreter's `bf16(p)` are
//! two *independent* roundings, each up to `2^-9` per term: twice the
//! reference's single one, hence twice its `atol`. Measured on the five
//! examples at their default shapes, the largest `out` error is `8.5e-3`
//! (flash_prefill, an element of magnitude > 0.1), and `1.1e-6` on `lse`
//! (`amlac run FILE --check --json`).

use serde::Serialize;

/// Tolerances of one comparison.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f64,
    /// Relative part (of the reference value).
    pub rtol: f64,
}

impl Tolerance {
    /// The default for an output of `dtype` (see the module doc).
    pub fn for_dtype(dtype: crate::ir::DType) -> Tolerance {
        match dtype {
            crate::ir::DType::F32 => Tolerance {
                atol: 1e-5,
                rtol: 1e-5,
            },
            _ => Tolerance {
                atol: 2f64.powi(-8),
                rtol: 2f64.powi(-7),
            },
        }
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
    /// No mismatch.
    pub passed: bool,
}

/// Compares `got` with `want` element by element; a NaN never passes.
pub fn compare(name: &str, got: &[f64], want: &[f64], tolerance: Tolerance) -> Comparison {
    compare_with(name, got, want, tolerance, NanRule::NeverPasses)
}

/// Compares `got` with `want` element by element, NaNs judged by `nan`.
pub fn compare_with(
    name: &str,
    got: &[f64],
    want: &[f64],
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
        passed: true,
    };
    if got.len() != want.len() {
        c.mismatches = got.len().abs_diff(want.len());
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
            err <= tolerance.atol + tolerance.rtol * w.abs()
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
