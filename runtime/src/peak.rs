//! The machine's own peak for the matmul path the runtime uses: a short,
//! register-resident probe of the path's multiply-add instruction on every
//! CPU at once.
//!
//! - [`MatmulPath::Avx512Bf16`]: `vdpbf16ps zmm` (16 lanes × 2 bf16 products
//!   = 64 FLOP per instruction);
//! - [`MatmulPath::Avx2Fma`]: `vfmadd231ps ymm` (8 lanes × 2 = 16 FLOP);
//! - [`MatmulPath::Scalar`]: scalar f32 multiply-adds (2 FLOP each).
//!
//! Each probe runs [`ACCUMULATORS`] multiply-adds per iteration on
//! independent accumulator registers (24 zmm for `vdpbf16ps`, 12 ymm twice
//! for FMA: more than latency × throughput on current x86 cores), with
//! both multiplicands loop-invariant in registers, so the loop body is
//! nothing but the multiply-adds and a counter: no load, no store, no spill.
//! A probe that spilled would read memory in its loop and measure far less
//! than the peak; check with
//! `objdump -d --no-show-raw-insn target/release/examples/peak_probe | grep -A40 'probe_bf16_block>:'`
//! (the loop is 24 `vdpbf16ps` and a `dec`/`jne`, nothing else).
//!
//! Invariants: the probe reads no memory in its loop, so its result does
//! not depend on data; [`probe_peak`] runs one thread per CPU between two
//! barriers and divides all their FLOPs by the wall time of the slowest.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::matmul::MatmulPath;

/// Independent accumulators per probe loop.
pub const ACCUMULATORS: usize = 24;

/// Iterations of the inner loop per call of a block function.
const INNER: u64 = 4096;

/// What [`probe_peak`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// The matmul path whose instruction was probed.
    pub path: MatmulPath,
    /// Threads run at once (one per CPU).
    pub threads: usize,
    /// FLOP/s of all threads together (median over the samples).
    pub flops_per_s: f64,
    /// FLOP/s of one thread running alone (median over the samples).
    pub flops_per_s_one: f64,
}

impl Peak {
    /// The instruction probed, by name.
    pub fn instruction(&self) -> &'static str {
        instruction(self.path)
    }
}

/// The instruction the probe of `path` runs.
pub fn instruction(path: MatmulPath) -> &'static str {
    match path {
        MatmulPath::Avx512Bf16 => "vdpbf16ps zmm",
        MatmulPath::Avx2Fma => "vfmadd231ps ymm",
        MatmulPath::Scalar => "scalar f32 mul+add",
    }
}

/// FLOPs of one call of the block function of `path` (`INNER` iterations).
pub fn flops_per_block(path: MatmulPath) -> u64 {
    let per_inst = match path {
        MatmulPath::Avx512Bf16 => 64,
        MatmulPath::Avx2Fma => 16,
        MatmulPath::Scalar => 2,
    };
    INNER * ACCUMULATORS as u64 * per_inst
}

