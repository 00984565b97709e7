//! One run from source to checked outputs: what `amlac run` does, as a
//! library function tests can call.
//!
//! Compile → JIT → inputs (seeded random, or given) → launch → read outputs
//! → (optionally) check them: always against the float64 interpreter of the
//! kernel ([`crate::interp`]), and also against the attention reference the
//! kernel names in a `// @reference:` line, when it has one. Each oracle is
//! a [`Check`] with its own verdict.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::compare::{Comparison, NanRule, Tolerance, compare, compare_magnitudes, compare_with};
use super::exec::{Executable, RunConfig, RunOutput};
use super::inputs::{InputOptions, generate};
use super::reference_kind::{ReferenceKind, expected};
use super::tensor::HostTensor;
use super::validate;
use crate::diag::SourceFile;
use crate::driver::{self, CompileError, CompileOptions};

/// Everything a run needs besides the source.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Compilation options (`-D`, pipeline, target).
    pub compile: CompileOptions,
    /// How random inputs are drawn.
    pub inputs: InputOptions,
    /// Inputs given by the caller (e.g. from `.npy`); the rest are drawn.
    pub given: Vec<HostTensor>,
    /// Launch settings.
    pub run: RunConfig,
    /// Check the outputs against the float64 oracles.
    pub check: bool,
}

/// An oracle a run is checked against.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Oracle {
    /// The float64 interpreter of the kernel's checked HIR.
    Interpreter,
    /// The attention reference named by the kernel's `// @reference:` line.
    Reference(ReferenceKind),
}

impl Oracle {
    /// `interpreter` or `reference mla`.
    pub fn label(self) -> String {
        match self {
            Oracle::Interpreter => "interpreter".into(),
            Oracle::Reference(k) => format!("reference {}", k.name()),
        }
    }
}

/// The outputs compared with one oracle.
#[derive(Clone, Debug)]
pub struct Check {
    /// Which oracle.
    pub oracle: Oracle,
    /// One comparison per output the oracle computes.
    pub comparisons: Vec<Comparison>,
}

impl Check {
    /// Every comparison passed.
    pub fn passed(&self) -> bool {
        self.comparisons.iter().all(|c| c.passed)
    }
}

/// The tolerance of an output of `dtype` against the interpreter (why:
/// the module doc of `run/compare.rs`).
pub fn interpreter_tolerance(dtype: crate::ir::DType) -> Tolerance {
    match dtype {
        crate::ir::DType::I32 => Tolerance {
            atol: 0.0,
            rtol: 0.0,
            mag: 0.0,
        },
        crate::ir::DType::F32 => Tolerance::for_dtype(dtype),
        _ => Tolerance {
            atol: 2f64.powi(-7),
            rtol: 2f64.powi(-7),
            mag: 0.0,
        },
    }
}

/// Where the time of a run went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Front end and passes.
    pub compile: Duration,
    /// Cranelift JIT.
    pub jit: Duration,
    /// The launch (all work items).
    pub launch: Duration,
    /// The float64 attention reference.
    pub reference: Duration,
    /// The float64 interpreter.
    pub interpreter: Duration,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunSummary {
    /// Kernel name.
    pub kernel: String,
    /// Every dim and its value.
    pub dims: Vec<(String, i64)>,
    /// The inputs used.
    pub inputs: Vec<HostTensor>,
    /// The launch's outputs and statistics.
    pub output: RunOutput,
    /// The `@reference` kind of the kernel, when checked and it names one.
    pub reference: Option<ReferenceKind>,
    /// One check per oracle (the interpreter first), when checked.
    pub checks: Vec<Check>,
    /// Where the time went.
    pub timings: Timings,
}

impl RunSummary {
    /// True when every check passed (vacuously without `--check`).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The check against `oracle`, if it ran.
    pub fn check(&self, oracle: Oracle) -> Option<&Check> {
        self.checks.iter().find(|c| c.oracle == oracle)
    }
}

/// Why a run did not produce outputs.
#[derive(Debug)]
pub enum RunFailure {
    /// The kernel did not compile.
    Compile(CompileError),
    /// Anything after compilation (JIT, inputs, launch, reference).
    Run(String),
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailure::Compile(e) => write!(f, "{e}"),
            RunFailure::Run(m) => f.write_str(m),
        }
    }
}

