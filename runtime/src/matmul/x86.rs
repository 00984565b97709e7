//! x86-64 micro-kernels: AVX-512 BF16 (`vdpbf16ps`) and AVX2/FMA.
//!
//! Invariants: each kernel is only called after its features were detected at
//! run time (see `super::MatmulPath::is_supported`); both keep the whole
//! `MR × NR` accumulator tile in registers for the K loop and touch C only
//! at the start (when accumulating) and the end.

use std::arch::x86_64::*;

use half::bf16;

use super::driver::TileC;
use super::{BLayout, Gemm, pairs, panels};

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
    tile_c: TileC,
) {
    const MR: usize = pairs::MR;
    const _: () = assert!(pairs::NR == 32);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if tile_c == TileC::Load {
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
            let (p0, p1) = (c.add(r * ldc), c.add(r * ldc + 16));
            let (mut v0, mut v1) = (row[0], row[1]);
            if tile_c == TileC::AddAfter {
                v0 = _mm512_add_ps(_mm512_loadu_ps(p0), v0);
                v1 = _mm512_add_ps(_mm512_loadu_ps(p1), v1);
            }
            _mm512_storeu_ps(p0, v0);
            _mm512_storeu_ps(p1, v1);
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
    tile_c: TileC,
) {
    const MR: usize = panels::MR;
    const _: () = assert!(panels::NR == 16);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if tile_c == TileC::Load {
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
            let (p0, p1) = (c.add(r * ldc), c.add(r * ldc + 8));
            let (mut v0, mut v1) = (row[0], row[1]);
            if tile_c == TileC::AddAfter {
                v0 = _mm256_add_ps(_mm256_loadu_ps(p0), v0);
                v1 = _mm256_add_ps(_mm256_loadu_ps(p1), v1);
            }
            _mm256_storeu_ps(p0, v0);
            _mm256_storeu_ps(p1, v1);
        }
    }
}

/// AVX-512 packing of B's pairs, the layout of [`pairs::pack_b`] (and the
/// same bits: a test compares the two buffers). Full panels of `[K,N]` B
/// interleave two rows of bf16 into pairs sixteen at a time; full panels of
/// `[N,K]` B with whole pairs (even K) transpose 16 × 16 blocks of pairs in
/// registers. Edge panels, odd-K `[N,K]` and the remainder of 16 pairs go
/// through the scalar panel packer.
///
/// # Safety
/// The CPU must support `avx512f`; `g` checked against `b` (`Gemm::check`),
/// `buf` sized as for [`pairs::pack_b`].
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_b_pairs(g: &Gemm, b: &[bf16], buf: &mut [u32], s0: usize, pc: usize) {
    const NR: usize = pairs::NR;
    const _: () = assert!(NR == 32);
    for (nb, block) in buf.chunks_exact_mut(pc * NR).enumerate() {
        let j0 = nb * NR;
        if g.n - j0 < NR {
            pairs::pack_b_panel(g, b, block, j0, s0, pc);
            continue;
        }
        match g.b_layout {
            BLayout::KN => {
                for p in 0..pc {
                    let kk = 2 * (s0 + p);
                    let r0 = &b[kk * g.ldb + j0..][..NR];
                    // The second row of the pair (past K: zeros).
                    let r1 = if kk + 1 < g.k {
                        &b[(kk + 1) * g.ldb + j0..][..NR]
                    } else {
                        &ZERO_ROW[..]
                    };
                    // The rows PREFETCH_PAIRS pairs on, while these pack.
                    for ahead in [kk + 2 * PREFETCH_PAIRS, kk + 2 * PREFETCH_PAIRS + 1] {
                        if ahead < g.k {
                            prefetch(&b[ahead * g.ldb + j0]);
                        }
                    }
                    let dst = &mut block[p * NR..][..NR];
                    for h in 0..2 {
                        // SAFETY: r0/r1 hold NR bf16, dst NR u32 (sliced
                        // above); unaligned 256- and 512-bit accesses.
                        unsafe {
                            let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                r0.as_ptr().add(16 * h).cast(),
                            ));
                            let hi = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                                _mm256_loadu_si256(r1.as_ptr().add(16 * h).cast()),
                            ));
                            _mm512_storeu_si512(
                                dst.as_mut_ptr().add(16 * h).cast(),
                                _mm512_or_si512(lo, hi),
                            );
                        }
                    }
                }
            }
            BLayout::NK if g.k.is_multiple_of(2) => {
                let full = pc / 16 * 16;
                for jb in [0, 16] {
                    let rows: [&[bf16]; 16] =
                        std::array::from_fn(|t| &b[(j0 + jb + t) * g.ldb + 2 * s0..][..2 * pc]);
                    // The next 16 rows of B, a 64-byte line of each per step
                    // (the same columns these steps read), while these pack.
                    let next = j0 + jb + 16;
                    for pb in (0..full).step_by(16) {
                        if next + 16 <= g.n {
                            for t in 0..16 {
                                prefetch(&b[(next + t) * g.ldb + 2 * (s0 + pb)]);
                            }
                        }
                        // SAFETY: each row holds pc pairs, pb + 16 <= pc;
                        // the stores land in block[(pb+q)*NR + jb..][..16],
                        // inside block (pb + 15 < pc, jb + 16 <= NR).
                        unsafe {
                            let mut v = [_mm512_setzero_si512(); 16];
                            for (vt, row) in v.iter_mut().zip(&rows) {
                                *vt = _mm512_loadu_si512(row.as_ptr().add(2 * pb).cast());
                            }
                            let o = transpose16(v);
                            for (q, oq) in o.iter().enumerate() {
                                _mm512_storeu_si512(
                                    block.as_mut_ptr().add((pb + q) * NR + jb).cast(),
                                    *oq,
                                );
                            }
                        }
                    }
                    for (t, row) in rows.iter().enumerate() {
                        for p in full..pc {
                            block[p * NR + jb + t] = u32::from(row[2 * p].to_bits())
                                | (u32::from(row[2 * p + 1].to_bits()) << 16);
                        }
                    }
                }
            }
            BLayout::NK => pairs::pack_b_panel(g, b, block, j0, s0, pc),
        }
    }
}

