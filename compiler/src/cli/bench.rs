//! `amlac bench FILE [-D NAME=VALUE]… [--json]`: compile latency, kernel
//! time, GFLOP/s and FLOPS utilisation against the machine's own peak,
//! per-unit figures and memory, all measured in this one process (see
//! [`crate::run::bench`] for the method).
//!
//! `amlac bench --flash-mla -D B=… -D N=… [-D H=…] [-D PAGE=…] [-D SPLITS=…]`
//! benchmarks the FlashMLA-shaped plan instead ([`bench_flash_mla`]): the
//! split-KV scheduler's plan (printed), then the whole plan (split kernel and
//! LSE combine, or the paged kernel alone) per launch, with the MLA FLOP
//! formula.
//!
//! Exit codes: 0 measured; 1 the kernel did not compile or run; 2 usage errors.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::check::Defines;
use crate::driver::CompileOptions;
use crate::run::bench::{BenchFailure, BenchReport, BenchRequest, UnitFigures, bench_source};
use crate::target::Target;

/// Arguments of `amlac bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The `.amla` file (not with `--flash-mla`).
    #[arg(required_unless_present = "flash_mla", conflicts_with = "flash_mla")]
    pub file: Option<PathBuf>,
    /// Benchmark the FlashMLA-shaped plan (split-KV kernel + combine, or the
    /// paged kernel) for `-D B`, `-D N` (`-D H`, `-D PAGE`, `-D SPLITS`).
    #[arg(long)]
    pub flash_mla: bool,
    /// With `--flash-mla`: also time the dense `mla_decode.amla` at this
    /// shape (`B=16,N=4096`), one launch before each plan launch, and print
    /// the ratio of the two GFLOP/s medians.
    #[arg(long, value_name = "B=..,N=..", requires = "flash_mla")]
    pub against: Option<String>,
    /// Bind a dim or const (`-D N=4096`), or set a compiler option (`-D PRELOAD=2`).
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Emulated AI cores (default: the machine's CPUs).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Unit threads that may run at once (default: the machine's CPUs; 0: no limit).
    #[arg(long)]
    pub host_cpus: Option<usize>,
    /// Atomic GM accesses everywhere instead of plain ones (slow; for comparison).
    #[arg(long)]
    pub atomic_gm: bool,
    /// How units map onto host threads: `auto` (cooperative when cores >=
    /// host CPUs), `cooperative` (a core's units as coroutines on one
    /// persistent thread), `threads` (one thread per unit).
    #[arg(long, value_name = "SCHEDULE", default_value = "auto")]
    pub schedule: String,
    /// Force a matmul path (`avx512bf16`, `avx2fma`, `scalar`) instead of
    /// the fastest this CPU has; the peak is then that path's.
    #[arg(long, value_name = "PATH")]
    pub matmul_path: Option<String>,
    /// Timed launches.
    #[arg(long, default_value_t = 10)]
    pub launches: usize,
    /// Untimed warm-up launches.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Source → JIT-ready compiles to time.
    #[arg(long, default_value_t = 15)]
    pub compile_repeats: usize,
    /// Time every pass of the pipeline too.
    #[arg(long)]
    pub time_passes: bool,
    /// Milliseconds of each peak sample (one before each timed launch).
    #[arg(long, default_value_t = 20)]
    pub peak_ms: u64,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip a pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub disable_pass: Vec<String>,
    /// Target description: a built-in name or a `.toml` path.
    #[arg(long, default_value = "ascend910b")]
    pub target: String,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &BenchArgs) -> u8 {
    let Some(file) = &args.file else {
        return super::bench_flash_mla::run(args);
    };
    let src = match super::read_source(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let req = match request(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let report = match bench_source(&src, &req, &mut |_| {}) {
        Ok(r) => r,
        Err(BenchFailure::Compile(e)) => return super::compile::report_error(&src, e),
        Err(BenchFailure::Run(m)) => {
            eprintln!("error: {}: {m}", src.name);
            return 1;
        }
    };
    let text = if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => format!("{s}\n"),
            Err(e) => {
                eprintln!("error: cannot serialise the report: {e}");
                return 1;
            }
        }
    } else {
        human(&report)
    };
    if super::print_stdout(&text) { 0 } else { 1 }
}

