//! (in progress)

pub mod preload;
pub mod split;
