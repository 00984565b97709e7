//! 64-byte aligned, initialised byte storage: the backing of GM buffers and
//! local arenas.
//!
//! Invariants: the pointer is non-null, 64-byte aligned, valid for reads and
//! writes of `capacity()` bytes (at least `len()`, a multiple of 64, never 0),
//! and every byte is initialised. Dropping frees it with the same layout.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use crate::error::RuntimeError;

/// Alignment of every GM buffer and local arena, in bytes.
pub const ALIGN: usize = 64;

/// An owned, 64-byte aligned, zero- or pattern-initialised byte buffer.
pub struct AlignedBytes {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBytes owns its allocation exclusively, like Box<[u8]>; shared
// references only hand out `&[u8]`, mutable ones `&mut [u8]`.
unsafe impl Send for AlignedBytes {}
// SAFETY: as above; `&AlignedBytes` gives only read access through safe APIs.
unsafe impl Sync for AlignedBytes {}

impl AlignedBytes {
    /// Allocates `len` bytes, all set to `fill`. Fails (never aborts) if the
    /// size overflows or the allocator refuses.
    pub fn new(len: usize, fill: u8) -> Result<Self, RuntimeError> {
        let cap = len
            .max(1)
            .checked_next_multiple_of(ALIGN)
            .ok_or(RuntimeError::AllocFailed { bytes: len })?;
        let layout = Layout::from_size_align(cap, ALIGN)
            .map_err(|_| RuntimeError::AllocFailed { bytes: len })?;
        // SAFETY: `layout` has a non-zero size (cap >= 64).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(RuntimeError::AllocFailed { bytes: len })?;
        if fill != 0 {
            // SAFETY: `ptr` is valid for `cap` bytes, freshly allocated and unaliased.
            unsafe { std::ptr::write_bytes(ptr.as_ptr(), fill, cap) };
        }
        Ok(AlignedBytes { ptr, len, layout })
    }

    /// Allocates `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<Self, RuntimeError> {
        Self::new(len, 0)
    }

    /// Length in bytes as requested.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base pointer (64-byte aligned, valid for `len()` bytes).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid and initialised for len bytes; &self forbids writes
        // through safe code while the borrow lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid and initialised for len bytes; &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBytes({} bytes @ {:p})", self.len, self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_filled() {
        for len in [0usize, 1, 63, 64, 65, 4096] {
            let b = AlignedBytes::new(len, 0xAB).unwrap();
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|&x| x == 0xAB));
        }
        assert!(
            AlignedBytes::zeroed(100)
                .unwrap()
                .as_slice()
                .iter()
                .all(|&x| x == 0)
        );
    }

    #[test]
    fn huge_allocation_is_an_error() {
        assert!(AlignedBytes::zeroed(usize::MAX - 8).is_err());
    }
}
