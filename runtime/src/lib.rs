//! `amla-runtime`: an emulated Ascend-style AI core.
//!
//! Architecture invariant: this crate never depends on the compiler or on
//! Cranelift. JIT code calls into it through the `extern "C"` entry points
//! listed by [`jit::jit_symbols`]. See `runtime/README.md` for the execution
//! model, the `KernelCtx` layout and the symbol table.

#![warn(missing_docs)]

pub mod aligned;
pub mod arena;
pub mod config;
mod cpus;
pub mod dtype;
pub mod error;
pub mod gm;
pub mod matmul;
pub mod peak;
pub mod pool;
pub mod units;

pub use config::{CoreConfig, LaunchConfig, Schedule};
pub use dtype::{DType, Element};
pub use error::{RuntimeError, status};
pub use gm::{Gm, GmDesc, GmId};
pub use units::{Buffer, Pipe, UnitKind};
pub mod ctx;
pub mod flags;
pub mod jit;
pub mod launch;
pub mod ops;
pub mod race;
pub mod rescale;
pub mod stats;
pub mod trace;
pub mod vexp;

pub use ctx::KernelCtx;
pub use launch::{Entry, EntryFn, Kernel, LaunchReport, RustEntry, Unit, launch};
pub use matmul::{AccumMode, BLayout, Gemm, MatmulPath};
pub use ops::{
    FOLDED_COPY_PATH, FOLDED_LOAD_PATH, FOLDED_STORE_PATH, FUSED_READ_PATH, Folded, FoldedStore,
    MatmulSrc, StoreMode, Tile,
};
pub use pool::Launcher;
