//! `preload` (in progress).
