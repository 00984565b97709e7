//! (in progress)

pub mod plan_memory;
