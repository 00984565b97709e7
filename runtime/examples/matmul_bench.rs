//! GFLOP/s of each matmul path on MLA-shaped tiles (median of repeated runs).
//!
//! Run: `cargo run --release -p amla-runtime --example matmul_bench`
//! Prints the detected path, each path's one-core peak (measured in the same
//! run by `amla_runtime::peak`), then one line per (shape, path) with the
//! fraction of that peak, the peak re-sampled right before each shape so
//! the ratio survives a machine whose load drifts.

use std::time::Instant;

use amla_runtime::matmul::{
    AccumMode, BLayout, Gemm, MatmulPath, available_paths, detected_path, matmul_with_path,
};
use amla_runtime::peak::probe_peak;
use half::bf16;
use std::time::Duration;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("detected matmul path: {}", detected_path());
    let shapes = [
        (
            "QK^T  128x128x576 (B as [N,K])",
            Gemm::dense(128, 128, 576, BLayout::NK, AccumMode::Overwrite),
        ),
        (
            "P.V   128x128x128 (B as [K,N])",
            Gemm::dense(128, 128, 128, BLayout::KN, AccumMode::Accumulate),
        ),
        (
            "P.V   128x512x128 (B as [K,N])",
            Gemm::dense(128, 512, 128, BLayout::KN, AccumMode::Accumulate),
        ),
        (
            "L0    64x128x256  (B as [N,K])",
            Gemm::dense(64, 128, 256, BLayout::NK, AccumMode::Overwrite),
        ),
    ];
    for (name, g) in shapes {
        let (al, bl, cl) = match g.required_lens() {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        let a: Vec<bf16> = (0..al)
            .map(|i| bf16::from_f32(((i * 37) % 101) as f32 / 50.0 - 1.0))
            .collect();
        let b: Vec<bf16> = (0..bl)
            .map(|i| bf16::from_f32(((i * 53) % 97) as f32 / 48.0 - 1.0))
            .collect();
        let mut c = vec![0f32; cl];
        for path in available_paths() {
            let peak = probe_peak(path, Some(1), Duration::from_millis(20), 5)
                .map_or(f64::NAN, |p| p.flops_per_s_one / 1e9);
            let flops = g.flops() as f64;
            // Enough repetitions for ~0.2 s per sample set, at least 3.
            let t = Instant::now();
            if let Err(e) = matmul_with_path(path, &g, &a, &b, &mut c) {
                eprintln!("{name} {path}: {e}");
                continue;
            }
            let once = t.elapsed().as_secs_f64().max(1e-7);
            let reps = ((0.02 / once) as usize).clamp(1, 10_000);
            let samples: Vec<f64> = (0..9)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        let _ = matmul_with_path(path, &g, &a, &b, &mut c);
                    }
                    flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            let g = median(samples);
            println!(
                "{name}  {:<11} {:>8.1} GFLOP/s (median of 9)  one-core peak {:>8.1}  {:>5.1}%",
                path.name(),
                g,
                peak,
                100.0 * g / peak
            );
        }
    }
    if !MatmulPath::Avx512Bf16.is_supported() {
        println!("(avx512bf16 not available on this CPU: that path was not measured)");
    }
}
