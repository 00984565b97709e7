//! The blocking driver shared by the packed matmul paths.
//!
//! Invariants:
//! - Operands are packed per K block: B into `[n_block][k_step][NR]`, A into
//!   `[m_block][k_step][MR]` — or, where the path can read A in place (bf16
//!   pairs with even K and `lda`, M a multiple of MR), not packed at all: the
//!   micro-kernel broadcasts A straight from its rows, as a BLAS reading a
//!   small A in place would. Padding past K is zero; padding rows and
//!   columns past M and N hold whatever the scratch held before: they only
//!   reach C rows and columns of edge tiles that are never copied back.
//!   So a micro-kernel always runs a full `MR × NR` tile over `pc` k-steps.
//! - Full tiles are computed in place in C; edge tiles go through an
//!   `MR × NR` scratch tile and only the valid part is copied back, so C is
//!   never written outside `[0, m) × [0, n)`.
//! - The first K block loads C only in accumulate mode; later blocks always
//!   accumulate. In add-after mode every micro-tile is summed from zero in
//!   registers and added to C's tile as the micro-kernel stores it
//!   ([`TileC::AddAfter`], `c + p`; an edge tile through the scratch
//!   tile); with more than one K block the product goes into a scratch C
//!   first (one K block is the MLA P·V case: K = 128).
//! - `ahead` (memory the caller reads next, e.g. the next KV block of B
//!   streamed from GM) is asked for, a few cache lines after each
//!   micro-tile, spread over the whole call: a hint that changes no result.

use super::{AccumMode, Gemm};

/// A register-blocked micro-kernel: `C[MR×NR] (+)= A · Bpanel` over `pc`
/// k-steps. A's element for row `r`, step `p` is at `a + r·ars + p·aps`
/// (packed: `ars = 1, aps = MR`; in place: `ars` = the row stride, `aps = 1`),
/// read unaligned.
///
/// # Safety
/// `a` must be valid for reads at every `r·ars + p·aps` (`r < MR`, `p < pc`),
/// `b` for `pc * NR` reads, `c` for reads and writes of `MR` rows of `NR`
/// f32 at row stride `ldc`, and the CPU must support the kernel's target
/// features.
pub(crate) type MicroKernel<P> = unsafe fn(
    pc: usize,
    a: *const P,
    ars: usize,
    aps: usize,
    b: *const P,
    c: *mut f32,
    ldc: usize,
    tile_c: TileC,
);

/// What a micro-kernel does with C's `MR × NR` tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileC {
    /// Sums from zero and stores: `c = a·b`.
    Zero,
    /// Sums from C's elements and stores: `c = c + a₀b₀ + a₁b₁ + …`.
    Load,
    /// Sums from zero, then adds the sum to C's element and stores:
    /// `c = c + (a·b)` (`AccumMode::AddAfter`; the add as
    /// `_mm512_add_ps(c, sum)`, C's NaN first).
    AddAfter,
}

/// A read in place: element (row `r`, step `p`) at `base + r·row_stride + p`.
#[derive(Clone, Copy)]
pub(crate) struct InPlaceA<P> {
    pub base: *const P,
    pub row_stride: usize,
}

/// Memory a matmul asks the caches for while it computes (see the module
/// invariants): `bytes` bytes from `base`, inside one allocation.
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    pub base: *const u8,
    pub bytes: usize,
}

impl Ahead {
    /// Nothing to ask for.
    pub const NONE: Ahead = Ahead {
        base: std::ptr::null(),
        bytes: 0,
    };

    /// The bytes of `s`.
    pub fn of<T>(s: &[T]) -> Ahead {
        Ahead {
            base: s.as_ptr().cast(),
            bytes: std::mem::size_of_val(s),
        }
    }
}

/// Asks for the next `n` cache lines of `ahead` from line `*next` on
/// (stopping at its end), and moves `*next` past them.
#[inline(always)]
fn prefetch_lines(ahead: &Ahead, next: &mut usize, n: usize) {
    let end = (*next + n).min(ahead.bytes.div_ceil(64));
    for _line in *next..end {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that reads nothing architecturally;
        // the address is inside `ahead`'s allocation anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(ahead.base.add(_line * 64).cast());
        }
    }
    *next = end.max(*next);
}

