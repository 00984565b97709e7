//! The Cube micro-kernel: `C[M,N] (+)= A[M,K] · B`, bf16 or f16 in, f32 out.
//!
//! `B` is given either as `[K,N]` ([`BLayout::KN`]) or transposed as `[N,K]`
//! ([`BLayout::NK`], what `Q·Kᵀ` uses). All operands are row-major with
//! explicit leading dimensions (elements between rows).
//!
//! Three implementations, chosen at run time: the launch's
//! `LaunchConfig::matmul_path`, else [`detected_path`] (there is no
//! process-wide override, so concurrent launches never see each other's
//! choice; the paths sum in different orders and differ in the last bits):
//! - [`MatmulPath::Avx512Bf16`]: operands packed into K-pairs, an 8×32
//!   register-blocked kernel of `vdpbf16ps` (products exact, f32 sums; DAZ/FTZ
//!   as the instruction defines). f16 inputs on this path use the AVX2/FMA
//!   kernel (there is no f16 dot-product instruction in AVX-512 BF16).
//! - [`MatmulPath::Avx2Fma`]: operands converted to f32 panels, a 6×16 FMA kernel.
//! - [`MatmulPath::Scalar`]: a portable triple loop (f32 accumulation in K order).
//!
//! Invariants:
//! - Every call validates shapes and slice lengths first ([`Gemm::check`]) and
//!   returns an error instead of reading or writing out of bounds.
//! - Only `C[0..m) × [0..n)` (at stride `ldc`) is written.
//! - `k == 0` with [`AccumMode::Overwrite`] writes zeros; with
//!   [`AccumMode::Accumulate`] leaves C unchanged.
//! - All paths agree with a float64 reference within f32 summation error.

mod driver;
mod pairs;
mod panels;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;
use std::sync::OnceLock;

use half::{bf16, f16};

use crate::dtype::Element;
use crate::error::RuntimeError;

/// How B is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BLayout {
    /// `B[K,N]`, row stride `ldb >= N`.
    KN,
    /// `Bᵀ` given as `[N,K]`, row stride `ldb >= K` (C = A·Bᵀ of that array).
    NK,
}

/// Whether C is overwritten or accumulated into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccumMode {
    /// `C = A·B`.
    Overwrite,
    /// `C += A·B`.
    Accumulate,
    /// `C = C + (A·B)`: the product summed on its own, as `Overwrite`
    /// computes it, then added to each C element (`c + p`): the bits of an
    /// overwrite into a scratch C followed by an f32 add of it into C (an
    /// L0C → GM atomic add folded into the matmul).
    AddAfter,
}

/// A matmul implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulPath {
    /// AVX-512 BF16 `vdpbf16ps` kernel (x86-64 with avx512f + avx512bf16).
    Avx512Bf16,
    /// AVX2 + FMA kernel (x86-64 with avx2 + fma).
    Avx2Fma,
    /// Portable scalar code.
    Scalar,
}

impl MatmulPath {
    /// All paths, fastest first.
    pub const ALL: [MatmulPath; 3] = [
        MatmulPath::Avx512Bf16,
        MatmulPath::Avx2Fma,
        MatmulPath::Scalar,
    ];

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            MatmulPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Name for reports: `avx512bf16`, `avx2fma`, `scalar`.
    pub const fn name(self) -> &'static str {
        match self {
            MatmulPath::Avx512Bf16 => "avx512bf16",
            MatmulPath::Avx2Fma => "avx2fma",
            MatmulPath::Scalar => "scalar",
        }
    }
}

impl std::fmt::Display for MatmulPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The paths this CPU supports, fastest first.
pub fn available_paths() -> Vec<MatmulPath> {
    MatmulPath::ALL
        .into_iter()
        .filter(|p| p.is_supported())
        .collect()
}

/// The fastest supported path (detected once).
pub fn detected_path() -> MatmulPath {
    static BEST: OnceLock<MatmulPath> = OnceLock::new();
    *BEST.get_or_init(|| {
        available_paths()
            .first()
            .copied()
            .unwrap_or(MatmulPath::Scalar)
    })
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// A Cube input element type: `bf16` or `f16`.
pub trait CubeInput: Element + sealed::Sealed {
    /// Runs the matmul on `path` (already known to be supported).
    #[doc(hidden)]
    fn dispatch(path: MatmulPath, g: &Gemm, a: &[Self], b: &[Self], c: &mut [f32], ahead: &[Self]);
}

/// Shape, strides, layout and mode of one matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// Row stride of A, elements (`>= k`).
    pub lda: usize,
    /// Row stride of B as stored (`>= n` for KN, `>= k` for NK).
    pub ldb: usize,
    /// Row stride of C, elements (`>= n`).
    pub ldc: usize,
    /// Layout of B.
    pub b_layout: BLayout,
    /// Overwrite or accumulate.
    pub mode: AccumMode,
}