/// Runs `src` as `req` says; `stage` is told what is happening (for a
/// progress display).
pub fn run_source(
    src: &SourceFile,
    req: &RunRequest,
    stage: &mut dyn FnMut(&str),
) -> Result<RunSummary, RunFailure> {
    let mut timings = Timings::default();
    stage("compiling");
    let t = Instant::now();
    let c = driver::compile(src, &req.compile).map_err(RunFailure::Compile)?;
    timings.compile = t.elapsed();
    // Resolve the reference before running, so a bad directive fails fast.
    // The reference kind also says what the integer inputs mean, which the
    // input checks use even without `--check`.
    let kind = ReferenceKind::from_source(&src.text).map_err(RunFailure::Run)?;
    let reference = if req.check { kind } else { None };
    stage("JIT-compiling");
    let t = Instant::now();
    let exe = Executable::for_run(&c, &req.compile.target, &req.run)
        .map_err(|e| RunFailure::Run(e.to_string()))?;
    timings.jit = t.elapsed();
    let err = |e: super::exec::RunError| RunFailure::Run(e.to_string());
    let dims: Vec<(String, i64)> = exe
        .ir()
        .dims
        .values()
        .map(|d| d.name.clone())
        .zip(exe.dims().map_err(err)?)
        .collect();
    stage("making inputs");
    let mut tensors = exe.tensor_specs().map_err(err)?;
    validate::label_from_source(&mut tensors, src);
    let budget = req.run.memory_limit.unwrap_or_else(validate::host_memory);
    validate::check_memory_with(&tensors, req.check, budget, &exe.launch_memory(&req.run))
        .map_err(RunFailure::Run)?;
    validate::check_given(
        &tensors,
        &req.given,
        req.run.fill_missing,
        &req.compile.defines,
        &c.ir.name,
    )
    .map_err(RunFailure::Run)?;
    let specs = exe.input_specs().map_err(err)?;
    let shape_of = |name: &str| specs.iter().find(|s| s.0 == name).map(|s| s.2.clone());
    let mut inputs = Vec::new();
    for (i, (name, dtype, shape)) in specs.iter().enumerate() {
        if let Some(g) = req.given.iter().find(|g| &g.name == name) {
            inputs.push(g.clone());
            continue;
        }
        let role = kind.and_then(|k| k.int_role(name, &shape_of));
        let t = generate(name, *dtype, shape, role, &req.inputs, i as u64).ok_or_else(|| {
            RunFailure::Run(format!("cannot make input `{name}` of dtype {dtype}"))
        })?;
        inputs.push(t);
    }
    if let Some(k) = kind {
        validate::check_roles(k, &inputs).map_err(RunFailure::Run)?;
    }
    stage("running");
    let t = Instant::now();
    let output = exe.run(&inputs, &req.run).map_err(err)?;
    timings.launch = t.elapsed();
    let mut checks = Vec::new();
    if req.check {
        stage("interpreting the kernel in float64");
        let t = Instant::now();
        let values: Vec<i64> = dims.iter().map(|d| d.1).collect();
        let want =
            crate::interp::interpret(&c.hir, &values, &inputs, &crate::interp::Options::default())
                .map_err(|e| RunFailure::Run(e.to_string()))?;
        timings.interpreter = t.elapsed();
        let comparisons = output
            .outputs
            .iter()
            .zip(&want)
            .map(|(o, w)| {
                compare_with(
                    &o.name,
                    &o.data.to_f64(),
                    &w.data,
                    interpreter_tolerance(o.data.dtype()),
                    NanRule::MatchesNan,
                )
            })
            .collect();
        checks.push(Check {
            oracle: Oracle::Interpreter,
            comparisons,
        });
    }
    if let Some(kind) = reference {
        let mut comparisons = Vec::new();
        stage("computing the float64 reference");
        let t = Instant::now();
        let scale = c
            .hir
            .consts
            .iter()
            .find(|k| k.name == "scale")
            .map(|k| k.value.as_f64())
            .ok_or_else(|| {
                RunFailure::Run("the reference needs the kernel's `scale` constant".into())
            })?;
        let out = output.outputs.iter().find(|o| o.name == "out");
        let dv = out
            .and_then(|o| o.shape.last().copied())
            .ok_or_else(|| RunFailure::Run("the reference needs an output `out`".into()))?;
        let want = expected(kind, &inputs, scale, dv).map_err(RunFailure::Run)?;
        timings.reference = t.elapsed();
        for o in &output.outputs {
            let tolerance = Tolerance::for_dtype(o.data.dtype());
            comparisons.push(match o.name.as_str() {
                "out" => {
                    compare_magnitudes(&o.name, &o.data.to_f64(), &want.out, &want.mag, tolerance)
                }
                "lse" => compare(&o.name, &o.data.to_f64(), &want.lse, tolerance),
                _ => continue,
            });
        }
        checks.push(Check {
            oracle: Oracle::Reference(kind),
            comparisons,
        });
    }
    Ok(RunSummary {
        kernel: c.ir.name.clone(),
        dims,
        inputs,
        output,
        reference,
        checks,
        timings,
    })
}
