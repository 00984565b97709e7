//! The pass pipeline (in progress).

pub mod mul_to_add;
pub mod preload;
pub mod split;