/// Runs `blocks` block calls of the probe of `path`; returns a value derived
/// from the accumulators so the work cannot be optimised away.
///
/// The caller must have checked `path.is_supported()`.
fn run_blocks(path: MatmulPath, blocks: u64) -> f32 {
    let mut sink = 0.0f32;
    for _ in 0..blocks {
        sink += match path {
            // SAFETY: the caller checked that the CPU supports the path.
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx512Bf16 => unsafe { x86::probe_bf16_block(INNER) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx2Fma => unsafe { x86::probe_fma_block(INNER) },
            _ => probe_scalar_block(INNER),
        };
    }
    sink
}

#[inline(never)]
fn probe_scalar_block(iters: u64) -> f32 {
    let mut acc = [0f32; ACCUMULATORS];
    let (a, b) = (std::hint::black_box(1.0f32), std::hint::black_box(0.0f32));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    acc.iter().sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// FLOP/s of `threads` threads running the probe of `path` together for about
/// `sample` each, median of `samples` samples.
fn measure(path: MatmulPath, threads: usize, sample: Duration, samples: usize) -> f64 {
    // Calibrate: blocks per sample on one thread.
    let t = Instant::now();
    std::hint::black_box(run_blocks(path, 4));
    let per_block = t.elapsed().as_secs_f64() / 4.0;
    let blocks = ((sample.as_secs_f64() / per_block.max(1e-9)) as u64).max(1);
    let flops = flops_per_block(path) as f64 * blocks as f64 * threads as f64;
    // The span is timed by the probe threads themselves, from the first
    // one's start to the last one's end: the spawning thread may not be
    // running when they start (more runnable threads than CPUs), and a
    // start time it took late would make the span too short.
    let rates = (0..samples.max(1))
        .map(|_| {
            let start = Barrier::new(threads);
            std::thread::scope(|s| {
                let spans: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let t0 = Instant::now();
                            std::hint::black_box(run_blocks(path, blocks));
                            (t0, Instant::now())
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|h| h.join().expect("peak probe thread"))
                    .collect();
                let first = spans.iter().map(|s| s.0).min().expect("one thread");
                let last = spans.iter().map(|s| s.1).max().expect("one thread");
                flops / (last - first).as_secs_f64().max(1e-9)
            })
        })
        .collect();
    median(rates)
}

/// Measures the peak of `path` on `threads` CPUs (all of them when `None`):
/// `samples` samples of about `sample` each, for all threads at once and for
/// one alone. `None` when the CPU does not support the path.
pub fn probe_peak(
    path: MatmulPath,
    threads: Option<usize>,
    sample: Duration,
    samples: usize,
) -> Option<Peak> {
    if !path.is_supported() {
        return None;
    }
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    Some(Peak {
        path,
        threads,
        flops_per_s: measure(path, threads, sample, samples),
        flops_per_s_one: measure(path, 1, sample, samples),
    })
}

/// Runs the probe of `path` on the calling thread for about `sample` of
/// wall time and returns the FLOPs it executed (`None` when the CPU does not
/// support the path). Divided by the thread's CPU time over the call, that
/// is the peak per CPU-second, which a loaded machine does not lower.
pub fn probe_here(path: MatmulPath, sample: Duration) -> Option<u64> {
    if !path.is_supported() {
        return None;
    }
    let t = Instant::now();
    let mut blocks = 0u64;
    while blocks == 0 || t.elapsed() < sample {
        std::hint::black_box(run_blocks(path, 4));
        blocks += 4;
    }
    Some(flops_per_block(path) * blocks)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::ACCUMULATORS;

    /// `iters` × 24 `vdpbf16ps` on 24 independent zmm accumulators; the
    /// multiplicands are loop-invariant registers.
    ///
    /// # Safety
    /// The CPU must support `avx512f` and `avx512bf16`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline(never)]
    pub(super) unsafe fn probe_bf16_block(iters: u64) -> f32 {
        const _: () = assert!(ACCUMULATORS == 24);
        let zero = _mm512_setzero_ps();
        // SAFETY: plain-data transmutes (16 × f32 → 32 × bf16).
        let (a, b) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(std::hint::black_box(
                    0x3f80_3f80,
                ))),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(std::hint::black_box(
                    0x0000_0000,
                ))),
            )
        };
        let mut acc = [zero; 24];
        let mut n = iters;
        while n > 0 {
            // Written out so each accumulator stays in its own register.
            acc[0] = _mm512_dpbf16_ps(acc[0], a, b);
            acc[1] = _mm512_dpbf16_ps(acc[1], a, b);
            acc[2] = _mm512_dpbf16_ps(acc[2], a, b);
            acc[3] = _mm512_dpbf16_ps(acc[3], a, b);
            acc[4] = _mm512_dpbf16_ps(acc[4], a, b);
            acc[5] = _mm512_dpbf16_ps(acc[5], a, b);
            acc[6] = _mm512_dpbf16_ps(acc[6], a, b);
            acc[7] = _mm512_dpbf16_ps(acc[7], a, b);
            acc[8] = _mm512_dpbf16_ps(acc[8], a, b);
            acc[9] = _mm512_dpbf16_ps(acc[9], a, b);
            acc[10] = _mm512_dpbf16_ps(acc[10], a, b);
            acc[11] = _mm512_dpbf16_ps(acc[11], a, b);
            acc[12] = _mm512_dpbf16_ps(acc[12], a, b);
            acc[13] = _mm512_dpbf16_ps(acc[13], a, b);
            acc[14] = _mm512_dpbf16_ps(acc[14], a, b);
            acc[15] = _mm512_dpbf16_ps(acc[15], a, b);
            acc[16] = _mm512_dpbf16_ps(acc[16], a, b);
            acc[17] = _mm512_dpbf16_ps(acc[17], a, b);
            acc[18] = _mm512_dpbf16_ps(acc[18], a, b);
            acc[19] = _mm512_dpbf16_ps(acc[19], a, b);
            acc[20] = _mm512_dpbf16_ps(acc[20], a, b);
            acc[21] = _mm512_dpbf16_ps(acc[21], a, b);
            acc[22] = _mm512_dpbf16_ps(acc[22], a, b);
            acc[23] = _mm512_dpbf16_ps(acc[23], a, b);
            n -= 1;
        }
        let mut s = zero;
        for x in acc {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s)
    }

    /// `iters` × 12 `vfmadd231ps ymm` on 12 independent accumulators (the
    /// AVX2 path has 16 ymm registers: 12 accumulators and the two
    /// multiplicands fit), run twice per iteration = 24 per iteration.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma`.
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    pub(super) unsafe fn probe_fma_block(iters: u64) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(1.0));
        let b = _mm256_set1_ps(std::hint::black_box(0.0));
        let mut acc = [_mm256_setzero_ps(); 12];
        let mut n = iters;
        while n > 0 {
            for _ in 0..2 {
                acc[0] = _mm256_fmadd_ps(acc[0], a, b);
                acc[1] = _mm256_fmadd_ps(acc[1], a, b);
                acc[2] = _mm256_fmadd_ps(acc[2], a, b);
                acc[3] = _mm256_fmadd_ps(acc[3], a, b);
                acc[4] = _mm256_fmadd_ps(acc[4], a, b);
                acc[5] = _mm256_fmadd_ps(acc[5], a, b);
                acc[6] = _mm256_fmadd_ps(acc[6], a, b);
                acc[7] = _mm256_fmadd_ps(acc[7], a, b);
                acc[8] = _mm256_fmadd_ps(acc[8], a, b);
                acc[9] = _mm256_fmadd_ps(acc[9], a, b);
                acc[10] = _mm256_fmadd_ps(acc[10], a, b);
                acc[11] = _mm256_fmadd_ps(acc[11], a, b);
            }
            n -= 1;
        }
        let mut s = _mm256_setzero_ps();
        for x in acc {
            s = _mm256_add_ps(s, x);
        }
        let mut out = [0f32; 8];
        // SAFETY: out holds 8 f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_path_has_a_positive_peak() {
        for path in MatmulPath::ALL {
            let p = probe_peak(path, Some(1), Duration::from_millis(2), 1);
            assert_eq!(p.is_some(), path.is_supported());
            if let Some(p) = p {
                assert!(p.flops_per_s > 0.0 && p.flops_per_s.is_finite(), "{p:?}");
                assert_eq!(p.threads, 1);
                assert!(!p.instruction().is_empty());
            }
        }
    }

    #[test]
    fn flop_counts_per_block() {
        assert_eq!(
            flops_per_block(MatmulPath::Avx512Bf16),
            4 * flops_per_block(MatmulPath::Avx2Fma)
        );
        assert_eq!(flops_per_block(MatmulPath::Scalar), INNER * 24 * 2);
    }
}
