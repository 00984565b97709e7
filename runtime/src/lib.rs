//! `amla-runtime`: an emulated Ascend-style AI core.
//!
//! Architecture invariant: this crate never depends on the compiler or on
//! Cranelift. JIT code calls into it through the `extern "C"` entry points
//! listed by [`jit::jit_symbols`].

pub mod aligned;
pub mod arena;
pub mod config;
pub mod dtype;
pub mod error;
pub mod gm;
pub mod matmul;
pub mod units;

pub use config::{CoreConfig, LaunchConfig};
pub use dtype::{DType, Element};
pub use error::{RuntimeError, status};
pub use gm::{Gm, GmDesc, GmId};
pub use units::{Buffer, Pipe, UnitKind};
