//! `amlac bench --json` as a user runs it (the binary, not the library):
//! the JSON names the matmul path and the peak it measured, and a launch
//! after warm-up allocates nothing (the counting allocator is the `amlac`
//! binary's global one, so only the binary can check it). No time is
//! asserted: benchmarks are benchmarks.

use std::process::Command;

fn bench(extra: &[&str]) -> serde_json::Value {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dsl-examples/mla_decode.amla"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_amlac"))
        .args(["bench", file, "-D", "B=2", "-D", "H=16", "-D", "N=300"])
        .args([
            "--launches",
            "3",
            "--compile-repeats",
            "1",
            "--peak-ms",
            "1",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("amlac runs");
    assert!(
        out.status.success(),
        "amlac bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench --json prints JSON")
}

#[test]
fn a_launch_allocates_nothing_and_the_json_names_the_path_and_its_peak() {
    // The default path (the fastest this CPU has) and the portable one.
    for extra in [&[][..], &["--matmul-path", "scalar"][..]] {
        let j = bench(extra);
        assert_eq!(j["allocs_per_launch"], 0, "{extra:?}: {j}");
        let path = j["matmul_path"].as_str().expect("matmul_path");
        assert_eq!(j["peak"]["path"], path, "{extra:?}");
        if !extra.is_empty() {
            assert_eq!(path, "scalar");
        }
        let peak = j["peak"]["gflops"].as_f64().expect("peak gflops");
        let fu = j["fu"].as_f64().expect("fu");
        assert!(peak > 0.0 && peak.is_finite(), "{extra:?}: peak {peak}");
        assert!(fu > 0.0 && fu.is_finite(), "{extra:?}: fu {fu}");
        // The MLA formula, 2·B·Sq·H·N·(576 + 512) (the Cube computes the
        // partial last block whole: `cube_flops` is more).
        assert_eq!(
            j["flops"].as_f64(),
            Some((2 * 2 * 16 * 300 * (576 + 512)) as f64)
        );
        assert!(j["cube_flops"].as_u64() > Some(2 * 2 * 16 * 300 * (576 + 512)));
    }
}
