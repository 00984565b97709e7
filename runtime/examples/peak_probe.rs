//! The machine's peak FLOP/s for every matmul path this CPU supports, all
//! CPUs at once and one alone (see `amla_runtime::peak`).
//!
//! Run: `cargo run --release -p amla-runtime --example peak_probe`

use std::time::Duration;

use amla_runtime::matmul::{MatmulPath, detected_path};
use amla_runtime::peak::probe_peak;

fn main() {
    println!("detected matmul path: {}", detected_path());
    for path in MatmulPath::ALL {
        match probe_peak(path, None, Duration::from_millis(50), 7) {
            Some(p) => println!(
                "{:<11} {:<20} {:>8.1} GFLOP/s on {} threads, {:>8.1} GFLOP/s on one",
                path.name(),
                p.instruction(),
                p.flops_per_s / 1e9,
                p.threads,
                p.flops_per_s_one / 1e9
            ),
            None => println!("{:<11} not supported by this CPU", path.name()),
        }
    }
}
