//! Exhaustive proof of the integer rescale contract: for every one of the
//! 2^32 f32 bit patterns and each checked `n` (the fixed list plus two random
//! values), `exp2_scale_bits(x, n)` is bit-identical to the FTZ definition
//! `exp2_scale_reference(x, n)` (for `n = 0`: the identity, so that run
//! proves every pattern, subnormals included, is left as it is).
//!
//! Run: `cargo run --release -p amla-runtime --example rescale_exhaustive`
//! Exits with status 1 on any mismatch. Uses every available CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use amla_runtime::rescale::{CHECKED_N, exp2_scale_bits, exp2_scale_reference};

fn main() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut ns: Vec<i32> = CHECKED_N.to_vec();
    let mut s = seed | 1;
    for _ in 0..2 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ns.push(-((s % 256) as i32));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("rescale_exhaustive: n = {ns:?}, {threads} threads, 2^32 inputs each");
    let total = Instant::now();
    let mut failed = false;
    for &n in &ns {
        let t = Instant::now();
        let mismatches = AtomicU64::new(0);
        let first = AtomicU64::new(u64::MAX);
        let next_chunk = AtomicU64::new(0);
        const CHUNK: u64 = 1 << 20;
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| {
                    loop {
                        let c = next_chunk.fetch_add(1, Ordering::Relaxed);
                        let start = c * CHUNK;
                        if start >= 1u64 << 32 {
                            break;
                        }
                        let mut bad = 0u64;
                        for b in start..start + CHUNK {
                            let x = f32::from_bits(b as u32);
                            if exp2_scale_bits(x, n).to_bits()
                                != exp2_scale_reference(x, n).to_bits()
                            {
                                bad += 1;
                                first.fetch_min(b, Ordering::Relaxed);
                            }
                        }
                        mismatches.fetch_add(bad, Ordering::Relaxed);
                    }
                });
            }
        });
        let bad = mismatches.into_inner();
        println!(
            "  n = {n:>4}: {bad} mismatches{} ({:.1} s)",
            if bad > 0 {
                format!(", first x = {:#010x}", first.into_inner())
            } else {
                String::new()
            },
            t.elapsed().as_secs_f64()
        );
        failed |= bad > 0;
    }
    println!("total time: {:.1} s", total.elapsed().as_secs_f64());
    if failed {
        println!("FAILED");
        std::process::exit(1);
    }
    println!("OK: bit-identical for all 2^32 inputs and every n above");
}
