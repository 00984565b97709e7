//! `amlac run FILE [-D NAME=VALUE]… [--check] [--json]`: compile, JIT, run
//! on the emulated AI core with seeded random inputs (or given ones:
//! `--input NAME=FILE.npy`, `--inputs FILE.safetensors`), optionally write
//! the outputs (`--output-dir DIR` as `.npy`, `--save FILE.safetensors`) and
//! check them (`--check`) against the float64 interpreter of the kernel and,
//! when the file names one in a `// @reference:` line, the attention
//! reference too.
//!
//! Given inputs are all-or-nothing: when some are given, a missing one is
//! an error unless `--fill-missing` asks for seeded random data.
//!
//! Exit codes: 0 the run succeeded (and, with `--check`, passed); 1 the
//! kernel did not compile or run, or the check failed; 2 usage errors.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::progress::Progress;
use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::CompileOptions;
use crate::run::compare::describe;
use crate::run::exec::RunConfig;
use crate::run::inputs::InputOptions;
use crate::run::session::{Oracle, RunFailure, RunRequest, RunSummary, run_source};
use crate::run::{HostTensor, files, npy, safetensors, validate};
use crate::target::Target;

/// Arguments of `amlac run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The `.amla` file.
    pub file: PathBuf,
    /// Bind a dim or const (`-D N=1000`), or set a compiler option (`-D PRELOAD=2`).
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
    /// Check the outputs against the float64 interpreter of the kernel (and its
    /// `@reference`, if it names one); exit 1 if they differ.
    #[arg(long)]
    pub check: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Read an input from a file (repeatable): `--input q=q.npy`, or the
    /// tensor `q` of a safetensors file: `--input q=x.safetensors`.
    #[arg(long, value_name = "NAME=FILE", value_parser = super::parse_define)]
    pub input: Vec<(String, String)>,
    /// Read inputs from a safetensors file: each tensor binds the input of
    /// its name (repeatable).
    #[arg(long, value_name = "FILE.safetensors")]
    pub inputs: Vec<PathBuf>,
    /// With some inputs given, draw the missing ones (seeded random) instead
    /// of failing.
    #[arg(long)]
    pub fill_missing: bool,
    /// Write every output to DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// How `--output-dir` writes bf16 outputs: `f32` (exact, plain NumPy) or
    /// `ml-dtypes` (descr `<V2`, `np.load(f).view(ml_dtypes.bfloat16)`).
    #[arg(long, value_enum, default_value_t = Bf16NpyArg::F32)]
    pub bf16_npy: Bf16NpyArg,
    /// Write every output to one safetensors file (bf16 as native BF16).
    #[arg(long, value_name = "FILE.safetensors")]
    pub save: Option<PathBuf>,
    /// Emulated AI cores (default: the machine's CPUs).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Seconds a unit may wait for a flag before the run fails (a wait no
    /// unit can satisfy, its setter finished or every unit blocked, fails at
    /// once).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Checked mode: bounds-check every index and buffer access of the
    /// kernel (JIT and runtime); a violation names the op, unit and index.
    #[arg(long)]
    pub checked: bool,
    /// Race checker: fail on any two GM accesses of different units, one a
    /// write, that no flag orders (slow: use small dims).
    #[arg(long)]
    pub race_check: bool,
    /// Write a Chrome/Perfetto trace of the units to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Skip a pass (repeatable), e.g. `--disable-pass mul-to-add`.
    #[arg(long, value_name = "PASS")]
    pub disable_pass: Vec<String>,
    /// Target description: a built-in name or a `.toml` path.
    #[arg(long, default_value = "ascend910b")]
    pub target: String,
}

/// `--bf16-npy` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bf16NpyArg {
    /// bf16 written as f32.
    F32,
    /// bf16 written as ml_dtypes does (`<V2`).
    MlDtypes,
}

