//! `cargo run --release --example check_sweep [-- N_MAX SEEDS [KERNEL]]`: runs
//! `mla_decode`, `mla_decode_mtp` and `mla_decode_paged` (default shapes,
//! default pipeline) with `--check` for every KV length `N` in
//! `1..=N_MAX` (300) at seeds `0..SEEDS` (4), and prints every failure and
//! the counts (`KERNEL`, e.g. `mla_decode_mtp`, runs only that one, so the
//! three can run side by side), and per kernel the worst `err / tolerance`
//! of `out` over the passing runs (against the reference, also under the
//! former tolerance `2^-8 + 2^-7·|ref|`, and against the interpreter). A
//! failing run is rerun as FlashAttention (`mul-to-add` disabled), to tell a
//! failure of the rescale from one FlashAttention shares. Exit code 1 if any
//! run fails where FlashAttention passes. (`docs/NUMERICS.md`, "The check's
//! tolerance".)

#[path = "../tests/common_sweep/mod.rs"]
mod common_sweep;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_max: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let seeds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let t = std::time::Instant::now();
    let (mut runs, mut failed, mut amla_only) = (0usize, 0usize, 0usize);
    let only = args
        .get(3)
        .map(|k| format!("{}.amla", k.trim_end_matches(".amla")));
    if let Some(k) = &only
        && !common_sweep::KERNELS.contains(&k.as_str())
    {
        eprintln!(
            "unknown kernel `{k}`: expected one of {:?}",
            common_sweep::KERNELS
        );
        std::process::exit(2);
    }
    for kernel in common_sweep::KERNELS {
        if only.as_ref().is_some_and(|k| k != kernel) {
            continue;
        }
        let (mut k_failed, mut k_only) = (0, 0);
        let mut margin = common_sweep::Margin::default();
        for seed in 0..seeds {
            for n in 1..=n_max {
                runs += 1;
                let r = common_sweep::check(kernel, n, seed, &[]);
                if let Ok(m) = r {
                    margin = margin.max(m);
                }
                if let Err(e) = r {
                    println!("{e}");
                    failed += 1;
                    k_failed += 1;
                    match common_sweep::check_pipeline(kernel, n, seed, &[], true) {
                        Err(f) => println!("  FlashAttention fails too: {f}"),
                        Ok(_) => {
                            println!("  FlashAttention passes: a failure of the rescale");
                            amla_only += 1;
                            k_only += 1;
                        }
                    }
                }
            }
            // Progress, so a long sweep can be followed in its log.
            println!(
                "{kernel} seed {seed}: done ({k_failed} failed so far, {:.0} s)",
                t.elapsed().as_secs_f64()
            );
        }
        println!(
            "{kernel}: worst err/tolerance of `out` over the passing runs: {:.3} against the reference ({:.3} under the former 2^-8 + 2^-7·|ref|), {:.3} against the interpreter",
            margin.reference, margin.former, margin.interpreter
        );
        println!(
            "{kernel}: {k_failed} of {} runs failed, {k_only} of them where FlashAttention passes",
            n_max * seeds as usize
        );
    }
    println!(
        "{failed} of {runs} runs failed, {amla_only} of them where FlashAttention passes ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(amla_only > 0));
}