pub(super) fn request(args: &BenchArgs) -> Result<BenchRequest, String> {
    let mut compile = CompileOptions::new()?;
    compile.target =
        Target::load(&args.target).map_err(|e| format!("target `{}`: {e}", args.target))?;
    compile.defines = args.defines.iter().cloned().collect::<Defines>();
    compile.pipeline.disabled = args.disable_pass.clone();
    let mut req = BenchRequest::new(compile);
    if let Some(c) = args.cores {
        if c == 0 {
            return Err("--cores 0: need at least one core".into());
        }
        req.run.cores = c;
    }
    if let Some(n) = args.host_cpus {
        req.run.host_cpus = (n > 0).then_some(n);
    }
    if args.atomic_gm {
        req.run.gm_access = amla_runtime::gm::GmAccess::Atomic;
    }
    req.run.schedule = match args.schedule.as_str() {
        "auto" => amla_runtime::Schedule::Auto,
        "cooperative" => amla_runtime::Schedule::Cooperative,
        "threads" => amla_runtime::Schedule::Threads,
        other => {
            return Err(format!(
                "--schedule {other}: expected auto, cooperative or threads"
            ));
        }
    };
    if let Some(name) = &args.matmul_path {
        use amla_runtime::matmul::MatmulPath;
        let path = MatmulPath::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                format!("--matmul-path {name}: expected avx512bf16, avx2fma or scalar")
            })?;
        if !path.is_supported() {
            return Err(format!(
                "--matmul-path {name}: this CPU does not support it (it has: {})",
                amla_runtime::matmul::available_paths()
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        req.run.matmul_path = Some(path);
    }
    if args.launches == 0 {
        return Err("--launches 0: need at least one timed launch".into());
    }
    if args.compile_repeats == 0 {
        return Err("--compile-repeats 0: need at least one compile".into());
    }
    if args.peak_ms == 0 || args.peak_ms > 10_000 {
        return Err(format!(
            "--peak-ms {}: expected 1 to 10000 milliseconds",
            args.peak_ms
        ));
    }
    req.launches = args.launches;
    req.warmup = args.warmup;
    req.compile_repeats = args.compile_repeats;
    req.time_passes = args.time_passes;
    req.peak_sample = Duration::from_millis(args.peak_ms);
    req.seed = args.seed;
    Ok(req)
}

fn units(o: &mut String, name: &str, u: &UnitFigures) {
    let _ = writeln!(
        o,
        "  {name:<6} ×{}: busy {:>5.1}%  flag wait {:>5.1}% ({:.3} ms)",
        u.units,
        u.busy * 100.0,
        u.flag_wait * 100.0,
        u.flag_wait_ms
    );
    for p in &u.pipes {
        let _ = writeln!(
            o,
            "    {:<10} {:>8} calls {:>14} bytes {:>10.3} ms {:>6.1}%",
            p.pipe,
            p.calls,
            p.bytes,
            p.busy_ms,
            p.fraction * 100.0
        );
    }
}

fn human(r: &BenchReport) -> String {
    let mut o = String::new();
    let dims: Vec<String> = r.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let _ = writeln!(
        o,
        "{}: {} on {} emulated core(s), {} work items, matmul path {}",
        r.kernel,
        dims.join(" "),
        r.cores,
        r.work_items,
        r.matmul_path
    );
    let c = &r.compile;
    let _ = writeln!(
        o,
        "compile (source -> JIT-ready): median {:.3} ms [{:.3} .. {:.3}] over {} (front end + passes {:.3} ms, JIT {:.3} ms)",
        c.total.median_ms,
        c.total.min_ms,
        c.total.max_ms,
        c.total.n,
        c.front_and_passes.median_ms,
        c.jit.median_ms
    );
    if let Some(cpu) = &c.total_cpu {
        let _ = writeln!(
            o,
            "  CPU time (all threads): median {:.3} ms [{:.3} .. {:.3}]",
            cpu.median_ms, cpu.min_ms, cpu.max_ms
        );
    }
    for (p, ms) in &c.passes_ms {
        let _ = writeln!(o, "  {ms:>9.3} ms  {p}");
    }
    let k = &r.kernel_time;
    let _ = writeln!(
        o,
        "kernel: median {:.3} ms (p10 {:.3}, p90 {:.3}, min {:.3}, max {:.3}) over {} launches",
        k.median_ms, k.p10_ms, k.p90_ms, k.min_ms, k.max_ms, k.n
    );
    let _ = writeln!(
        o,
        "FLOPs {:.4e} ({}); {:.1} GFLOP/s",
        r.flops, r.flops_source, r.gflops
    );
    let _ = writeln!(
        o,
        "peak ({} `{}`, {} threads): median {:.1} GFLOP/s ({:.1} on one thread)",
        r.peak.path, r.peak.instruction, r.peak.threads, r.peak.gflops, r.peak.gflops_one_thread
    );
    let _ = writeln!(o, "fu {:.3}", r.fu);
    if let (Some(k), Some(fc), Some(pc)) = (&r.kernel_cpu, r.fu_cpu, r.peak_cpu_gflops) {
        let _ = writeln!(
            o,
            "CPU time: median {:.3} ms a launch; fu_cpu {fc:.3} (against {pc:.1} GFLOP per CPU-second on one thread)",
            k.median_ms
        );
    }
    let _ = writeln!(o, "units (median launch):");
    units(&mut o, "cube", &r.cube);
    units(&mut o, "vector", &r.vector);
    let b = &r.bytes;
    let _ = writeln!(
        o,
        "bytes: gm read {}, to gm/l1 {}, l1->l0 {}, l0->cube {}",
        b.gm_read, b.to_gm_or_l1, b.l1_to_l0, b.l0_to_cube
    );
    let _ = writeln!(
        o,
        "peak RSS {}; allocations per launch after warm-up: {}",
        r.peak_rss_bytes.map_or("unknown".into(), |b| format!(
            "{:.1} MiB",
            b as f64 / 1048576.0
        )),
        r.allocs_per_launch
            .map_or("not counted".into(), |a| a.to_string())
    );
    o
}
