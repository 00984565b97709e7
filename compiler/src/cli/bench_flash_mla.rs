//! `amlac bench --flash-mla -D B=1 -D N=16384`: the FlashMLA-shaped plan
//! ([`crate::flash_mla`]) benchmarked as one unit of work. The scheduler
//! plans `B` sequences of `N` tokens over pages of `PAGE` tokens (default
//! 128), the plan is printed, and every timed launch runs every
//! kernel of the plan (split-KV: `mla_decode_split` then `mla_combine`;
//! one split: `mla_decode_paged`). FLOPs are the MLA formula of `amlac
//! bench`, `2·B·H·N·(576+512)`, so GFLOP/s compare with
//! `amlac bench dsl-examples/mla_decode.amla` at any shape.
//!
//! Takes `-D B`, `-D N` (required), `-D H` (default 128), `-D PAGE`
//! (default 128, the dense kernel's KV block; FlashMLA's pages are 64),
//! `-D SPLITS` (override the scheduler); other `-D` go to the compiler.
//!
//! `--against B=16,N=4096` also times the dense `mla_decode.amla` at that
//! shape (same H), one launch before every timed plan launch, so both see
//! the same machine load, and prints the ratio of the GFLOP/s medians.

use std::fmt::Write as _;

use amla_runtime::matmul::MatmulPath;
use amla_runtime::peak::probe_peak;

use super::bench::{BenchArgs, request};
use crate::check::Defines;
use crate::flash_mla::{PlanBench, bench_plan};
use crate::run::bench::{Spread, median};

/// The `-D` names the plan takes (the rest go to the compiler).
const PLAN_DIMS: [&str; 5] = ["B", "N", "H", "PAGE", "SPLITS"];

fn dim(args: &BenchArgs, name: &str, default: Option<usize>) -> Result<usize, String> {
    match args.defines.iter().rev().find(|(n, _)| n == name) {
        Some((_, v)) => v
            .parse::<usize>()
            .ok()
            .filter(|&x| x > 0)
            .ok_or_else(|| format!("-D {name}={v}: not a positive integer")),
        None => default.ok_or_else(|| format!("--flash-mla needs -D {name}=…")),
    }
}

fn go(args: &BenchArgs) -> Result<String, String> {
    let mut req = request(args)?;
    req.compile.defines = args
        .defines
        .iter()
        .filter(|(n, _)| !PLAN_DIMS.contains(&n.as_str()))
        .cloned()
        .collect::<Defines>();
    let (batch, seqlen) = (dim(args, "B", None)?, dim(args, "N", None)?);
    let heads = dim(args, "H", Some(128))?;
    let page = dim(args, "PAGE", Some(128))?;
    let splits = match args.defines.iter().any(|(n, _)| n == "SPLITS") {
        true => Some(dim(args, "SPLITS", None)?),
        false => None,
    };
    let b = PlanBench {
        batch,
        seqlen,
        heads,
        page,
        num_splits: splits,
        warmup: req.warmup,
        launches: req.launches,
        compile: req.compile.clone(),
        run: req.run.clone(),
    };
    let path = req.run.resolved_matmul_path();
    let probe = |ms| {
        let d = std::time::Duration::from_millis(ms);
        probe_peak(path, None, d, 1).or_else(|| probe_peak(MatmulPath::Scalar, None, d, 1))
    };
    let dense = match &args.against {
        Some(shape) => Some(Dense::new(shape, heads, &req)?),
        None => None,
    };
    let mut peaks = Vec::new();
    let mut dense_s = Vec::new();
    let mut dense_err = None;
    let t = bench_plan(&b, &mut || {
        if let Some(d) = &dense {
            match d.launch() {
                Ok(s) => dense_s.push(s),
                Err(e) => dense_err = Some(e),
            }
        }
        if let Some(p) = probe(args.peak_ms) {
            peaks.push(p.flops_per_s);
        }
    })?;
    if let Some(e) = dense_err {
        return Err(format!("--against: {e}"));
    }
    let against = dense.as_ref().map(|d| {
        let s = Spread::of(&dense_s);
        let g = d.flops / (s.median_ms / 1e3) / 1e9;
        (d.label.clone(), s, g)
    });
    let flops = 2.0 * (batch * heads * seqlen) as f64 * (576.0 + 512.0);
    let plan = Spread::of(&t.plan_s);
    let gflops = flops / (plan.median_ms / 1e3) / 1e9;
    let ratios: Vec<f64> = t
        .plan_s
        .iter()
        .zip(&peaks)
        .map(|(s, p)| flops / s / p)
        .collect();
    let fu = median(&ratios);
    let per_kernel: Vec<Spread> = (0..t.kernels.len())
        .map(|k| Spread::of(&t.kernel_s.iter().map(|v| v[k]).collect::<Vec<_>>()))
        .collect();
    if args.json {
        let kernels: Vec<_> = t
            .kernels
            .iter()
            .zip(&per_kernel)
            .map(|((n, items), s)| serde_json::json!({"kernel": n, "work_items": items, "time": s}))
            .collect();
        let j = serde_json::json!({
            "flash_mla": true, "B": batch, "N": seqlen, "H": heads, "PAGE": page,
            "splits": t.splits, "chunk_pages": t.chunk_pages, "why": t.why,
            "cores": b.run.cores, "kernels": kernels, "plan_time": plan,
            "flops": flops, "flops_source": "mla formula 2*B*Sq*H*N*(Dk+Dv)",
            "gflops": gflops, "peak_gflops": median(&peaks) / 1e9, "fu": fu,
            "against": against.as_ref().map(|(l, s, g)| serde_json::json!({
                "kernel": l, "time": s, "gflops": g, "ratio": gflops / g,
            })),
        });
        return Ok(format!("{j}\n"));
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "flash-mla plan: B={batch} N={seqlen} H={heads} PAGE={page} on {} emulated core(s)",
        b.run.cores
    );
    let _ = writeln!(
        o,
        "split-KV plan: {} split(s) of {} page(s) per sequence\n  {}",
        t.splits, t.chunk_pages, t.why
    );
    for ((n, items), s) in t.kernels.iter().zip(&per_kernel) {
        let _ = writeln!(
            o,
            "  {n:<17} {items:>5} work items: median {:.3} ms (min {:.3}, max {:.3})",
            s.median_ms, s.min_ms, s.max_ms
        );
    }
    let _ = writeln!(
        o,
        "plan: median {:.3} ms (p10 {:.3}, p90 {:.3}) over {} launches",
        plan.median_ms, plan.p10_ms, plan.p90_ms, plan.n
    );
    let _ = writeln!(
        o,
        "FLOPs {flops:.4e} (mla formula 2*B*Sq*H*N*(Dk+Dv)); {gflops:.1} GFLOP/s"
    );
    let _ = writeln!(
        o,
        "peak ({}): median {:.1} GFLOP/s; fu {fu:.3}",
        path.name(),
        median(&peaks) / 1e9
    );
    if let Some((l, s, g)) = &against {
        let _ = writeln!(
            o,
            "against {l}: median {:.3} ms, {g:.1} GFLOP/s (launches alternated with the plan's)\nratio (plan GFLOP/s / {l} GFLOP/s): {:.3}",
            s.median_ms,
            gflops / g
        );
    }
    Ok(o)
}

