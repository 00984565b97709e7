//! Runs the JIT'd AMLA exponent-add loop (the code `atomic_exp_add`
//! compiles to) over all 2^32 f32 bit patterns for each checked `n`, and
//! compares every result bit for bit with
//! `amla_runtime::rescale::exp2_scale_bits` (the identity for `n = 0`: the
//! loop skips a zero step without reading the row).
//!
//! `cargo run --release -p amla --example jit_rescale_exhaustive [n…]`

use amla::compiler::codegen::rescale::JitRescale;
use amla::runtime::rescale::CHECKED_N;

fn main() {
    let ns: Vec<i32> = {
        let args: Vec<i32> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if args.is_empty() {
            CHECKED_N.to_vec()
        } else {
            args
        }
    };
    let j = match JitRescale::new() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("cannot compile the rescale loop: {e}");
            std::process::exit(2);
        }
    };
    let mut failed = false;
    for n in ns {
        let t = std::time::Instant::now();
        let (bad, first) = j.check_all(n, |_| {});
        println!(
            "n = {n:5}: {} mismatches over 2^32 inputs{} ({:.1} s)",
            bad,
            first.map_or(String::new(), |x| format!(", first at {x:#010x}")),
            t.elapsed().as_secs_f64()
        );
        failed |= bad != 0;
    }
    if failed {
        std::process::exit(1);
    }
}
