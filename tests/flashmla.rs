//! What FlashMLA's decode accepts, checked against float64 through the
//! public API: any page size, any head count, multi-token decode up to
//! Sq = 4 at H = 128, a softmax scale, and one batch mixing the sequence
//! lengths FlashMLA's tests use ({0, 1, 63, 64, 65, 1000, 4097}) over a block
//! table whose pages are shuffled in the pool.
//!
//! The default run keeps shapes small (H = 16 for the page-size sweep, short
//! sequences for the head-count sweep); `AMLA_SWEEP=1 cargo test --release
//! --test flashmla` runs every page size at every head count.

use std::path::Path;
use std::time::Duration;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::CompileOptions;
use amla::compiler::run::exec::RunConfig;
use amla::compiler::run::session::{RunRequest, RunSummary, run_source};
use amla::compiler::run::{HostData, HostTensor};

/// The sequence lengths of FlashMLA's tests, in one batch.
const SEQLENS: [usize; 7] = [0, 1, 63, 64, 65, 1000, 4097];

fn source(example: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(example);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SourceFile::new(format!("dsl-examples/{example}"), text)
}

fn run(
    example: &str,
    defines: &[(&str, String)],
    given: Vec<HostTensor>,
    cores: usize,
) -> RunSummary {
    let mut compile = CompileOptions::new().expect("built-in target");
    for (n, v) in defines {
        compile.defines.insert(*n, v.as_str());
    }
    let req = RunRequest {
        compile,
        inputs: Default::default(),
        given,
        run: RunConfig {
            cores,
            wait_timeout: Duration::from_secs(60),
            ..RunConfig::default()
        },
        check: true,
    };
    let s = run_source(&source(example), &req, &mut |_| {})
        .unwrap_or_else(|e| panic!("{example} {defines:?}: {e}"));
    assert!(!s.checks.is_empty(), "the kernel is checked");
    assert!(
        s.checks.iter().all(|c| c.comparisons.len() == 2),
        "out and lse are checked"
    );
    assert!(s.passed(), "{example} {defines:?}: {:#?}", s.checks);
    s
}

/// A deterministic permutation of `0..n` (a shuffled page pool).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// `-D` bindings and the block table / lengths of one paged batch with
/// `lens` tokens per sequence over pages of `page` tokens, the pages of all
/// sequences shuffled in a pool with no spare page.
fn paged_batch(
    lens: &[usize],
    page: usize,
    h: usize,
) -> (Vec<(&'static str, String)>, Vec<HostTensor>) {
    let pages: Vec<usize> = lens.iter().map(|l| l.div_ceil(page)).collect();
    let maxb = pages.iter().copied().max().unwrap_or(1).max(1);
    let nb: usize = pages.iter().sum::<usize>().max(1);
    let pool = shuffled(nb, page as u64 * 31 + h as u64);
    let mut table = vec![0i32; lens.len() * maxb];
    let mut next = 0;
    for (b, &p) in pages.iter().enumerate() {
        for i in 0..p {
            table[b * maxb + i] = pool[next] as i32;
            next += 1;
        }
        // Unused slots hold a valid page the kernel must not read.
        for i in p..maxb {
            table[b * maxb + i] = pool[0] as i32;
        }
    }
    let defines = vec![
        ("B", lens.len().to_string()),
        ("H", h.to_string()),
        ("PAGE", page.to_string()),
        ("NB", nb.to_string()),
        ("MAXB", maxb.to_string()),
    ];
    let given = vec![
        HostTensor {
            name: "block_table".into(),
            shape: vec![lens.len(), maxb],
            data: HostData::I32(table),
        },
        HostTensor {
            name: "cache_seqlens".into(),
            shape: vec![lens.len()],
            data: HostData::I32(lens.iter().map(|&l| l as i32).collect()),
        },
    ];
    (defines, given)
}

fn sweep() -> bool {
    std::env::var_os("AMLA_SWEEP").is_some()
}

#[test]
fn paged_any_page_size_flashmla_seqlens_shuffled_pages() {
    for page in [1, 16, 64, 128] {
        let (d, g) = paged_batch(&SEQLENS, page, 16);
        let s = run("mla_decode_paged.amla", &d, g, 2);
        // The empty sequence: out 0, lse +inf (FlashMLA's convention).
        let lse = s
            .output
            .outputs
            .iter()
            .find(|o| o.name == "lse")
            .expect("lse");
        let HostData::F32(v) = &lse.data else {
            panic!("lse is f32")
        };
        assert!(v[..16].iter().all(|x| *x == f32::INFINITY), "page {page}");
    }
}

#[test]
fn paged_head_counts_flashmla_uses() {
    let heads: &[usize] = if sweep() {
        &[1, 3, 9, 16, 63, 64, 126, 128]
    } else {
        &[1, 3, 63, 128]
    };
    let lens: &[usize] = if sweep() { &SEQLENS } else { &[0, 1, 65, 130] };
    let pages: &[usize] = if sweep() { &[1, 16, 64, 128] } else { &[64] };
    for &page in pages {
        for &h in heads {
            let (d, g) = paged_batch(lens, page, h);
            run("mla_decode_paged.amla", &d, g, 2);
        }
    }
}

#[test]
fn mtp_sq_1_2_4_causal_at_every_head_count() {
    let heads: &[usize] = if sweep() {
        &[1, 3, 16, 63, 128]
    } else {
        &[1, 3, 128]
    };
    for &h in heads {
        for s in [1, 2, 4] {
            let n = if h == 128 && !sweep() { 130 } else { 300 };
            let d = [
                ("B", "2".to_string()),
                ("S", s.to_string()),
                ("H", h.to_string()),
                ("N", n.to_string()),
            ];
            run("mla_decode_mtp.amla", &d, Vec::new(), 2);
        }
    }
}

#[test]
fn the_softmax_scale_is_a_define_and_defaults_to_flashmla_s() {
    let d = [
        ("B", "1".to_string()),
        ("H", "16".to_string()),
        ("N", "200".to_string()),
    ];
    let a = run("mla_decode.amla", &d, Vec::new(), 2);
    let mut d2 = d.to_vec();
    d2.push(("scale", "0.25".to_string()));
    let b = run("mla_decode.amla", &d2, Vec::new(), 2);
    let lse = |s: &RunSummary| {
        s.output
            .outputs
            .iter()
            .find(|o| o.name == "lse")
            .expect("lse")
            .data
            .clone()
    };
    assert_ne!(lse(&a), lse(&b), "the scale changes the result");
    let src = source("mla_decode.amla");
    let c = amla::compiler::driver::compile(&src, &CompileOptions::new().expect("target"))
        .expect("compiles");
    let scale = c
        .hir
        .consts
        .iter()
        .find(|k| k.name == "scale")
        .expect("scale")
        .value
        .as_f64();
    assert_eq!(scale, 1.0 / 576f64.sqrt());
}