/// The missing second row of a last odd pair (`[K, N]` B, odd K).
static ZERO_ROW: [bf16; pairs::NR] = [bf16::ZERO; pairs::NR];

/// How many pairs ahead the `[K, N]` packing prefetches B's rows.
const PREFETCH_PAIRS: usize = 8;

/// Asks for the cache line holding `x` (a hint: no fault, no effect on
/// results). B read in place in GM streams in from memory: the packing
/// asks for the lines it reads next while it works on these.
#[inline(always)]
fn prefetch(x: &bf16) {
    // SAFETY: a prefetch reads nothing architecturally; `x` is a valid
    // reference anyway.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const bf16).cast()) }
}

/// Transposes a 16 × 16 matrix of 32-bit elements held one row a register:
/// output `c` holds column `c`. Unpacks of 32 and 64 bits transpose the
/// 4 × 4 blocks inside each 128-bit lane, two rounds of lane shuffles
/// transpose the 4 × 4 matrix of lanes.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in (0..16).step_by(2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    // u[4g + c], lane L: column 4L + c of rows 4g..4g+4.
    let mut u = [_mm512_setzero_si512(); 16];
    for g in (0..16).step_by(4) {
        u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    let mut o = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let w0 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let w1 = _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]);
        let w2 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let w3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]);
        o[c] = _mm512_shuffle_i32x4::<0x88>(w0, w2);
        o[4 + c] = _mm512_shuffle_i32x4::<0xDD>(w0, w2);
        o[8 + c] = _mm512_shuffle_i32x4::<0x88>(w1, w3);
        o[12 + c] = _mm512_shuffle_i32x4::<0xDD>(w1, w3);
    }
    o
}

