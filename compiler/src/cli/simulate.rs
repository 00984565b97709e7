//! `amlac simulate FILE [-D NAME=VALUE]… [--target T]`: compile, then predict
//! the kernel's time on the target with the cost model
//! ([`crate::simulate`]): time, TFLOPS, FU, the bound pipe, the busy
//! fraction of every pipe and the bytes of every path. `--json` prints the
//! same as JSON; `--trace FILE.json` writes a Chrome trace (Perfetto) and
//! `--svg FILE.svg` a timeline of the first `--blocks` blocks of core 0.
//!
//! `--ablation` prints the table of the AMLA paper's ablation for MLA
//! decode instead (see `docs/SIMULATION.md`); `--probe-host` measures this
//! machine and prints a `host` target file; `--calibrate` compares the host
//! target's predictions with `amlac run` times.

use std::path::PathBuf;

use clap::Args;

use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::{self, CompileOptions};
use crate::simulate::{self, Report, SimConfig};
use crate::target::Target;

mod ablation;
mod calibrate;

/// Arguments of `amlac simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The `.amla` file (MLA decode for `--ablation`, `--probe-host` and
    /// `--calibrate` when not given).
    pub file: Option<PathBuf>,
    /// Bind a dim or const (`-D N=4096`), or set a compiler option
    /// (`-D PRELOAD=0`).
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
    /// Target description: a built-in name (`ascend910b`, `ascend910c`,
    /// `host`) or a `.toml` path.
    #[arg(long, default_value = "ascend910b")]
    pub target: String,
    /// Skip PASS (repeatable), e.g. `--disable-pass mul-to-add`.
    #[arg(long, value_name = "PASS")]
    pub disable_pass: Vec<String>,
    /// Print the prediction as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write a Chrome trace (Perfetto) of the first blocks to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write an SVG timeline of the first blocks to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Blocks (grid items) of core 0 kept for `--trace` and `--svg`.
    #[arg(long, default_value_t = 2)]
    pub blocks: u32,
    /// Value assumed for every i32 scalar the kernel reads from GM
    /// (sequence lengths, page numbers).
    #[arg(long, default_value_t = 0)]
    pub gm_scalar: i64,
    /// What-if: read every GM→L1 load as double-buffered (two L1 slots in
    /// turn) where L1 has room, although `plan-memory` gave it one.
    #[arg(long)]
    pub double_buffer_l1: bool,
    /// Cores of the launch (default: the target's AI cores; on `--target
    /// host`, what `amlac run --cores` is given, which decides the
    /// runtime's schedule).
    #[arg(long)]
    pub cores: Option<u32>,
    /// Print the paper's ablation table for MLA decode.
    #[arg(long, conflicts_with_all = ["probe_host", "calibrate"])]
    pub ablation: bool,
    /// Measure this machine and print a `host` target file.
    #[arg(long, conflicts_with = "calibrate")]
    pub probe_host: bool,
    /// Compare host-target predictions with measured `amlac run` times.
    #[arg(long)]
    pub calibrate: bool,
}

/// The MLA decode example, the default kernel of the table commands.
pub(crate) const MLA_DECODE: &str = include_str!("../../../dsl-examples/mla_decode.amla");

/// Runs the subcommand; returns the exit code.
pub fn run(args: &SimulateArgs) -> u8 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn read_source(args: &SimulateArgs) -> Result<SourceFile, String> {
    match &args.file {
        Some(f) => super::read_source(f),
        None => Ok(SourceFile::new(
            "dsl-examples/mla_decode.amla".to_string(),
            MLA_DECODE.to_string(),
        )),
    }
}

