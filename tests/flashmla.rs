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
            // Tests give the lengths and tables; the rest is seeded.
            fill_missing: true,
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

mod api {
    use super::*;
    use amla::compiler::flash_mla::{
        FlashMlaPlan, PlanRequest, flash_mla_with_kvcache, get_mla_metadata,
    };
    use amla::compiler::ir::DType;
    use amla::compiler::run::inputs::{InputOptions, generate};
    use amla::compiler::run::reference_kind::{ReferenceKind, expected};

    fn plan(
        lens: &[usize],
        page: usize,
        h: usize,
        splits: Option<usize>,
        cores: usize,
    ) -> (FlashMlaPlan, Vec<HostTensor>) {
        plan_sq(lens, page, h, 1, splits, cores)
    }

    /// A plan and inputs for `sq` new tokens per sequence.
    fn plan_sq(
        lens: &[usize],
        page: usize,
        h: usize,
        sq: usize,
        splits: Option<usize>,
        cores: usize,
    ) -> (FlashMlaPlan, Vec<HostTensor>) {
        let (d, g) = paged_batch(lens, page, h);
        let get = |n: &str| {
            d.iter()
                .find(|x| x.0 == n)
                .expect("define")
                .1
                .parse::<usize>()
                .expect("number")
        };
        let (nb, maxb) = (get("NB"), get("MAXB"));
        let req = PlanRequest {
            heads: h,
            q_tokens: sq,
            page,
            pool_pages: nb,
            max_pages: maxb,
            cache_seqlens: lens.iter().map(|&l| l as i32).collect(),
            num_splits: splits,
            softmax_scale: None,
            compile: CompileOptions::new().expect("target"),
            run: RunConfig {
                cores,
                wait_timeout: Duration::from_secs(60),
                ..RunConfig::default()
            },
        };
        let opts = InputOptions::default();
        let q = generate("q", DType::Bf16, &[lens.len(), sq, h, 576], None, &opts, 0).expect("q");
        let kv = generate("kv", DType::Bf16, &[nb, page, 1, 576], None, &opts, 1).expect("kv");
        let mut t = vec![q, kv];
        t.extend(g);
        (FlashMlaPlan::new(&req).expect("plan"), t)
    }

    fn call(p: &FlashMlaPlan, t: &[HostTensor]) -> (HostTensor, HostTensor) {
        flash_mla_with_kvcache(
            &t[0],
            &t[1],
            &t[2],
            &t[3],
            512,
            p,
            p.metadata.splits,
            None,
            true,
        )
        .expect("call")
    }

    fn check(p: &FlashMlaPlan, t: &[HostTensor], out: &HostTensor, lse: &HostTensor) {
        let (b, sq, h) = (t[0].shape[0], t[0].shape[1], t[0].shape[2]);
        let refin = vec![
            HostTensor {
                name: "q".into(),
                shape: vec![b, sq, h, 576],
                data: t[0].data.clone(),
            },
            HostTensor {
                name: "kv".into(),
                shape: vec![t[1].shape[0], t[1].shape[1], 576],
                data: t[1].data.clone(),
            },
            t[2].clone(),
            t[3].clone(),
        ];
        let want =
            expected(ReferenceKind::MlaPaged, &refin, p.softmax_scale, 512).expect("reference");
        use amla::compiler::run::compare::{Tolerance, compare, compare_magnitudes};
        let c = compare_magnitudes(
            "out",
            &out.data.to_f64(),
            &want.out,
            &want.mag,
            Tolerance::for_dtype(out.data.dtype()),
        );
        assert!(c.passed, "{c:#?}");
        let c = compare(
            "lse",
            &lse.data.to_f64(),
            &want.lse,
            Tolerance::for_dtype(lse.data.dtype()),
        );
        assert!(c.passed, "{c:#?}");
    }

    /// FlashMLA's `s_q` > 1 (multi-token prediction): the new tokens are the
    /// last of each sequence, causal among them; sequences shorter than
    /// their new tokens give rows that see no key (out 0, lse +inf).
    #[test]
    fn multi_token_decode_through_the_api_matches_float64() {
        for (lens, page, h, sq) in [
            (&[0, 1, 63, 64, 65, 1000][..], 16, 16, 2),
            (&[1, 3, 130][..], 64, 128, 4),
            (&[5, 70][..], 64, 3, 3),
        ] {
            let (p, t) = plan_sq(lens, page, h, sq, None, 2);
            assert_eq!(p.metadata.splits, 1, "no split-KV with {sq} tokens");
            assert_eq!(p.executables()[0].0, "mla_decode_paged_mtp");
            let (out, lse) = call(&p, &t);
            assert_eq!(out.shape, [lens.len(), sq, h, 512]);
            assert_eq!(lse.shape, [lens.len(), sq, h]);
            check(&p, &t, &out, &lse);
            if lens[0] == 1 {
                // One cached token, sq new ones: only the last token's rows
                // (which are that one token) see a key.
                let HostData::F32(v) = &lse.data else {
                    panic!("lse is f32")
                };
                assert!(v[..(sq - 1) * h].iter().all(|x| *x == f32::INFINITY));
                assert!(v[(sq - 1) * h..sq * h].iter().all(|x| x.is_finite()));
            }
        }
        // What the multi-token plan refuses, by name.
        let (p, t) = plan_sq(&[5, 70], 64, 4, 2, None, 2);
        let e = flash_mla_with_kvcache(&t[0], &t[1], &t[2], &t[3], 512, &p, 1, None, false)
            .unwrap_err();
        assert!(e.contains("causal = false"), "{e}");
        let one = &plan(&[5, 70], 64, 4, None, 2).1[0];
        let e =
            flash_mla_with_kvcache(one, &t[1], &t[2], &t[3], 512, &p, 1, None, true).unwrap_err();
        assert!(e.contains("[2, 2, 4, 576]"), "{e}");
    }

