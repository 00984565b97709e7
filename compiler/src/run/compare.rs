//! Comparing a run's outputs with the float64 reference.
//!
//! An element passes when `|got - want| <= atol + rtol * |want|`; infinities
//! must match exactly (an empty row's `lse` is `+inf`), and a NaN never
//! passes. The default tolerances and why:
//!
//! - `out` (bf16): the kernel rounds its output to bf16 (half an ulp is
//!   `2^-9` relative) and the Cube multiplies `P` after rounding it to bf16
//!   (another `2^-9` relative per term); `rtol = 2^-7` leaves a factor of
//!   two over both, and `atol = 2^-8` covers outputs near 0, where the
//!   absolute error of the rounded `P` dominates.
//! - `lse` (f32): computed in f32 from an f32 running sum; `1e-5` relative
//!   (the figure the numerics issue holds the kernels to) plus `1e-5`
//!   absolute for values near 0.

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
    /// The tolerance used.
    pub tolerance: Tolerance,
    /// No mismatch.
    pub passed: bool,
}

/// Compares `got` with `want` element by element.
pub fn compare(name: &str, got: &[f64], want: &[f64], tolerance: Tolerance) -> Comparison {
    let mut c = Comparison {
        name: name.to_string(),
        elements: want.len(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        mismatches: 0,
        first_mismatch: None,
        tolerance,
        passed: true,
    };
    if got.len() != want.len() {
        c.mismatches = got.len().abs_diff(want.len());
        c.passed = false;
        return c;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_infinite() || g.is_infinite() {
            g == w
        } else if g.is_nan() || w.is_nan() {
            false
        } else {
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
        assert!(!compare("x", &[1.0], &[1.0, 2.0], T).passed);
    }
}
