//! `dsl-examples/mla_decode.amla` and `gqa_decode.amla` end to end: the
//! whole pipeline, the JIT backend, a launch on the emulated cores, and a
//! float64 check of `out` and `lse` (with a partial last KV block).

use std::path::Path;
use std::time::Duration;

use amla::compiler::check::Defines;
use amla::compiler::codegen::{CodegenOptions, compile};
use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{self, CompileOptions};
use amla::compiler::ir::{DType, Dim, Kernel};
use amla::runtime::{CoreConfig, Gm, LaunchConfig, launch};
use half::bf16;

fn elems(k: &Kernel, t: &amla::compiler::ir::TensorData) -> usize {
    t.shape
        .iter()
        .map(|d| match d {
            Dim::Const(n) => *n as usize,
            Dim::Sym(id) => k.dims[*id].value.unwrap() as usize,
        })
        .product()
}

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[test]
fn mla_decode_matches_float64() {
    let (b, h, n, dk, dv) = (2usize, 128usize, 300usize, 576usize, 512usize);
    let k = load_example("mla_decode.amla", &[("B", "2"), ("N", "300")]);
    let ck = compile(&k, &CodegenOptions { verify: true }).unwrap();
    let dims: Vec<i64> = k.dims.values().map(|d| d.value.unwrap() as i64).collect();
    let items = ck.work_items(&dims).unwrap();
    let mut rng = Rng(0x5EED);
    let q: Vec<bf16> = (0..b * h * dk).map(|_| bf16::from_f32(rng.f32())).collect();
    let kv: Vec<bf16> = (0..b * n * dk)
        .map(|_| bf16::from_f32(rng.f32() * 2.0))
        .collect();
    let mut gm = Gm::new();
    let mut ids = std::collections::HashMap::new();
    for t in k.tensors.values() {
        let id = match t.name.as_str() {
            "q" => gm.add_from("q", &q).unwrap(),
            "kv" => gm.add_from("kv", &kv).unwrap(),
            _ => {
                let d = match t.dtype {
                    DType::F32 => amla::runtime::DType::F32,
                    DType::Bf16 => amla::runtime::DType::Bf16,
                    DType::F16 => amla::runtime::DType::F16,
                    _ => amla::runtime::DType::I32,
                };
                gm.add_zeroed(&t.name, d, elems(&k, t)).unwrap()
            }
        };
        ids.insert(t.name.clone(), id);
    }
    // Local buffers start as NaN: reading anything unwritten shows.
    let cfg = LaunchConfig {
        poison_local: true,
        ..LaunchConfig::default()
    }
    .with_cores(2)
    .with_vector_sub_blocks(ck.sub_blocks() as usize)
    .with_wait_timeout(Duration::from_secs(60))
    .with_dims(dims);
    let rep = launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    assert!(rep.pending_flags.is_empty(), "{:?}", rep.pending_flags);
    let out = gm.slice::<bf16>(ids["out"]).unwrap();
    let lse = gm.slice::<f32>(ids["lse"]).unwrap();
    let scale = 1.0 / 192f64.sqrt();
    let mut worst = 0f64;
    for bi in 0..b {
        for hi in 0..h {
            let qr = &q[(bi * h + hi) * dk..][..dk];
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    let kr = &kv[(bi * n + j) * dk..][..dk];
                    scale
                        * qr.iter()
                            .zip(kr)
                            .map(|(a, c)| f64::from(a.to_f32()) * f64::from(c.to_f32()))
                            .sum::<f64>()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let l: f64 = p.iter().sum();
            let want_lse = m + l.ln();
            let got_lse = f64::from(lse[bi * h + hi]);
            assert!(
                (got_lse - want_lse).abs() < 1e-3,
                "lse[{bi},{hi}] {got_lse} vs {want_lse}"
            );
            for c in 0..dv {
                let o: f64 = (0..n)
                    .map(|j| p[j] * f64::from(kv[(bi * n + j) * dk + c].to_f32()))
                    .sum::<f64>()
                    / l;
                let g = f64::from(out[(bi * h + hi) * dv + c].to_f32());
                worst = worst.max((g - o).abs());
            }
        }
    }
    // bf16 P and a bf16 output: a few bf16 ulps of values of size ~1.
    eprintln!("mla_decode: max |out - ref| = {worst:e}");
    assert!(worst < 2e-2, "max |out - ref| = {worst}");
}