impl Gemm {
    /// A matmul on dense (unpadded) row-major operands.
    pub fn dense(m: usize, n: usize, k: usize, b_layout: BLayout, mode: AccumMode) -> Self {
        let ldb = match b_layout {
            BLayout::KN => n,
            BLayout::NK => k,
        };
        Gemm {
            m,
            n,
            k,
            lda: k,
            ldb,
            ldc: n,
            b_layout,
            mode,
        }
    }

    /// Elements A, B and C must hold: `(a_len, b_len, c_len)`.
    pub fn required_lens(&self) -> Result<(usize, usize, usize), RuntimeError> {
        let span =
            |rows: usize, cols: usize, ld: usize, what: &str| -> Result<usize, RuntimeError> {
                if ld < cols {
                    return Err(RuntimeError::BadArgument(format!(
                        "matmul {what}: row stride {ld} is less than the row length {cols}"
                    )));
                }
                if rows == 0 || cols == 0 {
                    return Ok(0);
                }
                (rows - 1)
                    .checked_mul(ld)
                    .and_then(|x| x.checked_add(cols))
                    .ok_or_else(|| {
                        RuntimeError::BadArgument(format!("matmul {what}: size overflows"))
                    })
            };
        let a = span(self.m, self.k, self.lda, "A")?;
        let b = match self.b_layout {
            BLayout::KN => span(self.k, self.n, self.ldb, "B[K,N]")?,
            BLayout::NK => span(self.n, self.k, self.ldb, "B[N,K]")?,
        };
        let c = span(self.m, self.n, self.ldc, "C")?;
        Ok((a, b, c))
    }

    /// Checks the strides and that the slices are long enough.
    pub fn check(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<(), RuntimeError> {
        let (a, b, c) = self.required_lens()?;
        for (name, need, have) in [("A", a, a_len), ("B", b, b_len), ("C", c, c_len)] {
            if have < need {
                return Err(RuntimeError::BadArgument(format!(
                    "matmul {}x{}x{}: {name} needs {need} elements, has {have}",
                    self.m, self.n, self.k
                )));
            }
        }
        Ok(())
    }

    /// Floating-point operations: `2·m·n·k`.
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64
    }
}

/// `C (+)= A·B` on the [`detected_path`].
pub fn matmul<T: CubeInput>(
    g: &Gemm,
    a: &[T],
    b: &[T],
    c: &mut [f32],
) -> Result<MatmulPath, RuntimeError> {
    let path = detected_path();
    matmul_with_path(path, g, a, b, c)?;
    Ok(path)
}

/// `C (+)= A·B` on an explicit path (for tests and benchmarks). Fails if the
/// CPU does not support it.
pub fn matmul_with_path<T: CubeInput>(
    path: MatmulPath,
    g: &Gemm,
    a: &[T],
    b: &[T],
    c: &mut [f32],
) -> Result<(), RuntimeError> {
    matmul_with_path_ahead(path, g, a, b, c, &[])
}

/// [`matmul_with_path`], asking the caches for `ahead` while it computes
/// (the memory a stream of matmuls reads next, e.g. the next block of a B
/// read in GM in place). A hint: the result does not depend on it.
pub fn matmul_with_path_ahead<T: CubeInput>(
    path: MatmulPath,
    g: &Gemm,
    a: &[T],
    b: &[T],
    c: &mut [f32],
    ahead: &[T],
) -> Result<(), RuntimeError> {
    if !path.is_supported() {
        return Err(RuntimeError::BadArgument(format!(
            "matmul path {path} is not supported by this CPU"
        )));
    }
    g.check(a.len(), b.len(), c.len())?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    if g.k == 0 {
        match g.mode {
            AccumMode::Overwrite => {
                for i in 0..g.m {
                    c[i * g.ldc..i * g.ldc + g.n].fill(0.0);
                }
            }
            AccumMode::AddAfter => {
                for i in 0..g.m {
                    for x in &mut c[i * g.ldc..i * g.ldc + g.n] {
                        *x += 0.0;
                    }
                }
            }
            AccumMode::Accumulate => {}
        }
        return Ok(());
    }
    T::dispatch(path, g, a, b, c, ahead);
    Ok(())
}