    #[test]
    fn split_kv_on_and_off_match_float64_and_are_bit_identical_across_cores() {
        let lens = [0, 1, 63, 64, 65, 1000, 4097];
        for (page, h) in [(64, 16), (16, 3)] {
            let (off, t) = plan(&lens, page, h, Some(1), 2);
            assert_eq!(off.metadata.splits, 1);
            let (o1, l1) = call(&off, &t);
            check(&off, &t, &o1, &l1);
            let (mut on, _) = plan(&lens, page, h, Some(4), 2);
            assert_eq!(on.metadata.splits, 4);
            let (o2, l2) = call(&on, &t);
            check(&on, &t, &o2, &l2);
            // The same plan on 1 and 3 emulated cores, and again: same bits.
            for cores in [1, 3, 2] {
                on.set_run(RunConfig {
                    cores,
                    wait_timeout: Duration::from_secs(60),
                    ..RunConfig::default()
                });
                let (o3, l3) = call(&on, &t);
                assert_eq!(o3, o2, "out on {cores} cores");
                assert_eq!(l3, l2, "lse on {cores} cores");
            }
        }
    }

    #[test]
    fn the_scheduler_splits_long_lonely_sequences_and_ignores_emulated_cores() {
        let one_long = get_mla_metadata(&[16384], 64, 256, 24, None);
        assert!(one_long.splits > 1, "{one_long}");
        let many = get_mla_metadata(&[4096; 32], 64, 64, 24, None);
        assert_eq!(many.splits, 1, "{many}");
        let short = get_mla_metadata(&[100], 64, 2, 24, None);
        assert_eq!(short.splits, 1, "{short}");
        assert_eq!(get_mla_metadata(&[100], 64, 2, 24, Some(2)).splits, 2);
        // The plan depends on shapes and lengths only: the same on every run.
        assert_eq!(one_long, get_mla_metadata(&[16384], 64, 256, 24, None));
    }

    #[test]
    fn bad_calls_are_errors_naming_what_is_wrong() {
        let (p, t) = plan(&[5, 70], 64, 4, None, 2);
        let e = flash_mla_with_kvcache(&t[0], &t[1], &t[2], &t[3], 256, &p, 1, None, false)
            .unwrap_err();
        assert!(e.contains("head_dim_v"), "{e}");
        let e = flash_mla_with_kvcache(&t[0], &t[1], &t[2], &t[3], 512, &p, 3, None, false)
            .unwrap_err();
        assert!(e.contains("num_splits"), "{e}");
        let e = flash_mla_with_kvcache(&t[0], &t[1], &t[2], &t[3], 512, &p, 1, Some(0.5), false)
            .unwrap_err();
        assert!(e.contains("softmax_scale"), "{e}");
        let mut bt = t[2].clone();
        if let HostData::I32(v) = &mut bt.data {
            v[0] = 99;
        }
        let e =
            flash_mla_with_kvcache(&t[0], &t[1], &bt, &t[3], 512, &p, 1, None, false).unwrap_err();
        assert!(e.contains("`block_table`: entry [0, 0] = 99"), "{e}");
        // Entries past a sequence's length are never read: `-1` padding
        // (vLLM's) is accepted and changes nothing.
        let (want, _) = call(&p, &t);
        let mut padded = t[2].clone();
        if let HostData::I32(v) = &mut padded.data {
            // Sequence 0 has 5 tokens: one page of 64; its second slot is unused.
            v[1] = -1;
        }
        let (got, _) =
            flash_mla_with_kvcache(&t[0], &t[1], &padded, &t[3], 512, &p, 1, None, false)
                .expect("padding past the length");
        assert_eq!(got, want);
        // A length beyond the table's capacity is refused by name.
        let mut long = t[3].clone();
        if let HostData::I32(v) = &mut long.data {
            v[0] = 1000;
        }
        let e = flash_mla_with_kvcache(&t[0], &t[1], &t[2], &long, 512, &p, 1, None, false)
            .unwrap_err();
        assert!(e.contains("`cache_seqlens`: entry [0] = 1000"), "{e}");
    }
}

