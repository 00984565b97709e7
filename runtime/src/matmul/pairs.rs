//! Packing for the bf16 pair path (`vdpbf16ps`), and a portable model of its
//! micro-kernel.
//!
//! Invariants:
//! - A packed "pair" is a `u32` holding two consecutive-K bf16 values:
//!   `lo = X[k=2p]` in bits 0..16, `hi = X[k=2p+1]` in bits 16..32 (zero when
//!   `2p+1 == K`). This is the lane layout `vdpbf16ps` multiplies pairwise:
//!   lane `j` gets `acc + A.hi·B.hi + A.lo·B.lo`.
//! - A is packed `[m_block][pair][MR]`, B `[n_block][pair][NR]`, zero-padded.
//! - [`emulated_kernel`] computes exactly what the instruction's pseudo-code
//!   says (hi product first, then lo; DAZ on inputs, FTZ on results), so the
//!   packing and driver are tested on machines without AVX-512 BF16.

use half::bf16;

use super::driver::TileC;
use super::{BLayout, Gemm};

/// Rows per micro-tile.
pub(crate) const MR: usize = 8;
/// Columns per micro-tile (two 16-lane zmm registers).
pub(crate) const NR: usize = 32;
/// Pairs per K block (512 values of K).
pub(crate) const KC: usize = 256;

#[inline(always)]
fn pair(lo: bf16, hi: bf16) -> u32 {
    u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16)
}

/// Packs pairs `s0..s0+pc` of A (`[M,K]`, stride `lda`).
pub(crate) fn pack_a(g: &Gemm, a: &[bf16], buf: &mut [u32], s0: usize, pc: usize) {
    let zero = bf16::ZERO;
    for (mb, block) in buf.chunks_exact_mut(pc * MR).enumerate() {
        for r in 0..MR {
            let i = mb * MR + r;
            if i >= g.m {
                break;
            }
            let row = &a[i * g.lda..i * g.lda + g.k];
            for p in 0..pc {
                let kk = 2 * (s0 + p);
                block[p * MR + r] = pair(row[kk], row.get(kk + 1).copied().unwrap_or(zero));
            }
        }
    }
}

/// Packs pairs `s0..s0+pc` of B (`[K,N]` or `[N,K]`, stride `ldb`).
pub(crate) fn pack_b(g: &Gemm, b: &[bf16], buf: &mut [u32], s0: usize, pc: usize) {
    for (nb, block) in buf.chunks_exact_mut(pc * NR).enumerate() {
        pack_b_panel(g, b, block, nb * NR, s0, pc);
    }
}

/// Packs pairs `s0..s0+pc` of the `NR` columns of B from `j0` (fewer at
/// the right edge) into `block` (`pc * NR` pairs).
pub(crate) fn pack_b_panel(
    g: &Gemm,
    b: &[bf16],
    block: &mut [u32],
    j0: usize,
    s0: usize,
    pc: usize,
) {
    let zero = bf16::ZERO;
    let cols = NR.min(g.n - j0);
    match g.b_layout {
        BLayout::KN => {
            for p in 0..pc {
                let kk = 2 * (s0 + p);
                let r0 = &b[kk * g.ldb + j0..][..cols];
                let dst = &mut block[p * NR..p * NR + cols];
                if kk + 1 < g.k {
                    let r1 = &b[(kk + 1) * g.ldb + j0..][..cols];
                    for ((d, &lo), &hi) in dst.iter_mut().zip(r0).zip(r1) {
                        *d = pair(lo, hi);
                    }
                } else {
                    for (d, &lo) in dst.iter_mut().zip(r0) {
                        *d = pair(lo, zero);
                    }
                }
            }
        }
        BLayout::NK if cfg!(target_endian = "little") && g.k.is_multiple_of(2) => {
            // Whole pairs: a row of B is a row of little-endian u32 pairs.
            for jj in 0..cols {
                let row = &b[(j0 + jj) * g.ldb + 2 * s0..][..2 * pc];
                let p32 = row.as_ptr() as *const u32;
                for p in 0..pc {
                    // SAFETY: pair p is elements 2p, 2p+1 of `row` (in
                    // bounds); unaligned read; little-endian puts 2p low.
                    block[p * NR + jj] = unsafe { p32.add(p).read_unaligned() };
                }
            }
        }
        BLayout::NK => {
            for jj in 0..cols {
                let j = j0 + jj;
                let row = &b[j * g.ldb..j * g.ldb + g.k];
                for p in 0..pc {
                    let kk = 2 * (s0 + p);
                    block[p * NR + jj] = pair(row[kk], row.get(kk + 1).copied().unwrap_or(zero));
                }
            }
        }
    }
}

#[inline(always)]
fn daz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// Portable model of the AVX-512 BF16 micro-kernel (same packing, same
/// operation order as `vdpbf16ps`).
///
/// # Safety
/// As [`super::driver::MicroKernel`] with `MR`/`NR` of this module.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn emulated_kernel(
    pc: usize,
    a: *const u32,
    ars: usize,
    aps: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    tile_c: TileC,
) {
    // SAFETY: caller's contract: b holds pc*NR elements.
    let b = unsafe { std::slice::from_raw_parts(b, pc * NR) };
    let half = |w: u32, shift: u32| daz(bf16::from_bits((w >> shift) as u16).to_f32());
    for r in 0..MR {
        let mut acc = [0f32; NR];
        if tile_c == TileC::Load {
            for (j, v) in acc.iter_mut().enumerate() {
                // SAFETY: caller's contract: c valid for MR rows of NR at stride ldc.
                *v = unsafe { *c.add(r * ldc + j) };
            }
        }
        for p in 0..pc {
            // SAFETY: caller's contract: A's (r, p) element is readable.
            let aw = unsafe { a.add(r * ars + p * aps).read_unaligned() };
            let (alo, ahi) = (half(aw, 0), half(aw, 16));
            for (j, v) in acc.iter_mut().enumerate() {
                let bw = b[p * NR + j];
                let t = daz(*v + ahi * half(bw, 16));
                *v = daz(t + alo * half(bw, 0));
            }
        }
        for (j, v) in acc.iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                let o = c.add(r * ldc + j);
                *o = if tile_c == TileC::AddAfter {
                    *o + *v
                } else {
                    *v
                };
            }
        }
    }
}
