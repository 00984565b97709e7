//! Packing for the f32-panel path (AVX2/FMA): operands converted to f32.
//!
//! Invariants: A is packed `[m_block][k][MR]`, B `[n_block][k][NR]`, both
//! converted exactly from bf16/f16 to f32 and zero-padded past M and N.

use super::driver::TileC;
use super::{BLayout, CubeInput, Gemm};

/// Rows per micro-tile.
pub(crate) const MR: usize = 6;
/// Columns per micro-tile (two 8-lane ymm registers).
pub(crate) const NR: usize = 16;
/// K values per block.
pub(crate) const KC: usize = 256;

/// Packs K values `s0..s0+pc` of A.
pub(crate) fn pack_a<T: CubeInput>(g: &Gemm, a: &[T], buf: &mut [f32], s0: usize, pc: usize) {
    for (mb, block) in buf.chunks_exact_mut(pc * MR).enumerate() {
        for r in 0..MR {
            let i = mb * MR + r;
            if i >= g.m {
                break;
            }
            let row = &a[i * g.lda + s0..][..pc];
            for (p, v) in row.iter().enumerate() {
                block[p * MR + r] = v.to_f32();
            }
        }
    }
}

/// Packs K values `s0..s0+pc` of B.
pub(crate) fn pack_b<T: CubeInput>(g: &Gemm, b: &[T], buf: &mut [f32], s0: usize, pc: usize) {
    for (nb, block) in buf.chunks_exact_mut(pc * NR).enumerate() {
        pack_b_panel(g, b, block, nb * NR, s0, pc);
    }
}

/// Packs K values `s0..s0+pc` of the `NR` columns of B from `j0` (fewer at
/// the right edge) into `block` (`pc * NR` values).
pub(crate) fn pack_b_panel<T: CubeInput>(
    g: &Gemm,
    b: &[T],
    block: &mut [f32],
    j0: usize,
    s0: usize,
    pc: usize,
) {
    let cols = NR.min(g.n - j0);
    match g.b_layout {
        BLayout::KN => {
            for p in 0..pc {
                let src = &b[(s0 + p) * g.ldb + j0..][..cols];
                for (d, v) in block[p * NR..p * NR + cols].iter_mut().zip(src) {
                    *d = v.to_f32();
                }
            }
        }
        BLayout::NK => {
            for jj in 0..cols {
                let src = &b[(j0 + jj) * g.ldb + s0..][..pc];
                for (p, v) in src.iter().enumerate() {
                    block[p * NR + jj] = v.to_f32();
                }
            }
        }
    }
}

/// Portable f32 micro-kernel with the same packing (used where AVX2 is absent
/// and to test the packing).
///
/// # Safety
/// As [`super::driver::MicroKernel`] with `MR`/`NR` of this module.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn portable_kernel(
    pc: usize,
    a: *const f32,
    ars: usize,
    aps: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    tile_c: TileC,
) {
    // SAFETY: caller's contract.
    let b = unsafe { std::slice::from_raw_parts(b, pc * NR) };
    let mut acc = [[0f32; NR]; MR];
    if tile_c == TileC::Load {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: caller's contract.
                *v = unsafe { *c.add(r * ldc + j) };
            }
        }
    }
    for p in 0..pc {
        let bs = &b[p * NR..p * NR + NR];
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: caller's contract: A's (r, p) element is readable.
            let av = unsafe { a.add(r * ars + p * aps).read_unaligned() };
            for (v, &bv) in row.iter_mut().zip(bs) {
                *v += av * bv;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: caller's contract.
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
