//! `amlac flash-mla`: FlashMLA's `flash_mla_with_kvcache` on tensors read
//! from `.npy` files (`--input q=q.npy --input k_cache=kv.npy --input
//! block_table=bt.npy --input cache_seqlens=lens.npy`; `q` is
//! `[B, s_q, H, 576]`, causal among the `s_q` new tokens), through
//! [`crate::flash_mla`]: the scheduler's plan (`--explain-schedule` prints
//! it, `-D SPLITS=n` overrides it, `-D scale=x` sets the softmax scale), one
//! launch, `--check` against float64, `--output-dir` writes `out.npy` and
//! `lse.npy`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::driver::CompileOptions;
use crate::flash_mla::{FlashMlaPlan, PlanRequest, flash_mla_with_kvcache};
use crate::ir::DType;
use crate::run::compare::{Tolerance, compare, compare_magnitudes};
use crate::run::exec::RunConfig;
use crate::run::reference_kind::{ReferenceKind, expected};
use crate::run::{HostData, HostTensor, npy};

/// Arguments of `amlac flash-mla`.
#[derive(Debug, Args)]
pub struct FlashMlaArgs {
    /// An input (`q`, `k_cache`, `block_table`, `cache_seqlens`) from a `.npy` file.
    #[arg(long, value_name = "NAME=FILE", value_parser = super::parse_define)]
    pub input: Vec<(String, String)>,
    /// `-D SPLITS=n` forces n KV splits; `-D scale=x` sets the softmax scale.
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
    /// Print the scheduler's split plan and why.
    #[arg(long)]
    pub explain_schedule: bool,
    /// Compare `out` and `lse` with float64; exit 1 if they differ.
    #[arg(long)]
    pub check: bool,
    /// Write out.npy and lse.npy to DIR.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Emulated AI cores (default: the machine's CPUs).
    #[arg(long)]
    pub cores: Option<usize>,
}

/// The shape of a `.npy` file, read from its header.
fn npy_shape(path: &Path) -> Result<Vec<usize>, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    let n = npyz::NpyFile::new(std::io::BufReader::new(f))
        .map_err(|e| format!("`{}` is not a .npy file: {e}", path.display()))?;
    Ok(n.shape().iter().map(|&d| d as usize).collect())
}

fn load(args: &FlashMlaArgs, name: &str, dtype: DType) -> Result<HostTensor, String> {
    let path = args
        .input
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| Path::new(p))
        .ok_or_else(|| format!("missing `--input {name}=FILE.npy`"))?;
    npy::read(path, name, dtype, &npy_shape(path)?)
}

fn go(args: &FlashMlaArgs) -> Result<bool, String> {
    const NAMES: [&str; 4] = ["q", "k_cache", "block_table", "cache_seqlens"];
    if let Some((n, _)) = args
        .input
        .iter()
        .find(|(n, _)| !NAMES.contains(&n.as_str()))
    {
        return Err(format!(
            "`--input {n}`: the inputs are {}",
            NAMES.join(", ")
        ));
    }
    let mut splits = None;
    let mut scale = None;
    for (n, v) in &args.defines {
        match n.as_str() {
            "SPLITS" => {
                splits = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| format!("-D SPLITS={v}: not a positive integer"))?,
                )
            }
            "scale" => {
                scale = Some(
                    v.parse::<f64>()
                        .map_err(|_| format!("-D scale={v}: not a number"))?,
                )
            }
            _ => return Err(format!("-D {n}: flash-mla takes SPLITS and scale")),
        }
    }
    let q = load(args, "q", DType::Bf16)?;
    let kv = load(args, "k_cache", DType::Bf16)?;
    let bt = load(args, "block_table", DType::I32)?;
    let lens = load(args, "cache_seqlens", DType::I32)?;
    let (HostData::I32(l), [_, maxb]) = (&lens.data, bt.shape.as_slice()) else {
        return Err(format!(
            "block_table has shape {:?}, expected [B, MAXB]",
            bt.shape
        ));
    };
    let (sq, h, page, nb) = match (q.shape.as_slice(), kv.shape.as_slice()) {
        ([_, sq, h, 576], [nb, p, 1, 576] | [nb, p, 576]) => (*sq, *h, *p, *nb),
        _ => {
            return Err(format!(
                "q {:?} and k_cache {:?}: expected [B, s_q, H, 576] and [NB, PAGE, 1, 576]",
                q.shape, kv.shape
            ));
        }
    };
    let cores = args
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let plan = FlashMlaPlan::new(&PlanRequest {
        heads: h,
        q_tokens: sq,
        page,
        pool_pages: nb,
        max_pages: *maxb,
        cache_seqlens: l.clone(),
        num_splits: splits,
        softmax_scale: scale,
        compile: CompileOptions::new()?,
        run: RunConfig {
            cores,
            wait_timeout: Duration::from_secs(60),
            ..RunConfig::default()
        },
    })?;
    if args.explain_schedule {
        println!("{}", plan.metadata);
    }
    let (out, lse) = flash_mla_with_kvcache(
        &q,
        &kv,
        &bt,
        &lens,
        512,
        &plan,
        plan.metadata.splits,
        None,
        true,
    )?;
    println!("out {:?} bf16, lse {:?} f32", out.shape, lse.shape);
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        npy::write(&dir.join("out.npy"), &out, npy::Bf16Npy::default())?;
        npy::write(&dir.join("lse.npy"), &lse, npy::Bf16Npy::default())?;
    }
    if !args.check {
        return Ok(true);
    }
    let b = q.shape[0];
    let inputs = [
        HostTensor {
            name: "q".into(),
            shape: vec![b, sq, h, 576],
            data: q.data,
        },
        HostTensor {
            name: "kv".into(),
            shape: vec![nb, page, 576],
            data: kv.data,
        },
        HostTensor {
            name: "block_table".into(),
            ..bt
        },
        HostTensor {
            name: "cache_seqlens".into(),
            ..lens
        },
    ];
    let want = expected(ReferenceKind::MlaPaged, &inputs, plan.softmax_scale, 512)?;
    let mut ok = true;
    for (t, w, mag) in [(&out, &want.out, &want.mag), (&lse, &want.lse, &Vec::new())] {
        let tolerance = Tolerance::for_dtype(t.data.dtype());
        let c = if mag.is_empty() {
            compare(&t.name, &t.data.to_f64(), w, tolerance)
        } else {
            compare_magnitudes(&t.name, &t.data.to_f64(), w, mag, tolerance)
        };
        println!(
            "  {}  max abs err {:.3e}  {}",
            t.name,
            c.max_abs_err,
            if c.passed { "ok" } else { "FAILED" }
        );
        ok &= c.passed;
    }
    Ok(ok)
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &FlashMlaArgs) -> u8 {
    match go(args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