thread_local! {
    /// The product of an add-after matmul of several K blocks.
    static ADD_AFTER_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[j] = dst[j] + src[j]` (the operand order of the runtime's L0C → GM
/// add and of [`TileC::AddAfter`]).
#[inline]
fn add_row(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// The largest `MR × NR` of any path.
const MAX_TILE: usize = 256;

/// Geometry of a packed path.
pub(crate) struct Geometry {
    /// Rows per micro-tile.
    pub mr: usize,
    /// Columns per micro-tile.
    pub nr: usize,
    /// Packed k-steps in all of K (K for f32 packing, ceil(K/2) for pairs).
    pub steps: usize,
    /// Packed k-steps per K block.
    pub kc: usize,
}

/// Runs the blocked matmul. `pack_a(buf, s0, pc)` and `pack_b(buf, s0, pc)`
/// fill `buf` (already sized) with k-steps `s0..s0+pc`.
///
/// With `in_place_a`, A is not packed: `g.m` must be a multiple of `geo.mr`
/// and the base valid for `g.m` rows of `geo.steps` elements at its stride.
///
/// # Safety
/// `uk` must satisfy [`MicroKernel`]'s contract for panels of `geo.mr` /
/// `geo.nr`, and `c` must hold the `g.m × g.n` tile at stride `g.ldc`
/// (checked by the caller through `Gemm::check`).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn drive<P: Copy + Default>(
    g: &Gemm,
    c: &mut [f32],
    geo: &Geometry,
    scratch: &mut (Vec<P>, Vec<P>),
    in_place_a: Option<InPlaceA<P>>,
    pack_a: impl Fn(&mut [P], usize, usize),
    pack_b: impl Fn(&mut [P], usize, usize),
    uk: MicroKernel<P>,
    ahead: Ahead,
) {
    if g.mode == AccumMode::AddAfter && geo.steps > geo.kc {
        ADD_AFTER_SCRATCH.with(|s| {
            let mut p = s.borrow_mut();
            p.clear();
            p.resize(g.m * g.n, 0.0);
            let gp = Gemm {
                ldc: g.n,
                mode: AccumMode::Overwrite,
                ..*g
            };
            // SAFETY: the caller's contract, with the scratch as C (m × n
            // at stride n).
            unsafe {
                drive(
                    &gp, &mut p, geo, scratch, in_place_a, pack_a, pack_b, uk, ahead,
                )
            };
            for r in 0..g.m {
                add_row(&mut c[r * g.ldc..][..g.n], &p[r * g.n..][..g.n]);
            }
        });
        return;
    }
    let add_after = g.mode == AccumMode::AddAfter;
    let (mr, nr) = (geo.mr, geo.nr);
    let mblocks = g.m.div_ceil(mr);
    let nblocks = g.n.div_ceil(nr);
    // `ahead`'s lines, spread evenly over the micro-tiles of the call.
    let tiles = geo.steps.div_ceil(geo.kc) * mblocks * nblocks;
    let per_tile = ahead.bytes.div_ceil(64).div_ceil(tiles.max(1));
    let mut next_line = 0;
    // Edge tiles go through this scratch tile (no allocation per call).
    let mut tile_buf = [0f32; MAX_TILE];
    assert!(mr * nr <= MAX_TILE, "micro-tile {mr}x{nr} exceeds MAX_TILE");
    let tile = &mut tile_buf[..mr * nr];
    let mut s0 = 0;
    while s0 < geo.steps {
        let pc = geo.kc.min(geo.steps - s0);
        let load_c = s0 > 0 || g.mode == AccumMode::Accumulate;
        // One K block (the multi-block case went through a scratch C).
        let full_c = if add_after {
            TileC::AddAfter
        } else if load_c {
            TileC::Load
        } else {
            TileC::Zero
        };
        let edge_c = if load_c { TileC::Load } else { TileC::Zero };
        let (abuf, bbuf) = (&mut scratch.0, &mut scratch.1);
        let grow = |buf: &mut Vec<P>, need: usize| {
            if buf.len() < need {
                buf.resize(need, P::default());
            }
        };
        if in_place_a.is_none() {
            grow(abuf, mblocks * pc * mr);
            pack_a(&mut abuf[..mblocks * pc * mr], s0, pc);
        }
        grow(bbuf, nblocks * pc * nr);
        pack_b(&mut bbuf[..nblocks * pc * nr], s0, pc);
        for nb in 0..nblocks {
            let j0 = nb * nr;
            let cols = nr.min(g.n - j0);
            let bp = bbuf[nb * pc * nr..].as_ptr();
            for mb in 0..mblocks {
                let i0 = mb * mr;
                let rows = mr.min(g.m - i0);
                let (ap, ars, aps) = match in_place_a {
                    // SAFETY: row i0, step s0 of the in-place A (caller).
                    Some(a) => (
                        unsafe { a.base.add(i0 * a.row_stride + s0) },
                        a.row_stride,
                        1,
                    ),
                    None => (abuf[mb * pc * mr..].as_ptr(), 1, mr),
                };
                prefetch_lines(&ahead, &mut next_line, per_tile);
                if rows == mr && cols == nr {
                    let cp = c[i0 * g.ldc + j0..].as_mut_ptr();
                    // SAFETY: the panels hold pc*mr / pc*nr elements; the tile
                    // [i0, i0+mr) × [j0, j0+nr) is inside C (i0+mr <= m,
                    // j0+nr <= n, c.len() >= (m-1)*ldc + n); features: caller.
                    unsafe { uk(pc, ap, ars, aps, bp, cp, g.ldc, full_c) };
                } else {
                    if load_c {
                        for r in 0..rows {
                            let src = &c[(i0 + r) * g.ldc + j0..][..cols];
                            tile[r * nr..r * nr + cols].copy_from_slice(src);
                        }
                    }
                    // SAFETY: as above, with the mr × nr scratch tile (stride nr).
                    unsafe { uk(pc, ap, ars, aps, bp, tile.as_mut_ptr(), nr, edge_c) };
                    for r in 0..rows {
                        let dst = &mut c[(i0 + r) * g.ldc + j0..][..cols];
                        let src = &tile[r * nr..r * nr + cols];
                        if add_after {
                            add_row(dst, src);
                        } else {
                            dst.copy_from_slice(src);
                        }
                    }
                }
            }
        }
        s0 += pc;
    }
}
