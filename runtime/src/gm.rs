//! Global memory: the typed host buffers a launch reads and writes.
//!
//! Invariants:
//! - Each buffer is 64-byte aligned, holds `len` elements of one [`DType`],
//!   and is zero-initialised unless created from data.
//! - Buffers are addressed by their index ([`GmId`]) in the order they were
//!   added; the launcher hands JIT code an array of [`GmDesc`] in that order.
//! - Safe accessors check the index, the dtype and (for element access) the
//!   bounds, and return errors, never panic.

use crate::aligned::AlignedBytes;
use crate::dtype::{DType, Element};
use crate::error::RuntimeError;

/// How the runtime's operations access GM: **the one switch point** between
/// plain and atomic GM accesses (read by `ops::Env::resolve`, nowhere else).
///
/// - [`GmAccess::Atomic`]: every runtime GM access is an atomic element
///   operation (atomic add a CAS loop), so even units that really overlap
///   are kernel races, not Rust undefined behaviour. For kernels whose
///   schedule is not known to be ordered (hand-written Rust kernels, tests,
///   race checking).
/// - [`GmAccess::Ordered`]: plain SIMD loads, stores and adds. Sound when
///   every two GM accesses of different units that touch the same element
///   (one of them a write) are ordered by a flag `set` → `wait` pair (the
///   flags' lock gives that edge a happens-before) or by program order within
///   one unit. The compiler's split pass produces exactly such schedules:
///   each GM workspace value crosses units only through a store, a `set_flag`
///   and a matching `wait_flag` before the load; parallel work items touch
///   disjoint slices of the outputs; and an `atomic_add` into GM is ordered
///   against every other access to that region by the flags around it, so
///   its read-modify-write cannot interleave with another unit's.
///   The race checker ([`crate::race`], `amlac run --race-check`) checks
///   this claim on a launch: it fails on any cross-unit conflicting pair of
///   GM accesses that no flag chain orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GmAccess {
    /// Atomic element operations (the default).
    #[default]
    Atomic,
    /// Plain accesses, for schedules whose GM accesses are ordered by flags.
    Ordered,
}

/// Index of a GM buffer in a [`Gm`] (and in `KernelCtx::gm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GmId(pub u32);

/// What JIT code sees of one GM buffer. `repr(C)`, 24 bytes:
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | `base` | `*mut u8` (64-byte aligned) |
/// | 8 | `len` | `u64`, elements |
/// | 16 | `dtype` | `u32`, [`DType`] code |
/// | 20 | `elem_bytes` | `u32` |
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GmDesc {
    /// Base pointer of the buffer.
    pub base: *mut u8,
    /// Length in elements.
    pub len: u64,
    /// [`DType`] code.
    pub dtype: u32,
    /// Bytes per element.
    pub elem_bytes: u32,
}

const _: () = {
    assert!(std::mem::size_of::<GmDesc>() == 24);
    assert!(std::mem::offset_of!(GmDesc, len) == 8);
    assert!(std::mem::offset_of!(GmDesc, dtype) == 16);
    assert!(std::mem::offset_of!(GmDesc, elem_bytes) == 20);
};

/// One named, typed GM buffer.
#[derive(Debug)]
pub struct GmBuffer {
    name: String,
    dtype: DType,
    len: usize,
    data: AlignedBytes,
}

impl GmBuffer {
    /// The buffer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The descriptor JIT code sees.
    pub fn desc(&self) -> GmDesc {
        GmDesc {
            base: self.data.as_ptr(),
            len: self.len as u64,
            dtype: self.dtype.code(),
            elem_bytes: self.dtype.size_bytes() as u32,
        }
    }
}

/// The set of GM buffers of a launch.
#[derive(Debug, Default)]
pub struct Gm {
    buffers: Vec<GmBuffer>,
}

impl Gm {
    /// An empty GM.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a zeroed buffer of `len` elements of `dtype`.
    pub fn add_zeroed(
        &mut self,
        name: &str,
        dtype: DType,
        len: usize,
    ) -> Result<GmId, RuntimeError> {
        let bytes = len
            .checked_mul(dtype.size_bytes())
            .ok_or(RuntimeError::AllocFailed { bytes: usize::MAX })?;
        let id = u32::try_from(self.buffers.len())
            .map_err(|_| RuntimeError::BadArgument("too many GM buffers".into()))?;
        self.buffers.push(GmBuffer {
            name: name.to_string(),
            dtype,
            len,
            data: AlignedBytes::zeroed(bytes)?,
        });
        Ok(GmId(id))
    }

