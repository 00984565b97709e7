//! Runs the JIT's `exp` (`simd_math::exp_f32x4`, the code an unfused `exp`
//! op compiles to) and the runtime's `amla_runtime::vexp` routine (what a
//! fused loop calls) on every supported path over all 2^32 f32 bit
//! patterns, and compares every result bit for bit.
//!
//! `cargo run --release -p amla --example jit_exp_exhaustive`

use amla::compiler::codegen::rescale::JitUnary;
use amla::compiler::ir::UnaryOp;
use amla::runtime::vexp::{available_paths, exp_in_place_with};

fn main() {
    let j = match JitUnary::new(UnaryOp::Exp) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("cannot compile the exp loop: {e}");
            std::process::exit(2);
        }
    };
    let paths = available_paths();
    println!(
        "paths: {}",
        paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let t = std::time::Instant::now();
    let chunk = 1u32 << 24;
    let mut bad = vec![0u64; paths.len()];
    let mut first: Vec<Option<u32>> = vec![None; paths.len()];
    let mut xs = vec![0f32; chunk as usize];
    let mut got = vec![0f32; chunk as usize];
    for c in 0..256u32 {
        for (i, x) in xs.iter_mut().enumerate() {
            *x = f32::from_bits(c * chunk + i as u32);
        }
        let want = j.apply(&xs);
        for (n, &p) in paths.iter().enumerate() {
            got.copy_from_slice(&xs);
            exp_in_place_with(p, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if g.to_bits() != w.to_bits() {
                    bad[n] += 1;
                    first[n].get_or_insert(c * chunk + i as u32);
                }
            }
        }
    }
    for (n, p) in paths.iter().enumerate() {
        println!(
            "{:>6}: {} mismatches over 2^32 inputs{}",
            p.name(),
            bad[n],
            first[n].map_or(String::new(), |x| format!(", first at {x:#010x}"))
        );
    }
    println!("{:.1} s", t.elapsed().as_secs_f64());
    if bad.iter().any(|&b| b != 0) {
        std::process::exit(1);
    }
}
