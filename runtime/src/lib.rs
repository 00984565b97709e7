//! `amla-runtime`: an emulated Ascend-style AI core.
//!
//! Architecture invariant: this crate never depends on the compiler or on
//! Cranelift. JIT code calls into it through `extern "C"` entry points.
