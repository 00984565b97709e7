//! Per-core local arenas: L1, L0A, L0B, L0C (the Cube's) and one UB per
//! Vector unit, sized from [`CoreConfig`].
//!
//! Invariants:
//! - Each arena is one 64-byte aligned allocation of exactly its configured
//!   capacity; it is owned by exactly one unit thread during a launch, so
//!   local memory is never shared between threads.
//! - [`Arena::alloc`] is a bump allocator for Rust-written kernels and tests;
//!   it never hands out overlapping ranges and fails with an error naming the
//!   buffer, the requested bytes and the capacity. JIT code uses offsets
//!   planned by the compiler instead, and the runtime bounds-checks them.

use crate::aligned::{ALIGN, AlignedBytes};
use crate::config::CoreConfig;
use crate::error::RuntimeError;
use crate::units::Buffer;

/// A byte range handed out by [`Arena::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAlloc {
    /// The buffer it lives in.
    pub buffer: Buffer,
    /// Byte offset from the arena base (a multiple of the requested alignment).
    pub offset: usize,
    /// Size in bytes.
    pub bytes: usize,
}

/// One local buffer of an emulated core.
#[derive(Debug)]
pub struct Arena {
    buffer: Buffer,
    mem: AlignedBytes,
    used: usize,
}

impl Arena {
    /// Allocates an arena of `capacity` bytes, every byte set to `fill`.
    pub fn new(buffer: Buffer, capacity: usize, fill: u8) -> Result<Self, RuntimeError> {
        Ok(Arena {
            buffer,
            mem: AlignedBytes::new(capacity, fill)?,
            used: 0,
        })
    }

    /// Which buffer this is.
    pub fn buffer(&self) -> Buffer {
        self.buffer
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    /// Bytes handed out by [`Arena::alloc`] so far (including alignment padding).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Base pointer (64-byte aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        self.mem.as_slice()
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.mem.as_mut_slice()
    }

    /// Reserves `bytes` bytes aligned to `align` (a power of two, at most 64).
    pub fn alloc(&mut self, bytes: usize, align: usize) -> Result<LocalAlloc, RuntimeError> {
        if !align.is_power_of_two() || align > ALIGN {
            return Err(RuntimeError::BadArgument(format!(
                "{} allocation alignment {align} is not a power of two <= {ALIGN}",
                self.buffer
            )));
        }
        let err = || RuntimeError::OutOfLocalMemory {
            buffer: self.buffer,
            requested: bytes,
            capacity: self.capacity(),
            used: self.used,
        };
        let offset = self.used.checked_next_multiple_of(align).ok_or_else(err)?;
        let end = offset.checked_add(bytes).ok_or_else(err)?;
        if end > self.capacity() {
            return Err(err());
        }
        self.used = end;
        Ok(LocalAlloc {
            buffer: self.buffer,
            offset,
            bytes,
        })
    }

    /// Forgets every allocation (the memory keeps its contents).
    pub fn reset(&mut self) {
        self.used = 0;
    }
}

/// The Cube's arenas of one core.
#[derive(Debug)]
pub struct CubeArenas {
    /// L1.
    pub l1: Arena,
    /// L0A.
    pub l0a: Arena,
    /// L0B.
    pub l0b: Arena,
    /// L0C.
    pub l0c: Arena,
}

impl CubeArenas {
    /// Allocates the four Cube buffers with the capacities of `cfg`.
    pub fn new(cfg: &CoreConfig, fill: u8) -> Result<Self, RuntimeError> {
        Ok(CubeArenas {
            l1: Arena::new(Buffer::L1, cfg.l1, fill)?,
            l0a: Arena::new(Buffer::L0A, cfg.l0a, fill)?,
            l0b: Arena::new(Buffer::L0B, cfg.l0b, fill)?,
            l0c: Arena::new(Buffer::L0C, cfg.l0c, fill)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_allocation_and_clear_errors() {
        let cfg = CoreConfig::default();
        let mut c = CubeArenas::new(&cfg, 0).unwrap();
        let cap = cfg.l0a;
        assert_eq!(c.l0a.capacity(), cap);
        assert_eq!(c.l0a.as_ptr() as usize % 64, 0);
        let a = c.l0a.alloc(100, 4).unwrap();
        let b = c.l0a.alloc(64, 64).unwrap();
        assert_eq!(a.offset, 0);
        assert_eq!(b.offset, 128);
        let e = c.l0a.alloc(cap, 1).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("l0a") && msg.contains(&cap.to_string()) && msg.contains("192"),
            "{msg}"
        );
        assert!(c.l0a.alloc(usize::MAX, 64).is_err());
        assert!(c.l0a.alloc(1, 3).is_err());
        c.l0a.reset();
        assert_eq!(c.l0a.alloc(cap, 64).unwrap().offset, 0);
        let ub = Arena::new(Buffer::Ub, cfg.ub, 0xFF).unwrap();
        assert_eq!(ub.capacity(), cfg.ub);
        assert!(ub.bytes().iter().all(|&x| x == 0xFF));
    }
}
