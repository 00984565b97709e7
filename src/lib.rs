//! `amla`: compile `.amla` attention kernels and run them on an emulated
//! Ascend-style AI core.
//!
//! This crate is a facade: it re-exports [`amla_compiler`] (front end, tile
//! IR, passes, Cranelift JIT) and [`amla_runtime`] (the emulated AI core), so
//! that users and the top-level `tests/` need a single dependency.

pub use amla_compiler as compiler;
pub use amla_runtime as runtime;