/// AVX2 packing of a bf16 B into f32 panels, the layout and bits of
/// [`panels::pack_b`] (a test compares the two buffers): bf16 → f32 is a
/// 16-bit shift, with the quiet bit set on NaNs as `half` does. Full panels
/// of `[K,N]` B convert eight values at a time, of `[N,K]` B transpose
/// 8 × 8 blocks in registers; edge panels and the remainder of 8 K values
/// go through the scalar panel packer.
///
/// # Safety
/// The CPU must support `avx2`; `g` checked against `b` (`Gemm::check`),
/// `buf` sized as for [`panels::pack_b`].
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pack_b_panels_bf16(
    g: &Gemm,
    b: &[bf16],
    buf: &mut [f32],
    s0: usize,
    pc: usize,
) {
    const NR: usize = panels::NR;
    const _: () = assert!(NR == 16);
    for (nb, block) in buf.chunks_exact_mut(pc * NR).enumerate() {
        let j0 = nb * NR;
        if g.n - j0 < NR {
            panels::pack_b_panel(g, b, block, j0, s0, pc);
            continue;
        }
        match g.b_layout {
            BLayout::KN => {
                for p in 0..pc {
                    let src = &b[(s0 + p) * g.ldb + j0..][..NR];
                    let dst = &mut block[p * NR..][..NR];
                    for h in 0..2 {
                        // SAFETY: src holds NR bf16, dst NR f32 (sliced above).
                        unsafe {
                            let v = _mm_loadu_si128(src.as_ptr().add(8 * h).cast());
                            _mm256_storeu_ps(dst.as_mut_ptr().add(8 * h), bf16x8_to_f32(v));
                        }
                    }
                }
            }
            BLayout::NK => {
                let full = pc / 8 * 8;
                for jb in [0, 8] {
                    let mut rows: [&[bf16]; 8] = [&[]; 8];
                    for (t, row) in rows.iter_mut().enumerate() {
                        *row = &b[(j0 + jb + t) * g.ldb + s0..][..pc];
                    }
                    for pb in (0..full).step_by(8) {
                        // SAFETY: each row holds pc values, pb + 8 <= pc; the
                        // stores land in block[(pb+q)*NR + jb..][..8], inside
                        // block (pb + 7 < pc, jb + 8 <= NR).
                        unsafe {
                            let mut v = [_mm256_setzero_ps(); 8];
                            for (vt, row) in v.iter_mut().zip(&rows) {
                                *vt = bf16x8_to_f32(_mm_loadu_si128(row.as_ptr().add(pb).cast()));
                            }
                            let o = transpose8(v);
                            for (q, oq) in o.iter().enumerate() {
                                _mm256_storeu_ps(block.as_mut_ptr().add((pb + q) * NR + jb), *oq);
                            }
                        }
                    }
                    for (t, row) in rows.iter().enumerate() {
                        for p in full..pc {
                            block[p * NR + jb + t] = row[p].to_f32();
                        }
                    }
                }
            }
        }
    }
}

/// Eight bf16 bit patterns to f32, as `half`'s `to_f32`: the bits shifted
/// up 16, NaNs with the quiet bit set.
#[target_feature(enable = "avx2")]
fn bf16x8_to_f32(v: __m128i) -> __m256 {
    let x = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v));
    let mag = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFF_FFFF));
    let nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F80_0000));
    let quiet = _mm256_and_si256(nan, _mm256_set1_epi32(0x0040_0000));
    _mm256_castsi256_ps(_mm256_or_si256(x, quiet))
}

/// Transposes an 8 × 8 matrix of f32 held one row a register: output `c`
/// holds column `c`.
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let mut t = [_mm256_setzero_ps(); 8];
    for i in (0..8).step_by(2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    // u[4g + c], 128-bit lane L: column 4L + c of rows 4g..4g+4.
    let mut u = [_mm256_setzero_ps(); 8];
    for g in [0, 4] {
        u[g] = _mm256_shuffle_ps::<0x44>(t[g], t[g + 2]);
        u[g + 1] = _mm256_shuffle_ps::<0xEE>(t[g], t[g + 2]);
        u[g + 2] = _mm256_shuffle_ps::<0x44>(t[g + 1], t[g + 3]);
        u[g + 3] = _mm256_shuffle_ps::<0xEE>(t[g + 1], t[g + 3]);
    }
    let mut o = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        o[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        o[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
    o
}
