//! Element types of GM buffers and local tiles, and their conversions.
//!
//! Invariants:
//! - [`DType`] codes (`repr(u32)`) are part of the JIT ABI: 0 = f32, 1 = bf16,
//!   2 = f16, 3 = i32. They never change.
//! - Float → narrower float conversions round to nearest, ties to even (the
//!   FixPipe rule), via the `half` crate; NaN stays NaN.
//! - GM is shared by all units, so every runtime access to GM goes through
//!   [`Element::load_shared`], [`Element::store_shared`] or
//!   [`Element::atomic_add_shared`], which use atomic operations: concurrent
//!   accesses from different units are then never a Rust data race (only a
//!   kernel-level race, as on the hardware).

use std::sync::atomic::{AtomicI32, AtomicU16, AtomicU32, Ordering};

use half::{bf16, f16};

/// An element type.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32 = 0,
    /// bfloat16.
    Bf16 = 1,
    /// IEEE binary16.
    F16 = 2,
    /// 32-bit two's complement integer.
    I32 = 3,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }

    /// Decodes a JIT ABI dtype code.
    pub const fn from_code(code: u32) -> Option<DType> {
        match code {
            0 => Some(DType::F32),
            1 => Some(DType::Bf16),
            2 => Some(DType::F16),
            3 => Some(DType::I32),
            _ => None,
        }
    }

    /// The JIT ABI code.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// True for f32, bf16 and f16.
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }

    /// Lower-case name as in `.amla` source: `f32`, `bf16`, `f16`, `i32`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::I32 => "i32",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
    impl Sealed for i32 {}
}

/// A Rust type that is one of the runtime's element types.
///
/// Sealed: implemented for `f32`, `half::bf16`, `half::f16` and `i32` only.
pub trait Element:
    Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + 'static + sealed::Sealed
{
    /// The runtime dtype of `Self`.
    const DTYPE: DType;
    /// Converts to f32 (exact for bf16/f16; `as` cast for i32).
    fn to_f32(self) -> f32;
    /// Converts from f32, rounding to nearest even (`as` cast, saturating, for i32).
    fn from_f32(v: f32) -> Self;
    /// The raw bits, zero-extended.
    fn to_bits32(self) -> u32;
    /// From raw bits (the low `size_bytes()*8` bits are used).
    fn from_bits32(bits: u32) -> Self;
    /// Loads from shared (GM) memory with a relaxed atomic load.
    ///
    /// # Safety
    /// `p` must be aligned for `Self`, valid for reads, and every concurrent
    /// access to it must be atomic.
    unsafe fn load_shared(p: *const Self) -> Self;
    /// Stores to shared (GM) memory with a relaxed atomic store.
    ///
    /// # Safety
    /// As [`Element::load_shared`], and valid for writes.
    unsafe fn store_shared(p: *mut Self, v: Self);
    /// Atomically adds `v` to `*p` (floats: the sum rounded to `Self`, ties
    /// to even; i32: wrapping).
    ///
    /// # Safety
    /// As [`Element::store_shared`].
    unsafe fn atomic_add_shared(p: *mut Self, v: Self);
    /// `self + v` as [`Element::atomic_add_shared`] computes it (floats: in
    /// f32, rounded to `Self`; i32: wrapping), without atomicity.
    fn plain_add(self, v: Self) -> Self;
}