    /// Adds a buffer holding a copy of `data`.
    pub fn add_from<T: Element>(&mut self, name: &str, data: &[T]) -> Result<GmId, RuntimeError> {
        let id = self.add_zeroed(name, T::DTYPE, data.len())?;
        self.slice_mut::<T>(id)?.copy_from_slice(data);
        Ok(id)
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// True when there is no buffer.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    /// The buffer `id`.
    pub fn buffer(&self, id: GmId) -> Result<&GmBuffer, RuntimeError> {
        self.buffers
            .get(id.0 as usize)
            .ok_or(RuntimeError::UnknownGmBuffer {
                index: u64::from(id.0),
                count: self.buffers.len() as u64,
            })
    }

    /// Finds a buffer by name.
    pub fn find(&self, name: &str) -> Option<GmId> {
        self.buffers
            .iter()
            .position(|b| b.name == name)
            .map(|i| GmId(i as u32))
    }

    fn checked<T: Element>(&self, id: GmId) -> Result<&GmBuffer, RuntimeError> {
        let b = self.buffer(id)?;
        if b.dtype != T::DTYPE {
            return Err(RuntimeError::DTypeMismatch {
                buffer: b.name.clone(),
                expected: T::DTYPE,
                actual: b.dtype,
            });
        }
        Ok(b)
    }

    /// The elements of buffer `id`, which must hold `T`.
    pub fn slice<T: Element>(&self, id: GmId) -> Result<&[T], RuntimeError> {
        let b = self.checked::<T>(id)?;
        // SAFETY: the allocation is 64-byte aligned (enough for T), initialised,
        // and holds len * size_of::<T>() bytes; every bit pattern is a valid T;
        // &self keeps it alive and unmodified through safe code.
        Ok(unsafe { std::slice::from_raw_parts(b.data.as_ptr() as *const T, b.len) })
    }

    /// The elements of buffer `id`, mutably.
    pub fn slice_mut<T: Element>(&mut self, id: GmId) -> Result<&mut [T], RuntimeError> {
        let b = self.checked::<T>(id)?;
        let (ptr, len) = (b.data.as_ptr(), b.len);
        // SAFETY: as in `slice`; &mut self makes the access exclusive.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr as *mut T, len) })
    }

    /// Sets every byte of buffer `id` to zero (no allocation).
    pub fn zero(&mut self, id: GmId) -> Result<(), RuntimeError> {
        let b = self.buffer(id)?;
        let (ptr, bytes) = (b.data.as_ptr(), b.len * b.dtype.size_bytes());
        // SAFETY: the allocation holds len * elem_bytes bytes; &mut self
        // makes the access exclusive; zero bytes are a valid value of every dtype.
        unsafe { std::ptr::write_bytes(ptr, 0, bytes) };
        Ok(())
    }

    /// Element `i` of buffer `id`.
    pub fn get<T: Element>(&self, id: GmId, i: usize) -> Result<T, RuntimeError> {
        let s = self.slice::<T>(id)?;
        s.get(i).copied().ok_or_else(|| self.oob(id, i, s.len()))
    }

    /// Sets element `i` of buffer `id`.
    pub fn set<T: Element>(&mut self, id: GmId, i: usize, v: T) -> Result<(), RuntimeError> {
        let len = self.slice::<T>(id)?.len();
        if i >= len {
            return Err(self.oob(id, i, len));
        }
        self.slice_mut::<T>(id)?[i] = v;
        Ok(())
    }

    /// Copies buffer `id` out as f32 (any float dtype, or i32 cast).
    pub fn to_f32_vec(&self, id: GmId) -> Result<Vec<f32>, RuntimeError> {
        let b = self.buffer(id)?;
        Ok(match b.dtype {
            DType::F32 => self.slice::<f32>(id)?.to_vec(),
            DType::Bf16 => self
                .slice::<half::bf16>(id)?
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            DType::F16 => self
                .slice::<half::f16>(id)?
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            DType::I32 => self.slice::<i32>(id)?.iter().map(|&x| x as f32).collect(),
        })
    }

    fn oob(&self, id: GmId, i: usize, len: usize) -> RuntimeError {
        RuntimeError::OutOfBounds {
            what: "GM element access".into(),
            buffer: self
                .buffers
                .get(id.0 as usize)
                .map_or_else(String::new, |b| b.name.clone()),
            start: i as u64,
            end: i as u64 + 1,
            capacity: len as u64,
        }
    }

    /// The descriptors of all buffers, in index order.
    pub fn descs(&self) -> Vec<GmDesc> {
        self.buffers.iter().map(GmBuffer::desc).collect()
    }

    /// The names of all buffers, in index order.
    pub fn names(&self) -> Vec<String> {
        self.buffers.iter().map(|b| b.name.clone()).collect()
    }

    /// [`Gm::descs`] without the vector.
    pub fn desc_iter(&self) -> impl Iterator<Item = GmDesc> + '_ {
        self.buffers.iter().map(GmBuffer::desc)
    }

    /// [`Gm::names`] without the copies.
    pub fn name_iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.buffers.iter().map(|b| b.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn typed_buffers() {
        let mut gm = Gm::new();
        let a = gm.add_from("a", &[1.0f32, 2.0, 3.0]).unwrap();
        let b = gm.add_zeroed("b", DType::Bf16, 5).unwrap();
        let c = gm.add_from("c", &[7i32]).unwrap();
        assert_eq!(gm.len(), 3);
        assert_eq!(gm.find("b"), Some(b));
        assert_eq!(gm.get::<f32>(a, 2).unwrap(), 3.0);
        gm.set(b, 4, bf16::from_f32(1.5)).unwrap();
        assert_eq!(gm.to_f32_vec(b).unwrap(), vec![0.0, 0.0, 0.0, 0.0, 1.5]);
        assert_eq!(gm.get::<i32>(c, 0).unwrap(), 7);
        let d = gm.buffer(b).unwrap().desc();
        assert_eq!(d.len, 5);
        assert_eq!(d.dtype, DType::Bf16.code());
        assert_eq!(d.elem_bytes, 2);
        assert_eq!(d.base as usize % 64, 0);
    }

    #[test]
    fn bad_access_is_an_error() {
        let mut gm = Gm::new();
        let a = gm.add_from("a", &[1.0f32]).unwrap();
        assert!(matches!(
            gm.get::<f32>(a, 1),
            Err(RuntimeError::OutOfBounds { .. })
        ));
        assert!(matches!(
            gm.slice::<i32>(a),
            Err(RuntimeError::DTypeMismatch { .. })
        ));
        assert!(matches!(
            gm.slice::<f32>(GmId(9)),
            Err(RuntimeError::UnknownGmBuffer { .. })
        ));
        assert!(gm.set(a, 5, 1.0f32).is_err());
        assert!(gm.add_zeroed("huge", DType::F32, usize::MAX / 2).is_err());
    }
}