fn run_inner(args: &SimulateArgs) -> Result<(), String> {
    let src = read_source(args)?;
    let target =
        Target::load(&args.target).map_err(|e| format!("target `{}`: {e}", args.target))?;
    if args.ablation {
        return print(&ablation::table(&src, &args.defines, &target, args.json)?);
    }
    if args.probe_host {
        return print(&calibrate::probe_host(&src)?);
    }
    if args.calibrate {
        return print(&calibrate::calibrate(&src, &target, args.json)?);
    }
    if args.file.is_none() {
        return Err("give the `.amla` file to simulate".into());
    }
    let cfg = SimConfig {
        gm_scalar: args.gm_scalar,
        trace_items: if args.trace.is_some() || args.svg.is_some() {
            args.blocks
        } else {
            0
        },
        double_buffer_l1: args.double_buffer_l1,
        cores: args.cores,
    };
    let r = predict(&src, &args.defines, &args.disable_pass, &target, &cfg)?;
    if let Some(p) = &args.trace {
        std::fs::write(p, simulate::output::chrome_trace(&r))
            .map_err(|e| format!("cannot write `{}`: {e}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, simulate::output::svg(&r))
            .map_err(|e| format!("cannot write `{}`: {e}", p.display()))?;
    }
    if args.json {
        print(&format!("{}\n", json(&r)))
    } else {
        print(&human(&r))
    }
}

fn print(s: &str) -> Result<(), String> {
    if super::print_stdout(s) {
        Ok(())
    } else {
        Err("cannot write the output".into())
    }
}

/// Compiles `src` with `defines` (without the `disabled` passes) for
/// `target` and simulates it.
pub(crate) fn predict(
    src: &SourceFile,
    defines: &[(String, String)],
    disabled: &[String],
    target: &Target,
    cfg: &SimConfig,
) -> Result<Report, String> {
    let mut opts = CompileOptions::new()?;
    opts.target = target.clone();
    opts.defines = defines.iter().cloned().collect::<Defines>();
    opts.pipeline.disabled = disabled.to_vec();
    let c = driver::compile(src, &opts).map_err(|e| match e {
        driver::CompileError::Diagnostics(d) => {
            crate::diag::emit_stderr(src, &d);
            format!("{} has errors", src.name)
        }
        e => e.to_string(),
    })?;
    simulate::simulate(&c.ir, target, cfg).map_err(|e| e.to_string())
}

fn human(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} on {} (model prediction): {} block(s) on {} core(s), {} per core, rows split over {} Vector unit(s)",
        r.kernel, r.target, r.items, r.cores, r.core_items, r.vector_units
    );
    if let Some(s) = r.host_schedule {
        let _ = writeln!(o, "host runtime schedule: {s}");
    }
    let _ = writeln!(
        o,
        "time {:.3} µs   {:.1} TFLOPS   FU {:.1}% of {:.1} TFLOPS   bound by {} {}",
        r.time_ns / 1e3,
        r.flops_per_s / 1e12,
        r.fu * 100.0,
        r.peak_flops_per_s / 1e12,
        r.bound.0.name(),
        r.bound.1.name()
    );
    let _ = writeln!(o, "busy fraction of each pipe (one core):");
    for p in &r.pipes {
        let _ = writeln!(
            o,
            "  {} {:<7} {:>6.1}%  {:>10.3} µs",
            p.side.name(),
            p.pipe.name(),
            p.fraction * 100.0,
            p.busy_ns / 1e3
        );
    }
    let _ = writeln!(o, "bytes per path (whole launch):");
    for (path, b) in &r.bytes {
        let _ = writeln!(o, "  {path:<28} {:>10.3} MiB", *b as f64 / (1 << 20) as f64);
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// The prediction as JSON.
pub(crate) fn json(r: &Report) -> serde_json::Value {
    let pipes: Vec<serde_json::Value> = r
        .pipes
        .iter()
        .map(|p| {
            serde_json::json!({
                "unit": p.side.name(), "pipe": p.pipe.name(),
                "busy_us": p.busy_ns / 1e3, "busy_fraction": p.fraction,
            })
        })
        .collect();
    serde_json::json!({
        "kernel": r.kernel,
        "target": r.target,
        "model": "prediction of amlac simulate (see docs/SIMULATION.md)",
        "blocks": r.items,
        "cores": r.cores,
        "blocks_per_core": r.core_items,
        "vector_units_per_core": r.vector_units,
        "time_us": r.time_ns / 1e3,
        "flops": r.flops,
        "tflops": r.flops_per_s / 1e12,
        "peak_tflops": r.peak_flops_per_s / 1e12,
        "fu": r.fu,
        "bound": { "unit": r.bound.0.name(), "pipe": r.bound.1.name() },
        "pipes": pipes,
        "bytes": r.bytes,
        "notes": r.notes,
        "host_schedule": r.host_schedule,
    })
}