impl From<Bf16NpyArg> for npy::Bf16Npy {
    fn from(a: Bf16NpyArg) -> npy::Bf16Npy {
        match a {
            Bf16NpyArg::F32 => npy::Bf16Npy::F32,
            Bf16NpyArg::MlDtypes => npy::Bf16Npy::MlDtypes,
        }
    }
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &RunArgs) -> u8 {
    let src = match super::read_source(&args.file) {
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
    let progress = Progress::start();
    let mut given = Vec::new();
    // `.npy` inputs need the kernel's input shapes: compile once to learn
    // them is what `run_source` does, so read them lazily through a first
    // pass over the signature.
    if !args.input.is_empty() || !args.inputs.is_empty() {
        match file_inputs(&src, &req, args) {
            Ok(g) => given = g,
            Err(e) => {
                progress.finish();
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    let req = RunRequest { given, ..req };
    let result = run_source(&src, &req, &mut |s| progress.stage(s));
    progress.finish();
    let summary = match result {
        Ok(s) => s,
        Err(RunFailure::Compile(e)) => return super::compile::report_error(&src, e),
        Err(RunFailure::Run(m)) => {
            eprintln!("error: {}: {m}", src.name);
            return 1;
        }
    };
    if let Some(dir) = &args.output_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: cannot create `{}`: {e}", dir.display());
            return 1;
        }
        for o in &summary.output.outputs {
            if let Err(e) = npy::write(
                &dir.join(format!("{}.npy", o.name)),
                o,
                args.bf16_npy.into(),
            ) {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    if let Some(path) = &args.save
        && let Err(e) = safetensors::write(path, &summary.output.outputs)
    {
        eprintln!("error: {e}");
        return 1;
    }
    if let (Some(path), Some(trace)) = (&args.trace, &summary.output.report.trace)
        && let Err(e) = trace.write_chrome_json(path)
    {
        eprintln!("error: cannot write `{}`: {e}", path.display());
        return 1;
    }
    let text = if args.json {
        format!("{}\n", json(&summary, &req))
    } else {
        human(&summary, &req)
    };
    if !super::print_stdout(&text) {
        return 1;
    }
    u8::from(!summary.passed())
}

fn request(args: &RunArgs) -> Result<RunRequest, String> {
    let mut compile = CompileOptions::new()?;
    compile.target =
        Target::load(&args.target).map_err(|e| format!("target `{}`: {e}", args.target))?;
    compile.defines = args.defines.iter().cloned().collect::<Defines>();
    compile.pipeline.disabled = args.disable_pass.clone();
    if !(args.timeout > 0.0 && args.timeout < 1e6) {
        return Err(format!(
            "--timeout {}: expected a positive number of seconds",
            args.timeout
        ));
    }
    if let Some(p) = &args.save
        && !safetensors::is_safetensors(p)
    {
        return Err(format!(
            "--save {}: expected a FILE.safetensors path (use --output-dir DIR for .npy files)",
            p.display()
        ));
    }
    let mut run = RunConfig {
        wait_timeout: Duration::from_secs_f64(args.timeout),
        trace: args.trace.is_some(),
        fill_missing: args.fill_missing,
        checked: args.checked,
        race_check: args.race_check,
        ..RunConfig::default()
    };
    if let Some(c) = args.cores {
        if c == 0 {
            return Err("--cores 0: need at least one core".into());
        }
        run.cores = c;
    }
    Ok(RunRequest {
        compile,
        inputs: InputOptions {
            seed: args.seed,
            ..InputOptions::default()
        },
        given: Vec::new(),
        run,
        check: args.check,
    })
}

/// Reads the `--input` and `--inputs` files, typed and shaped by the
/// kernel's signature (so a file is converted to the dtype of its input).
fn file_inputs(
    src: &SourceFile,
    req: &RunRequest,
    args: &RunArgs,
) -> Result<Vec<HostTensor>, String> {
    let c = crate::driver::compile(src, &req.compile).map_err(|e| e.to_string())?;
    let exe =
        crate::run::exec::Executable::new(&c, &req.compile.target).map_err(|e| e.to_string())?;
    let mut specs = exe.tensor_specs().map_err(|e| e.to_string())?;
    validate::label_from_source(&mut specs, src);
    files::read_inputs(
        &specs,
        &args.input,
        &args.inputs,
        &req.compile.defines,
        &c.ir.name,
    )
}

fn human(s: &RunSummary, req: &RunRequest) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let dims: Vec<String> = s.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let stats = &s.output.report.stats;
    let _ = writeln!(o, "{}: {}", s.kernel, dims.join(" "));
    let _ = writeln!(
        o,
        "ran on {} emulated core(s) in {:.3} ms (compile {:.3} ms, JIT {:.3} ms)",
        req.run.cores,
        s.timings.launch.as_secs_f64() * 1e3,
        s.timings.compile.as_secs_f64() * 1e3,
        s.timings.jit.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        o,
        "cube FLOPs {}",
        stats.total.get(amla_runtime::Pipe::Cube).flops
    );
    if req.run.checked {
        let _ = writeln!(o, "checked: every index and buffer access stayed in bounds");
    }
    if req.run.race_check {
        let _ = writeln!(
            o,
            "race check: every cross-unit GM access pair with a write was ordered by a flag"
        );
    }
    for check in &s.checks {
        let what = match check.oracle {
            Oracle::Interpreter => "the float64 interpreter of the kernel".to_string(),
            Oracle::Reference(k) => format!("the float64 reference `{}`", k.name()),
        };
        let verdict = if check.passed() { "passed" } else { "FAILED" };
        let _ = writeln!(o, "check against {what}: {verdict}");
        for c in &check.comparisons {
            let mag = if c.tolerance.mag > 0.0 {
                format!(" + {:.1e}·mag", c.tolerance.mag)
            } else {
                String::new()
            };
            let mut line = format!(
                "  {:<4} max abs err {:.3e}  max rel err {:.3e}  tolerance {:.1e} + {:.1e}·|ref|{mag}  worst err/tolerance {:.2}  {}",
                c.name,
                c.max_abs_err,
                c.max_rel_err,
                c.tolerance.atol,
                c.tolerance.rtol,
                c.max_ratio,
                if c.passed {
                    "ok".to_string()
                } else {
                    format!("FAILED ({})", describe(c))
                }
            );
            if c.passed && c.nan_in_both > 0 {
                line += &format!(" ({} NaN in both)", c.nan_in_both);
            }
            let _ = writeln!(o, "{line}");
        }
    }
    o
}

fn json(s: &RunSummary, req: &RunRequest) -> String {
    let dims: serde_json::Map<String, serde_json::Value> = s
        .dims
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "kernel": s.kernel,
        "dims": dims,
        "cores": req.run.cores,
        "seed": req.inputs.seed,
        "timings_ms": {
            "compile": s.timings.compile.as_secs_f64() * 1e3,
            "jit": s.timings.jit.as_secs_f64() * 1e3,
            "launch": s.timings.launch.as_secs_f64() * 1e3,
            "reference": s.timings.reference.as_secs_f64() * 1e3,
            "interpreter": s.timings.interpreter.as_secs_f64() * 1e3,
        },
        "reference": s.reference.map(|k| k.name()),
        "checks": s.checks.iter().map(|c| serde_json::json!({
            "oracle": match c.oracle {
                Oracle::Interpreter => "interpreter",
                Oracle::Reference(_) => "reference",
            },
            "kind": match c.oracle {
                Oracle::Interpreter => None,
                Oracle::Reference(k) => Some(k.name()),
            },
            "passed": c.passed(),
            "comparisons": c.comparisons,
        })).collect::<Vec<_>>(),
        "passed": s.passed(),
    })
    .to_string()
}
