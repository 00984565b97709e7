//! `cargo run --release --example check_sweep [-- N_MAX SEEDS]`: runs
//! `mla_decode`, `mla_decode_mtp` and `mla_decode_paged` (default shapes,
//! default pipeline) with `--check` for every KV length `N` in
//! `1..=N_MAX` (300) at seeds `0..SEEDS` (4), and prints every failure and
//! the counts. Exit code 1 if any run fails. (`docs/NUMERICS.md`.)

#[path = "../tests/common_sweep/mod.rs"]
mod common_sweep;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_max: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let seeds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let t = std::time::Instant::now();
    let (mut runs, mut failed) = (0usize, 0usize);
    for kernel in common_sweep::KERNELS {
        let mut k_failed = 0;
        for seed in 0..seeds {
            for n in 1..=n_max {
                runs += 1;
                if let Err(e) = common_sweep::check(kernel, n, seed, &[]) {
                    println!("{e}");
                    failed += 1;
                    k_failed += 1;
                }
            }
        }
        println!(
            "{kernel}: {k_failed} of {} runs failed",
            n_max * seeds as usize
        );
    }
    println!(
        "{failed} of {runs} runs failed ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}