/// Float atomic add through a CAS loop on the bits.
macro_rules! cas_add {
    ($atomic:ty, $p:expr, $v:expr, $from:expr, $to:expr) => {{
        // SAFETY: forwarded from the caller's contract (aligned, valid, atomic-only).
        let a = unsafe { <$atomic>::from_ptr($p.cast()) };
        let mut cur = a.load(Ordering::Relaxed);
        loop {
            let new = $to($from(cur) + $from($v));
            match a.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
    }};
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_bits32(self) -> u32 {
        self.to_bits()
    }
    fn from_bits32(bits: u32) -> Self {
        f32::from_bits(bits)
    }
    unsafe fn load_shared(p: *const Self) -> Self {
        // SAFETY: caller's contract.
        f32::from_bits(unsafe { AtomicU32::from_ptr(p as *mut u32) }.load(Ordering::Relaxed))
    }
    unsafe fn store_shared(p: *mut Self, v: Self) {
        // SAFETY: caller's contract.
        unsafe { AtomicU32::from_ptr(p.cast()) }.store(v.to_bits(), Ordering::Relaxed)
    }
    unsafe fn atomic_add_shared(p: *mut Self, v: Self) {
        cas_add!(AtomicU32, p, v.to_bits(), f32::from_bits, f32::to_bits)
    }
    #[inline(always)]
    fn plain_add(self, v: Self) -> Self {
        self + v
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::Bf16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_bits32(self) -> u32 {
        u32::from(self.to_bits())
    }
    fn from_bits32(bits: u32) -> Self {
        bf16::from_bits(bits as u16)
    }
    unsafe fn load_shared(p: *const Self) -> Self {
        // SAFETY: caller's contract.
        bf16::from_bits(unsafe { AtomicU16::from_ptr(p as *mut u16) }.load(Ordering::Relaxed))
    }
    unsafe fn store_shared(p: *mut Self, v: Self) {
        // SAFETY: caller's contract.
        unsafe { AtomicU16::from_ptr(p.cast()) }.store(v.to_bits(), Ordering::Relaxed)
    }
    unsafe fn atomic_add_shared(p: *mut Self, v: Self) {
        let from = |b: u16| bf16::from_bits(b).to_f32();
        let to = |x: f32| bf16::from_f32(x).to_bits();
        cas_add!(AtomicU16, p, v.to_bits(), from, to)
    }
    #[inline(always)]
    fn plain_add(self, v: Self) -> Self {
        bf16::from_f32(self.to_f32() + v.to_f32())
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_bits32(self) -> u32 {
        u32::from(self.to_bits())
    }
    fn from_bits32(bits: u32) -> Self {
        f16::from_bits(bits as u16)
    }
    unsafe fn load_shared(p: *const Self) -> Self {
        // SAFETY: caller's contract.
        f16::from_bits(unsafe { AtomicU16::from_ptr(p as *mut u16) }.load(Ordering::Relaxed))
    }
    unsafe fn store_shared(p: *mut Self, v: Self) {
        // SAFETY: caller's contract.
        unsafe { AtomicU16::from_ptr(p.cast()) }.store(v.to_bits(), Ordering::Relaxed)
    }
    unsafe fn atomic_add_shared(p: *mut Self, v: Self) {
        let from = |b: u16| f16::from_bits(b).to_f32();
        let to = |x: f32| f16::from_f32(x).to_bits();
        cas_add!(AtomicU16, p, v.to_bits(), from, to)
    }
    #[inline(always)]
    fn plain_add(self, v: Self) -> Self {
        f16::from_f32(self.to_f32() + v.to_f32())
    }
}

impl Element for i32 {
    const DTYPE: DType = DType::I32;
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(v: f32) -> Self {
        v as i32
    }
    fn to_bits32(self) -> u32 {
        self as u32
    }
    fn from_bits32(bits: u32) -> Self {
        bits as i32
    }
    unsafe fn load_shared(p: *const Self) -> Self {
        // SAFETY: caller's contract.
        unsafe { AtomicI32::from_ptr(p as *mut i32) }.load(Ordering::Relaxed)
    }
    unsafe fn store_shared(p: *mut Self, v: Self) {
        // SAFETY: caller's contract.
        unsafe { AtomicI32::from_ptr(p) }.store(v, Ordering::Relaxed)
    }
    unsafe fn atomic_add_shared(p: *mut Self, v: Self) {
        // SAFETY: caller's contract.
        unsafe { AtomicI32::from_ptr(p) }.fetch_add(v, Ordering::Relaxed);
    }
    #[inline(always)]
    fn plain_add(self, v: Self) -> Self {
        self.wrapping_add(v)
    }
}

/// Converts one element between types: bit copy for equal types, through f32
/// (round to nearest even) between float types.
#[inline(always)]
pub fn convert<S: Element, D: Element>(s: S) -> D {
    if S::DTYPE == D::DTYPE {
        D::from_bits32(s.to_bits32())
    } else {
        D::from_f32(s.to_f32())
    }
}

/// Whether the runtime converts `src` to `dst` in a copy: equal types, or
/// both float types.
pub fn conversion_supported(src: DType, dst: DType) -> bool {
    src == dst || (src.is_float() && dst.is_float())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in [DType::F32, DType::Bf16, DType::F16, DType::I32] {
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::from_code(4), None);
        assert_eq!(DType::Bf16.size_bytes(), 2);
        assert_eq!(DType::I32.size_bytes(), 4);
    }

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is exactly half-way between 1 and 1 + 2^-7: ties to even -> 1.
        let tie_down = f32::from_bits(0x3F80_8000);
        assert_eq!(convert::<f32, bf16>(tie_down).to_bits(), 0x3F80);
        // 1 + 3*2^-8 is half-way between 1+2^-7 (odd) and 1+2^-6 (even) -> up.
        let tie_up = f32::from_bits(0x3F81_8000);
        assert_eq!(convert::<f32, bf16>(tie_up).to_bits(), 0x3F82);
        // Just above half-way rounds up.
        assert_eq!(
            convert::<f32, bf16>(f32::from_bits(0x3F80_8001)).to_bits(),
            0x3F81
        );
        assert!(convert::<f32, bf16>(f32::NAN).to_f32().is_nan());
        assert!(conversion_supported(DType::F32, DType::Bf16));
        assert!(!conversion_supported(DType::I32, DType::F32));
    }

    #[test]
    fn shared_atomic_add() {
        let mut x = 1.5f32;
        // SAFETY: `x` is a live, aligned local; no concurrent access.
        unsafe { f32::atomic_add_shared(&mut x, 2.25) };
        assert_eq!(x, 3.75);
        let mut h = bf16::from_f32(1.0);
        // SAFETY: as above.
        unsafe { bf16::atomic_add_shared(&mut h, bf16::from_f32(0.5)) };
        assert_eq!(h.to_f32(), 1.5);
        let mut i = 7i32;
        // SAFETY: as above.
        unsafe { i32::atomic_add_shared(&mut i, -9) };
        assert_eq!(i, -2);
    }
}
