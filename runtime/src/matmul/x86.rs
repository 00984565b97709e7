//! x86-64 micro-kernels: AVX-512 BF16 (`vdpbf16ps`) and AVX2/FMA.
//!
//! Invariants: each kernel is only called after its features were detected at
//! run time (see `super::MatmulPath::is_supported`); both keep the whole
//! `MR × NR` accumulator tile in registers for the K loop and touch C only
//! at the start (when accumulating) and the end.

use std::arch::x86_64::*;

use super::{pairs, panels};

/// AVX-512 BF16 kernel: 8 rows × 32 columns = 16 zmm accumulators. Per pair
/// step: two B loads, eight 32-bit A broadcasts, sixteen `vdpbf16ps`.
///
/// # Safety
/// As `driver::MicroKernel` for `pairs::MR`/`pairs::NR`, and the CPU must
/// support `avx512f` and `avx512bf16`.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn avx512bf16_kernel(
    pc: usize,
    a: *const u32,
    ars: usize,
    aps: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
) {
    const MR: usize = pairs::MR;
    const _: () = assert!(pairs::NR == 32);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if load_c {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: c is valid for MR rows of 32 f32 at stride ldc (caller).
            unsafe {
                row[0] = _mm512_loadu_ps(c.add(r * ldc));
                row[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
            }
        }
    }
    for p in 0..pc {
        // SAFETY: b holds pc*32 u32 (caller); unaligned loads.
        let (b0, b1): (__m512bh, __m512bh) = unsafe {
            let bp = b.add(p * 32);
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.cast())),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(16).cast())),
            )
        };
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: A's (r, p) element is readable (caller); unaligned.
            let w = unsafe { a.add(r * ars + p * aps).read_unaligned() };
            // SAFETY: same-size plain-data transmute (16 × i32 → 32 × bf16).
            let av =
                unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(w as i32)) };
            row[0] = _mm512_dpbf16_ps(row[0], av, b0);
            row[1] = _mm512_dpbf16_ps(row[1], av, b1);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: as for the loads.
        unsafe {
            _mm512_storeu_ps(c.add(r * ldc), row[0]);
            _mm512_storeu_ps(c.add(r * ldc + 16), row[1]);
        }
    }
}

/// AVX2/FMA kernel: 6 rows × 16 columns = 12 ymm accumulators. Per k: two B
/// loads, six broadcasts, twelve FMAs.
///
/// # Safety
/// As `driver::MicroKernel` for `panels::MR`/`panels::NR`, and the CPU must
/// support `avx2` and `fma`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn avx2_kernel(
    pc: usize,
    a: *const f32,
    ars: usize,
    aps: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
) {
    const MR: usize = panels::MR;
    const _: () = assert!(panels::NR == 16);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if load_c {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: c is valid for MR rows of 16 f32 at stride ldc (caller).
            unsafe {
                row[0] = _mm256_loadu_ps(c.add(r * ldc));
                row[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
            }
        }
    }
    for p in 0..pc {
        // SAFETY: b holds pc*16 f32 (caller).
        let (b0, b1) = unsafe {
            (
                _mm256_loadu_ps(b.add(p * 16)),
                _mm256_loadu_ps(b.add(p * 16 + 8)),
            )
        };
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: A's (r, p) element is readable (caller); unaligned.
            let av = unsafe { _mm256_set1_ps(a.add(r * ars + p * aps).read_unaligned()) };
            row[0] = _mm256_fmadd_ps(av, b0, row[0]);
            row[1] = _mm256_fmadd_ps(av, b1, row[1]);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: as for the loads.
        unsafe {
            _mm256_storeu_ps(c.add(r * ldc), row[0]);
            _mm256_storeu_ps(c.add(r * ldc + 8), row[1]);
        }
    }
}