/// The portable path: for each C element, an f32 sum over K in order.
fn scalar<T: CubeInput>(g: &Gemm, a: &[T], b: &[T], c: &mut [f32]) {
    for i in 0..g.m {
        let arow = &a[i * g.lda..i * g.lda + g.k];
        for j in 0..g.n {
            let mut s = match g.mode {
                AccumMode::Overwrite | AccumMode::AddAfter => 0.0f32,
                AccumMode::Accumulate => c[i * g.ldc + j],
            };
            match g.b_layout {
                BLayout::KN => {
                    for (kk, av) in arow.iter().enumerate() {
                        s += av.to_f32() * b[kk * g.ldb + j].to_f32();
                    }
                }
                BLayout::NK => {
                    let brow = &b[j * g.ldb..j * g.ldb + g.k];
                    for (av, bv) in arow.iter().zip(brow) {
                        s += av.to_f32() * bv.to_f32();
                    }
                }
            }
            let o = &mut c[i * g.ldc + j];
            *o = match g.mode {
                AccumMode::AddAfter => *o + s,
                _ => s,
            };
        }
    }
}

thread_local! {
    static PAIR_SCRATCH: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static PANEL_SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Packs pairs `s0..s0+pc` of B into a buffer (see [`pairs::pack_b`]).
type PackPairs = unsafe fn(&Gemm, &[bf16], &mut [u32], usize, usize);

/// The packed-pairs driver with a given micro-kernel.
///
/// `pack_b` packs B's pairs (the portable [`pairs::pack_b`] or a SIMD
/// packer of the same layout and bits).
///
/// # Safety
/// `uk` and `pack_b` must be callable on this CPU; `g` checked against the
/// slices.
unsafe fn run_pairs(
    g: &Gemm,
    a: &[bf16],
    b: &[bf16],
    c: &mut [f32],
    uk: driver::MicroKernel<u32>,
    pack_b: PackPairs,
    ahead: driver::Ahead,
) {
    let geo = driver::Geometry {
        mr: pairs::MR,
        nr: pairs::NR,
        steps: g.k.div_ceil(2),
        kc: pairs::KC,
    };
    // A is read in place (no packing) when its rows are whole pairs and M
    // fills whole micro-tiles.
    let in_place_a =
        (g.k.is_multiple_of(2) && g.lda.is_multiple_of(2) && g.m.is_multiple_of(pairs::MR))
            .then_some(driver::InPlaceA {
                base: a.as_ptr() as *const u32,
                row_stride: g.lda / 2,
            });
    PAIR_SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // SAFETY: caller's contract (uk callable, C checked by Gemm::check);
        // the in-place A holds m rows of k/2 pairs at stride lda/2 u32.
        unsafe {
            driver::drive(
                g,
                c,
                &geo,
                &mut s,
                in_place_a,
                |buf, s0, pc| pairs::pack_a(g, a, buf, s0, pc),
                // pack_b is callable (caller); drive sizes buf.
                |buf, s0, pc| pack_b(g, b, buf, s0, pc),
                uk,
                ahead,
            )
        }
    });
}

/// Packs K values `s0..s0+pc` of B into f32 panels (see [`panels::pack_b`]).
type PackPanels<T> = unsafe fn(&Gemm, &[T], &mut [f32], usize, usize);

/// The f32-panel driver with a given micro-kernel and B packer.
///
/// # Safety
/// As [`run_pairs`].
unsafe fn run_panels<T: CubeInput>(
    g: &Gemm,
    a: &[T],
    b: &[T],
    c: &mut [f32],
    uk: driver::MicroKernel<f32>,
    pack_b: PackPanels<T>,
    ahead: driver::Ahead,
) {
    let geo = driver::Geometry {
        mr: panels::MR,
        nr: panels::NR,
        steps: g.k,
        kc: panels::KC,
    };
    PANEL_SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // SAFETY: caller's contract.
        unsafe {
            driver::drive(
                g,
                c,
                &geo,
                &mut s,
                None,
                |buf, s0, pc| panels::pack_a(g, a, buf, s0, pc),
                |buf, s0, pc| pack_b(g, b, buf, s0, pc),
                uk,
                ahead,
            )
        }
    });
}

