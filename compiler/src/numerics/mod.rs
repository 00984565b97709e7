//! Numerics of the AMLA rescale: a scalar model of the per-block update of
//! every `mul-to-add` variant ([`model`]) and the fidelity report of
//! `amlac numerics` ([`fidelity`]): a kernel run over several input
//! distributions, with FlashAttention and each AMLA variant compared with
//! float64.
//!
//! See `docs/NUMERICS.md` for the variants, their guards and the measured
//! table.

pub mod fidelity;
pub mod model;
