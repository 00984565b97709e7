//! The pass pipeline (in progress).

pub mod mul_to_add;
pub mod plan_memory;
pub mod preload;
pub mod split;
pub mod tile;