fn f32_panel_path<T: CubeInput>(g: &Gemm, a: &[T], b: &[T], c: &mut [f32], ahead: &[T]) {
    let ahead = driver::Ahead::of(ahead);
    #[cfg(target_arch = "x86_64")]
    if MatmulPath::Avx2Fma.is_supported() {
        if T::DTYPE == crate::dtype::DType::Bf16 {
            // SAFETY: `CubeInput` is sealed (bf16 and f16) and DTYPE says T
            // is bf16: the same type, so the same layout.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(a.as_ptr() as *const bf16, a.len()),
                    std::slice::from_raw_parts(b.as_ptr() as *const bf16, b.len()),
                )
            };
            // SAFETY: avx2 + fma detected just above.
            unsafe { run_panels(g, a, b, c, x86::avx2_kernel, x86::pack_b_panels_bf16, ahead) };
            return;
        }
        // SAFETY: avx2 + fma detected just above.
        unsafe { run_panels(g, a, b, c, x86::avx2_kernel, panels::pack_b::<T>, ahead) };
        return;
    }
    // SAFETY: the portable kernel needs no CPU feature.
    unsafe {
        run_panels(
            g,
            a,
            b,
            c,
            panels::portable_kernel,
            panels::pack_b::<T>,
            ahead,
        )
    };
}

impl CubeInput for bf16 {
    fn dispatch(path: MatmulPath, g: &Gemm, a: &[Self], b: &[Self], c: &mut [f32], ahead: &[Self]) {
        match path {
            MatmulPath::Scalar => scalar(g, a, b, c),
            MatmulPath::Avx2Fma => f32_panel_path(g, a, b, c, ahead),
            MatmulPath::Avx512Bf16 => {
                #[cfg(target_arch = "x86_64")]
                if path.is_supported() {
                    let (uk, pack) = (x86::avx512bf16_kernel, x86::pack_b_pairs);
                    // SAFETY: avx512f + avx512bf16 detected just above.
                    unsafe { run_pairs(g, a, b, c, uk, pack, driver::Ahead::of(ahead)) };
                    return;
                }
                scalar(g, a, b, c)
            }
        }
    }
}

impl CubeInput for f16 {
    fn dispatch(path: MatmulPath, g: &Gemm, a: &[Self], b: &[Self], c: &mut [f32], ahead: &[Self]) {
        match path {
            MatmulPath::Scalar => scalar(g, a, b, c),
            MatmulPath::Avx2Fma | MatmulPath::Avx512Bf16 => f32_panel_path(g, a, b, c, ahead),
        }
    }
}

/// Runs the bf16 pair packing and driver with the portable model of the
/// `vdpbf16ps` kernel: what the AVX-512 path computes, on any CPU (slow).
pub fn matmul_bf16_pairs_emulated(
    g: &Gemm,
    a: &[bf16],
    b: &[bf16],
    c: &mut [f32],
) -> Result<(), RuntimeError> {
    g.check(a.len(), b.len(), c.len())?;
    if g.m == 0 || g.n == 0 || g.k == 0 {
        return matmul_with_path(MatmulPath::Scalar, g, a, b, c);
    }
    // SAFETY: the emulated kernel needs no CPU feature; shapes checked.
    unsafe {
        run_pairs(
            g,
            a,
            b,
            c,
            pairs::emulated_kernel,
            pairs::pack_b,
            driver::Ahead::NONE,
        )
    };
    Ok(())
}

/// Runs the f32-panel packing and driver with the portable kernel (tests the
/// AVX2 path's packing on any CPU).
pub fn matmul_panels_portable<T: CubeInput>(
    g: &Gemm,
    a: &[T],
    b: &[T],
    c: &mut [f32],
) -> Result<(), RuntimeError> {
    g.check(a.len(), b.len(), c.len())?;
    if g.m == 0 || g.n == 0 || g.k == 0 {
        return matmul_with_path(MatmulPath::Scalar, g, a, b, c);
    }
    // SAFETY: the portable kernel needs no CPU feature; shapes checked.
    unsafe {
        let (uk, pack) = (panels::portable_kernel, panels::pack_b::<T>);
        run_panels(g, a, b, c, uk, pack, driver::Ahead::NONE)
    };
    Ok(())
}

#[cfg(test)]
mod tests;