/// Plain softmax attention in f64 for one row: `(out, lse)`.
fn attend(q: &[bf16], keys: &[&[bf16]], vals: &[&[bf16]], scale: f64) -> (Vec<f64>, f64) {
    let s: Vec<f64> = keys
        .iter()
        .map(|k| {
            scale
                * q.iter()
                    .zip(k.iter())
                    .map(|(a, c)| f64::from(a.to_f32()) * f64::from(c.to_f32()))
                    .sum::<f64>()
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let l: f64 = p.iter().sum();
    let dv = vals[0].len();
    let out = (0..dv)
        .map(|c| {
            p.iter()
                .zip(vals)
                .map(|(pj, v)| pj * f64::from(v[c].to_f32()))
                .sum::<f64>()
                / l
        })
        .collect();
    (out, m + l.ln())
}

fn load_example(file: &str, defines: &[(&str, &str)]) -> Kernel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(file);
    let src = SourceFile::new(file, std::fs::read_to_string(path).unwrap());
    let mut opts = CompileOptions::new().unwrap();
    let mut d = Defines::new();
    for (n, v) in defines {
        d.insert(*n, *v);
    }
    opts.defines = d;
    driver::compile(&src, &opts)
        .map_err(|e| e.to_string())
        .unwrap()
        .ir
}

#[test]
fn gqa_decode_matches_float64() {
    let (b, hq, hk, n, d) = (2usize, 32usize, 8usize, 300usize, 128usize);
    let k = load_example("gqa_decode.amla", &[("B", "2"), ("N", "300")]);
    let ck = compile(&k, &CodegenOptions { verify: true }).unwrap();
    let dims: Vec<i64> = k.dims.values().map(|d| d.value.unwrap() as i64).collect();
    let items = ck.work_items(&dims).unwrap();
    assert_eq!(items, (b * hk) as u64);
    let mut rng = Rng(0xBEEF);
    let q: Vec<bf16> = (0..b * hq * d).map(|_| bf16::from_f32(rng.f32())).collect();
    let kk: Vec<bf16> = (0..b * hk * n * d)
        .map(|_| bf16::from_f32(rng.f32() * 2.0))
        .collect();
    let vv: Vec<bf16> = (0..b * hk * n * d)
        .map(|_| bf16::from_f32(rng.f32()))
        .collect();
    let mut gm = Gm::new();
    let mut ids = std::collections::HashMap::new();
    for t in k.tensors.values() {
        let id = match t.name.as_str() {
            "q" => gm.add_from("q", &q).unwrap(),
            "k" => gm.add_from("k", &kk).unwrap(),
            "v" => gm.add_from("v", &vv).unwrap(),
            _ => {
                let dt = match t.dtype {
                    DType::F32 => amla::runtime::DType::F32,
                    DType::Bf16 => amla::runtime::DType::Bf16,
                    DType::F16 => amla::runtime::DType::F16,
                    _ => amla::runtime::DType::I32,
                };
                gm.add_zeroed(&t.name, dt, elems(&k, t)).unwrap()
            }
        };
        ids.insert(t.name.clone(), id);
    }
    // Local buffers start as NaN: reading anything unwritten shows.
    let cfg = LaunchConfig {
        poison_local: true,
        ..LaunchConfig::default()
    }
    .with_cores(2)
    .with_vector_sub_blocks(ck.sub_blocks() as usize)
    .with_wait_timeout(Duration::from_secs(60))
    .with_dims(dims);
    let rep = launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    assert!(rep.pending_flags.is_empty(), "{:?}", rep.pending_flags);
    let out = gm.slice::<bf16>(ids["out"]).unwrap();
    let lse = gm.slice::<f32>(ids["lse"]).unwrap();
    let scale = 1.0 / 128f64.sqrt();
    let mut worst = 0f64;
    for bi in 0..b {
        for h in 0..hq {
            let g = h / (hq / hk);
            let keys: Vec<&[bf16]> = (0..n)
                .map(|j| &kk[((bi * hk + g) * n + j) * d..][..d])
                .collect();
            let vals: Vec<&[bf16]> = (0..n)
                .map(|j| &vv[((bi * hk + g) * n + j) * d..][..d])
                .collect();
            let (o, l) = attend(&q[(bi * hq + h) * d..][..d], &keys, &vals, scale);
            let gl = f64::from(lse[bi * hq + h]);
            assert!((gl - l).abs() < 1e-3, "lse[{bi},{h}] {gl} vs {l}");
            for c in 0..d {
                let got = f64::from(out[(bi * hq + h) * d + c].to_f32());
                worst = worst.max((got - o[c]).abs());
            }
        }
    }
    eprintln!("gqa_decode: max |out - ref| = {worst:e}");
    assert!(worst < 2e-2, "max |out - ref| = {worst}");
}

#[test]
fn mla_decode_paged_matches_float64() {
    let (b, h, nb, maxb, page, dk, dv) = (
        2usize, 128usize, 12usize, 4usize, 64usize, 576usize, 512usize,
    );
    let k = load_example(
        "mla_decode_paged.amla",
        &[("B", "2"), ("NB", "12"), ("MAXB", "4")],
    );
    let ck = compile(&k, &CodegenOptions { verify: true }).unwrap();
    let dims: Vec<i64> = k.dims.values().map(|d| d.value.unwrap() as i64).collect();
    let items = ck.work_items(&dims).unwrap();
    let mut rng = Rng(0xFACE);
    let q: Vec<bf16> = (0..b * h * dk).map(|_| bf16::from_f32(rng.f32())).collect();
    let kv: Vec<bf16> = (0..nb * page * dk)
        .map(|_| bf16::from_f32(rng.f32() * 2.0))
        .collect();
    let table: Vec<i32> = vec![7, 2, 11, 0, 5, 9, 3, 1];
    let lens: Vec<i32> = vec![150, 256];
    let mut gm = Gm::new();
    let mut ids = std::collections::HashMap::new();
    for t in k.tensors.values() {
        let id = match t.name.as_str() {
            "q" => gm.add_from("q", &q).unwrap(),
            "kv" => gm.add_from("kv", &kv).unwrap(),
            "block_table" => gm.add_from("block_table", &table).unwrap(),
            "cache_seqlens" => gm.add_from("cache_seqlens", &lens).unwrap(),
            _ => {
                let dt = match t.dtype {
                    DType::F32 => amla::runtime::DType::F32,
                    DType::Bf16 => amla::runtime::DType::Bf16,
                    DType::F16 => amla::runtime::DType::F16,
                    _ => amla::runtime::DType::I32,
                };
                gm.add_zeroed(&t.name, dt, elems(&k, t)).unwrap()
            }
        };
        ids.insert(t.name.clone(), id);
    }
    // Local buffers start as NaN: reading anything unwritten shows.
    let cfg = LaunchConfig {
        poison_local: true,
        ..LaunchConfig::default()
    }
    .with_cores(2)
    .with_vector_sub_blocks(ck.sub_blocks() as usize)
    .with_wait_timeout(Duration::from_secs(60))
    .with_dims(dims);
    let rep = launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    assert!(rep.pending_flags.is_empty(), "{:?}", rep.pending_flags);
    let out = gm.slice::<bf16>(ids["out"]).unwrap();
    let lse = gm.slice::<f32>(ids["lse"]).unwrap();
    let scale = 1.0 / 192f64.sqrt();
    let mut worst = 0f64;
    for bi in 0..b {
        let rows: Vec<&[bf16]> = (0..lens[bi] as usize)
            .map(|j| {
                let p = table[bi * maxb + j / page] as usize;
                &kv[(p * page + j % page) * dk..][..dk]
            })
            .collect();
        let vals: Vec<&[bf16]> = rows.iter().map(|r| &r[..dv]).collect();
        for hi in 0..h {
            let (o, l) = attend(&q[(bi * h + hi) * dk..][..dk], &rows, &vals, scale);
            let gl = f64::from(lse[bi * h + hi]);
            assert!((gl - l).abs() < 1e-3, "lse[{bi},{hi}] {gl} vs {l}");
            for c in 0..dv {
                let got = f64::from(out[(bi * h + hi) * dv + c].to_f32());
                worst = worst.max((got - o[c]).abs());
            }
        }
    }
    eprintln!("mla_decode_paged: max |out - ref| = {worst:e}");
    assert!(worst < 2e-2, "max |out - ref| = {worst}");
}

#[test]
fn mla_decode_mtp_matches_float64() {
    let (b, sq, h, n, dk, dv) = (2usize, 2usize, 128usize, 300usize, 576usize, 512usize);
    let k = load_example("mla_decode_mtp.amla", &[("B", "2"), ("N", "300")]);
    let ck = compile(&k, &CodegenOptions { verify: true }).unwrap();
    let dims: Vec<i64> = k.dims.values().map(|d| d.value.unwrap() as i64).collect();
    let items = ck.work_items(&dims).unwrap();
    let mut rng = Rng(0xC0DE);
    let q: Vec<bf16> = (0..b * sq * h * dk)
        .map(|_| bf16::from_f32(rng.f32()))
        .collect();
    let kv: Vec<bf16> = (0..b * n * dk)
        .map(|_| bf16::from_f32(rng.f32() * 2.0))
        .collect();
    let mut gm = Gm::new();
    let mut ids = std::collections::HashMap::new();
    for t in k.tensors.values() {
        let id = match t.name.as_str() {
            "q" => gm.add_from("q", &q).unwrap(),
            "kv" => gm.add_from("kv", &kv).unwrap(),
            _ => {
                let dt = match t.dtype {
                    DType::F32 => amla::runtime::DType::F32,
                    DType::Bf16 => amla::runtime::DType::Bf16,
                    DType::F16 => amla::runtime::DType::F16,
                    _ => amla::runtime::DType::I32,
                };
                gm.add_zeroed(&t.name, dt, elems(&k, t)).unwrap()
            }
        };
        ids.insert(t.name.clone(), id);
    }
    // Local buffers start as NaN: reading anything unwritten shows.
    let cfg = LaunchConfig {
        poison_local: true,
        ..LaunchConfig::default()
    }
    .with_cores(2)
    .with_vector_sub_blocks(ck.sub_blocks() as usize)
    .with_wait_timeout(Duration::from_secs(60))
    .with_dims(dims);
    let rep = launch(
        &ck.runtime_kernel(),
        &mut gm,
        items,
        &CoreConfig::default(),
        &cfg,
    )
    .unwrap();
    assert!(rep.pending_flags.is_empty(), "{:?}", rep.pending_flags);
    let out = gm.slice::<bf16>(ids["out"]).unwrap();
    let lse = gm.slice::<f32>(ids["lse"]).unwrap();
    let scale = 1.0 / 192f64.sqrt();
    let mut worst = 0f64;
    for bi in 0..b {
        for s in 0..sq {
            let visible = n - sq + s + 1;
            let rows: Vec<&[bf16]> = (0..visible)
                .map(|j| &kv[(bi * n + j) * dk..][..dk])
                .collect();
            let vals: Vec<&[bf16]> = rows.iter().map(|r| &r[..dv]).collect();
            for hi in 0..h {
                let row = (bi * sq + s) * h + hi;
                let (o, l) = attend(&q[row * dk..][..dk], &rows, &vals, scale);
                let gl = f64::from(lse[row]);
                assert!((gl - l).abs() < 1e-3, "lse[{bi},{s},{hi}] {gl} vs {l}");
                for c in 0..dv {
                    let got = f64::from(out[row * dv + c].to_f32());
                    worst = worst.max((got - o[c]).abs());
                }
            }
        }
    }
    eprintln!("mla_decode_mtp: max |out - ref| = {worst:e}");
    assert!(worst < 2e-2, "max |out - ref| = {worst}");
}