/// The dense kernel of `--against`, compiled and laid out once.
struct Dense {
    label: String,
    exe: crate::run::exec::Executable,
    prepared: std::cell::RefCell<crate::run::exec::Prepared>,
    flops: f64,
}

impl Dense {
    fn new(
        shape: &str,
        heads: usize,
        req: &crate::run::bench::BenchRequest,
    ) -> Result<Dense, String> {
        let mut compile = req.compile.clone();
        let (mut bb, mut nn) = (None, None);
        for part in shape.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("--against {shape}: expected B=..,N=.."))?;
            let v: usize = v
                .trim()
                .parse()
                .ok()
                .filter(|&x| x > 0)
                .ok_or_else(|| format!("--against {shape}: `{v}` is not a positive integer"))?;
            match k.trim() {
                "B" => bb = Some(v),
                "N" => nn = Some(v),
                other => return Err(format!("--against {shape}: `{other}` is not B or N")),
            }
        }
        let (Some(bb), Some(nn)) = (bb, nn) else {
            return Err(format!("--against {shape}: give both B and N"));
        };
        for (k, v) in [("B", bb), ("N", nn), ("H", heads)] {
            compile.defines.insert(k, v.to_string());
        }
        let src = crate::diag::SourceFile::new(
            "dsl-examples/mla_decode.amla".to_string(),
            super::simulate::MLA_DECODE.to_string(),
        );
        let c = crate::driver::compile(&src, &compile).map_err(|e| e.to_string())?;
        let exe =
            crate::run::exec::Executable::new(&c, &compile.target).map_err(|e| e.to_string())?;
        let specs = exe.input_specs().map_err(|e| e.to_string())?;
        let inputs = crate::run::inputs::generate_all(
            &specs,
            &crate::run::inputs::InputOptions::default(),
            |_| None,
        )?;
        let mut p = exe.prepare(&inputs, &req.run).map_err(|e| e.to_string())?;
        exe.launch(&mut p).map_err(|e| e.to_string())?;
        Ok(Dense {
            label: format!("mla_decode B={bb} N={nn} H={heads}"),
            exe,
            prepared: std::cell::RefCell::new(p),
            flops: 2.0 * (bb * heads * nn) as f64 * (576.0 + 512.0),
        })
    }

    /// One timed launch, seconds.
    fn launch(&self) -> Result<f64, String> {
        let mut p = self.prepared.borrow_mut();
        let t = std::time::Instant::now();
        self.exe.launch(&mut p).map_err(|e| e.to_string())?;
        Ok(t.elapsed().as_secs_f64())
    }
}

/// Runs `amlac bench --flash-mla`; returns the exit code.
pub fn run(args: &BenchArgs) -> u8 {
    match go(args) {
        Ok(text) => {
            if super::print_stdout(&text) {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
