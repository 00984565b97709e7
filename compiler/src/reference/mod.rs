//! Float64 reference attention: the oracle every kernel run is checked against.
//!
//! This is plain softmax attention, computed independently of the `.amla`
//! program (no online softmax, no blocking), so a bug in an example kernel or
//! in the compiler cannot hide in the reference:
//!
//! ```text
//! s[r, c]  = scale · Σ_d q[r, d] · k[c, d]        for visible (r, c)
//! lse[r]   = ln Σ_c exp(s[r, c])
//! out[r,:] = Σ_c exp(s[r, c] − lse[r]) · v[c, :]
//! mag[r,:] = Σ_c exp(s[r, c] − lse[r]) · |v[c, :]|
//! ```
//!
//! `mag` is each output element's *magnitude*: the sum of the absolute
//! terms whose signed sum is `out`. A kernel that perturbs every weight by
//! a relative `δ` (rounding `P` to bf16) moves `out` by at most `δ · mag`,
//! however small cancellation makes `out` itself (`run/compare.rs`).
//!
//! Conventions for rows that see no key at all (an empty sequence, or a row
//! whose keys are all masked), the same as FlashMLA's: `out` is 0 and `lse` is
//! `+inf`. Inputs are read as f64 exactly (bf16, f16 and f32 widen without
//! rounding), so the reference is accurate to about 1e-15 relative.

/// One attention problem: `rows` query rows against `keys` keys.
///
/// Invariant: `q.len() == rows * d`, `k.len() == keys * d`,
/// `v.len() == keys * dv`; checked by [`attention`].
pub struct Problem<'a> {
    /// Query rows, row-major `[rows, d]`.
    pub q: &'a [f64],
    /// Keys, row-major `[keys, d]`.
    pub k: &'a [f64],
    /// Values, row-major `[keys, dv]`.
    pub v: &'a [f64],
    /// Number of query rows.
    pub rows: usize,
    /// Number of keys.
    pub keys: usize,
    /// Channels of q and k.
    pub d: usize,
    /// Channels of v (and of the output).
    pub dv: usize,
    /// Multiplies every score before the softmax.
    pub scale: f64,
}

/// The reference result of one [`Problem`].
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// `[rows, dv]`, row-major.
    pub out: Vec<f64>,
    /// `[rows]`: natural-log sum of exp of the visible scaled scores.
    pub lse: Vec<f64>,
    /// `[rows, dv]`: the magnitude of each element of `out` (the module
    /// doc), 0 for rows that see no key.
    pub mag: Vec<f64>,
}

/// Why a reference problem is malformed (a caller bug, reported not panicked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("reference attention: {what} has {got} elements, expected {expected}")]
pub struct ShapeError {
    /// Which operand.
    pub what: &'static str,
    /// Elements given.
    pub got: usize,
    /// Elements expected.
    pub expected: usize,
}