#[test]
fn amlac_flash_mla_reads_npy_explains_and_checks() {
    use amla::compiler::ir::DType;
    use amla::compiler::run::inputs::{InputOptions, generate};
    use amla::compiler::run::npy;
    let dir = std::env::temp_dir().join(format!("amla-flashmla-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (_, g) = paged_batch(&[0, 70, 300], 16, 3);
    let nb = 5 + 19;
    let opts = InputOptions::default();
    let q = generate("q", DType::Bf16, &[3, 1, 3, 576], None, &opts, 0).expect("q");
    let kv = generate("k_cache", DType::Bf16, &[nb, 16, 1, 576], None, &opts, 1).expect("kv");
    let mut args = vec!["amlac".to_string(), "flash-mla".into()];
    for t in [&q, &kv, &g[0], &g[1]] {
        let p = dir.join(format!("{}.npy", t.name));
        npy::write(&p, t, npy::Bf16Npy::default()).expect("write");
        args.push("--input".into());
        let name = if t.name == "kv" {
            "k_cache"
        } else {
            t.name.as_str()
        };
        args.push(format!("{name}={}", p.display()));
    }
    args.extend([
        "--check".into(),
        "--explain-schedule".into(),
        "--cores".into(),
        "2".into(),
    ]);
    assert_eq!(amla::compiler::cli::run(args.clone()), 0, "{args:?}");
    let mut split = args.clone();
    split.extend(["-D".into(), "SPLITS=3".into()]);
    assert_eq!(amla::compiler::cli::run(split), 0);
    let mut bad = args.clone();
    bad.extend(["-D".into(), "SPLITS=0".into()]);
    assert_eq!(amla::compiler::cli::run(bad), 1);
    // Two new tokens per sequence: q [B, 2, H, 576], checked against float64.
    let q2 = generate("q", DType::Bf16, &[3, 2, 3, 576], None, &opts, 0).expect("q");
    let p2 = dir.join("q2.npy");
    npy::write(&p2, &q2, npy::Bf16Npy::default()).expect("write");
    let mtp: Vec<String> = args
        .iter()
        .map(|a| match a.starts_with("q=") {
            true => format!("q={}", p2.display()),
            false => a.clone(),
        })
        .collect();
    assert!(mtp.iter().any(|a| a.ends_with("q2.npy")));
    assert_eq!(amla::compiler::cli::run(mtp), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `amlac bench --flash-mla` benchmarks the whole split-KV plan (split
/// kernel and combine) at a small shape; the library call behind it times
/// every kernel of the plan in every launch.
#[test]
fn bench_flash_mla_times_the_whole_split_plan() {
    use amla::compiler::flash_mla::{PlanBench, bench_plan};
    let b = PlanBench {
        batch: 1,
        seqlen: 1024,
        heads: 16,
        page: 64,
        num_splits: None,
        warmup: 0,
        launches: 2,
        compile: CompileOptions::new().expect("built-in target"),
        run: RunConfig {
            cores: 2,
            wait_timeout: Duration::from_secs(60),
            ..RunConfig::default()
        },
    };
    let mut before = 0;
    let t = bench_plan(&b, &mut || before += 1).expect("bench");
    // One sequence on the 910B's cores, 1024 tokens: two chunks of 512.
    assert_eq!(t.splits, 2, "{}", t.why);
    let names: Vec<&str> = t.kernels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["mla_decode_split", "mla_combine"]);
    assert_eq!(t.kernels[0].1, 2, "one work item per chunk");
    assert_eq!((t.plan_s.len(), before), (2, 2));
    for (plan, kernels) in t.plan_s.iter().zip(&t.kernel_s) {
        assert_eq!(kernels.len(), 2);
        assert!(kernels.iter().all(|&s| s > 0.0));
        assert!((plan - kernels.iter().sum::<f64>()).abs() < 1e-12);
    }
    // One split forced: the paged kernel alone.
    let one = bench_plan(
        &PlanBench {
            num_splits: Some(1),
            launches: 1,
            ..b.clone()
        },
        &mut || {},
    )
    .expect("bench");
    assert_eq!(one.kernels.len(), 1);
    assert_eq!(one.kernels[0].0, "mla_decode_paged");
    // The CLI: the plan against a dense shape; a missing dim is an error.
    let cli = |extra: &[&str]| {
        let mut a = vec!["amlac", "bench", "--flash-mla", "--cores", "2"];
        a.extend([
            "--launches",
            "1",
            "--warmup",
            "0",
            "--peak-ms",
            "1",
            "--json",
        ]);
        a.extend(extra);
        amla::compiler::cli::run(a)
    };
    let ok = ["-D", "B=1", "-D", "N=512", "-D", "H=16", "-D", "PAGE=64"];
    assert_eq!(cli(&[&ok[..], &["--against", "B=1,N=256"]].concat()), 0);
    assert_eq!(cli(&["-D", "B=1", "-D", "H=16"]), 1, "N is required");
    assert_eq!(cli(&[&ok[..], &["--against", "B=1"]].concat()), 1);
}
