//! (in progress)

pub mod plan_memory;
pub mod tile;