/// Softmax attention in f64; `visible(row, key)` says which keys a row sees.
pub fn attention(
    p: &Problem<'_>,
    visible: impl Fn(usize, usize) -> bool,
) -> Result<Output, ShapeError> {
    for (what, got, expected) in [
        ("q", p.q.len(), p.rows * p.d),
        ("k", p.k.len(), p.keys * p.d),
        ("v", p.v.len(), p.keys * p.dv),
    ] {
        if got != expected {
            return Err(ShapeError {
                what,
                got,
                expected,
            });
        }
    }
    let mut out = vec![0.0; p.rows * p.dv];
    let mut mag = vec![0.0; p.rows * p.dv];
    let mut lse = vec![f64::INFINITY; p.rows];
    let mut scores = Vec::with_capacity(p.keys);
    for r in 0..p.rows {
        let qr = &p.q[r * p.d..(r + 1) * p.d];
        scores.clear();
        for c in (0..p.keys).filter(|&c| visible(r, c)) {
            let kc = &p.k[c * p.d..(c + 1) * p.d];
            let dot: f64 = qr.iter().zip(kc).map(|(a, b)| a * b).sum();
            scores.push((c, p.scale * dot));
        }
        if scores.is_empty() {
            continue; // out stays 0, lse stays +inf
        }
        let max = scores
            .iter()
            .map(|&(_, s)| s)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = scores.iter().map(|&(_, s)| (s - max).exp()).sum();
        let row_lse = max + sum.ln();
        lse[r] = row_lse;
        let o = &mut out[r * p.dv..(r + 1) * p.dv];
        let a = &mut mag[r * p.dv..(r + 1) * p.dv];
        for &(c, s) in &scores {
            let w = (s - row_lse).exp();
            let vc = &p.v[c * p.dv..(c + 1) * p.dv];
            for ((oi, ai), vi) in o.iter_mut().zip(a.iter_mut()).zip(vc) {
                *oi += w * vi;
                *ai += w * vi.abs();
            }
        }
    }
    Ok(Output { out, lse, mag })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem<'a>(q: &'a [f64], k: &'a [f64], v: &'a [f64], d: usize, dv: usize) -> Problem<'a> {
        Problem {
            q,
            k,
            v,
            rows: q.len() / d,
            keys: k.len() / d,
            d,
            dv,
            scale: 1.0,
        }
    }

    #[test]
    fn equal_scores_average_the_values() {
        let q = [1.0, 0.0];
        let k = [1.0, 0.0, 1.0, 0.0];
        let v = [2.0, 4.0];
        let r = attention(&problem(&q, &k, &v, 2, 1), |_, _| true).unwrap();
        assert!((r.out[0] - 3.0).abs() < 1e-15);
        assert!((r.mag[0] - 3.0).abs() < 1e-15);
        assert!((r.lse[0] - (1.0 + 2f64.ln())).abs() < 1e-15);
    }

    #[test]
    fn the_magnitude_is_the_sum_of_the_absolute_terms() {
        // Two equal weights on +2 and -2: out cancels to 0, mag is 2.
        let q = [1.0];
        let k = [1.0, 1.0];
        let v = [2.0, -2.0];
        let r = attention(&problem(&q, &k, &v, 1, 1), |_, _| true).unwrap();
        assert!(r.out[0].abs() < 1e-15);
        assert!((r.mag[0] - 2.0).abs() < 1e-15);
    }

    #[test]
    fn masked_keys_are_ignored() {
        let q = [1.0];
        let k = [1.0, 50.0];
        let v = [7.0, -1.0];
        let r = attention(&problem(&q, &k, &v, 1, 1), |_, c| c == 0).unwrap();
        assert_eq!(r.out, vec![7.0]);
        assert_eq!(r.lse, vec![1.0]);
    }

    #[test]
    fn a_row_that_sees_nothing_gives_zero_and_infinite_lse() {
        let q = [1.0, 2.0];
        let k = [1.0];
        let v = [3.0];
        let r = attention(&problem(&q, &k, &v, 1, 1), |row, _| row == 1).unwrap();
        assert_eq!(r.out[0], 0.0);
        assert_eq!(r.mag[0], 0.0);
        assert_eq!(r.lse[0], f64::INFINITY);
        assert_eq!(r.out[1], 3.0);
    }

    #[test]
    fn large_scores_do_not_overflow() {
        let q = [1000.0];
        let k = [1.0, 0.999];
        let v = [1.0, 0.0];
        let r = attention(&problem(&q, &k, &v, 1, 1), |_, _| true).unwrap();
        assert!(r.out[0].is_finite() && r.lse[0].is_finite());
        assert!((r.out[0] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn wrong_lengths_are_errors_naming_the_operand() {
        let p = Problem {
            q: &[1.0],
            k: &[1.0],
            v: &[1.0],
            rows: 1,
            keys: 2,
            d: 1,
            dv: 1,
            scale: 1.0,
        };
        let e = attention(&p, |_, _| true).unwrap_err();
        assert_eq!(e.what, "k");
    }
}
