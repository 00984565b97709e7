//! Linear polynomials over loop variables and open dims: the simplifier that
//! decides slice lengths (`j..j+BN` has length `BN`) and provable bounds.
//!
//! A [`Poly`] is `c + Σ kᵢ·xᵢ` with integer coefficients; bound dims and
//! consts are already numbers when a poly is built. Products of two
//! non-constant polys and divisions by non-constants are not linear and give
//! `None` (the caller then says "not a compile-time constant"). All
//! arithmetic is checked: overflow gives `None`, never a panic.

use std::collections::BTreeMap;

use super::hir::{DimId, LocalId};

/// An unknown in a polynomial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// A loop or parallel variable.
    Var(LocalId),
    /// A dim open until launch.
    Dim(DimId),
}

/// `constant + Σ coeff·atom`; invariant: no zero coefficient is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Poly {
    /// The constant term.
    pub constant: i64,
    /// Non-zero coefficients.
    pub terms: BTreeMap<Atom, i64>,
}

impl Poly {
    /// The constant `c`.
    pub fn constant(c: i64) -> Poly {
        Poly {
            constant: c,
            terms: BTreeMap::new(),
        }
    }

    /// The unknown `a`.
    pub fn atom(a: Atom) -> Poly {
        Poly {
            constant: 0,
            terms: BTreeMap::from([(a, 1)]),
        }
    }

    /// `Some(c)` when the poly is the constant `c`.
    pub fn as_constant(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    /// `self + other`.
    pub fn add(&self, other: &Poly) -> Option<Poly> {
        let mut out = self.clone();
        out.constant = out.constant.checked_add(other.constant)?;
        for (&a, &k) in &other.terms {
            let e = out.terms.entry(a).or_insert(0);
            *e = e.checked_add(k)?;
            if *e == 0 {
                out.terms.remove(&a);
            }
        }
        Some(out)
    }

    /// `k · self`.
    pub fn scale(&self, k: i64) -> Option<Poly> {
        if k == 0 {
            return Some(Poly::constant(0));
        }
        let mut out = Poly::constant(self.constant.checked_mul(k)?);
        for (&a, &c) in &self.terms {
            out.terms.insert(a, c.checked_mul(k)?);
        }
        Some(out)
    }

    /// `self - other`.
    pub fn sub(&self, other: &Poly) -> Option<Poly> {
        self.add(&other.scale(-1)?)
    }

    /// `self · other`, if one side is constant (else not linear).
    pub fn mul(&self, other: &Poly) -> Option<Poly> {
        match (self.as_constant(), other.as_constant()) {
            (Some(k), _) => other.scale(k),
            (_, Some(k)) => self.scale(k),
            _ => None,
        }
    }

    /// `self / other` (truncating), only for two constants with `other != 0`.
    pub fn div(&self, other: &Poly) -> Option<Poly> {
        Some(Poly::constant(
            self.as_constant()?.checked_div(other.as_constant()?)?,
        ))
    }

    /// `self % other`, only for two constants with `other != 0`.
    pub fn rem(&self, other: &Poly) -> Option<Poly> {
        Some(Poly::constant(
            self.as_constant()?.checked_rem(other.as_constant()?)?,
        ))
    }

    /// The least value over all atoms, given each atom's least value
    /// (`None` when some atom with a positive coefficient has no known
    /// minimum, or one with a negative coefficient appears at all).
    pub fn min_value(&self, min_of: impl Fn(Atom) -> Option<i64>) -> Option<i64> {
        let mut v = self.constant;
        for (&a, &k) in &self.terms {
            if k < 0 {
                return None;
            }
            v = v.checked_add(k.checked_mul(min_of(a)?)?)?;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j() -> Poly {
        Poly::atom(Atom::Var(LocalId(0)))
    }

    #[test]
    fn slice_length_simplifies() {
        // (j + 128) - j = 128
        let hi = j().add(&Poly::constant(128)).unwrap_or_default();
        assert_eq!(hi.sub(&j()).and_then(|p| p.as_constant()), Some(128));
        // g*4 + 4 - g*4 = 4
        let g4 = j().mul(&Poly::constant(4)).unwrap_or_default();
        let end = g4.add(&Poly::constant(4)).unwrap_or_default();
        assert_eq!(end.sub(&g4).and_then(|p| p.as_constant()), Some(4));
    }

    #[test]
    fn non_linear_is_refused() {
        assert_eq!(j().mul(&j()), None);
        assert_eq!(j().div(&Poly::constant(2)), None);
        assert_eq!(Poly::constant(7).div(&Poly::constant(0)), None);
        assert_eq!(
            Poly::constant(7).rem(&Poly::constant(4)),
            Some(Poly::constant(3))
        );
    }

    #[test]
    fn symbolic_length_is_not_constant() {
        let n = Poly::atom(Atom::Dim(DimId(0)));
        assert_eq!(n.sub(&j()).and_then(|p| p.as_constant()), None);
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(Poly::constant(i64::MAX).add(&Poly::constant(1)), None);
        assert_eq!(Poly::constant(i64::MIN).scale(-1), None);
    }

    #[test]
    fn min_value_uses_atom_minimums() {
        let p = j()
            .scale(2)
            .and_then(|p| p.add(&Poly::constant(3)))
            .unwrap_or_default();
        assert_eq!(p.min_value(|_| Some(5)), Some(13));
        assert_eq!(p.min_value(|_| None), None);
        assert_eq!(
            j().scale(-1).unwrap_or_default().min_value(|_| Some(0)),
            None
        );
    }
}
