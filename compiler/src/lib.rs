//! `amla-compiler`: the `.amla` kernel compiler.
//!
//! Pipeline: [`syntax`] (pest grammar → AST with spans) → [`check`] (names,
//! dtypes, symbolic shapes → typed AST) → [`ir`] (tile IR) → [`passes`] →
//! codegen (Cranelift). Diagnostics for every stage live in [`diag`].

pub mod check;
pub mod cli;
pub mod codegen;
pub mod diag;
pub mod driver;
pub mod flash_mla;
pub mod fuzz;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod numerics;
pub mod passes;
pub mod reference;
pub mod round16;
pub mod run;
pub mod simulate;
pub mod syntax;
pub mod target;
