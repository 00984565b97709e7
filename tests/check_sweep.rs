//! A sample of the `--check` sweep of the MLA examples over the KV length
//! and the seed (the whole sweep, every `N` in 1..=300 at seeds 0-3, is
//! `cargo run --release --example check_sweep`): the default pipeline
//! passes the float64 check at the lengths where the AMLA rescale used to
//! fail it (`N = 2, 3, 5, 9, 16` for `mla_decode`, `3, 8` for
//! `mla_decode_mtp`) and around the block size.

mod common_sweep;

/// A kernel, its sampled KV lengths and its extra `-D` bindings.
type Case = (
    &'static str,
    &'static [usize],
    &'static [(&'static str, &'static str)],
);

#[test]
fn the_default_pipeline_passes_the_check_at_sampled_lengths() {
    let mut failures = Vec::new();
    let cases: [Case; 3] = [
        ("mla_decode.amla", &[1, 2, 3, 5, 9, 16, 129, 300], &[]),
        ("mla_decode_mtp.amla", &[3, 8, 130], &[("B", "2")]),
        ("mla_decode_paged.amla", &[1, 2, 65, 300], &[("B", "2")]),
    ];
    assert_eq!(cases.map(|c| c.0), common_sweep::KERNELS);
    for (kernel, ns, defines) in cases {
        for &n in ns {
            if let Err(e) = common_sweep::check(kernel, n, 0, defines) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
