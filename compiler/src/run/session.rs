//! One run from source to checked outputs: what `amlac run` does, as a
//! library function tests can call.
//!
//! Compile → JIT → inputs (seeded random, or given) → launch → read outputs
//! → (optionally) compare with the float64 reference the kernel names in
//! its `// @reference:` line.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::compare::{Comparison, Tolerance, compare};
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
    /// Compare with the float64 reference.
    pub check: bool,
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
    /// The float64 reference.
    pub reference: Duration,
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
    /// The reference used, when checked.
    pub reference: Option<ReferenceKind>,
    /// One comparison per output, when checked.
    pub comparisons: Vec<Comparison>,
    /// Where the time went.
    pub timings: Timings,
}

impl RunSummary {
    /// True when every comparison passed (vacuously without `--check`).
    pub fn passed(&self) -> bool {
        self.comparisons.iter().all(|c| c.passed)
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
    let reference = if req.check {
        Some(kind.ok_or_else(|| {
            RunFailure::Run(format!(
                "--check needs a `// @reference: KIND` line in {} naming the float64 reference (see docs/LANGUAGE.md)",
                src.name
            ))
        })?)
    } else {
        None
    };
    stage("JIT-compiling");
    let t = Instant::now();
    let exe =
        Executable::new(&c, &req.compile.target).map_err(|e| RunFailure::Run(e.to_string()))?;
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
    validate::check_memory(&tensors, reference.is_some(), budget).map_err(RunFailure::Run)?;
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
    let mut comparisons = Vec::new();
    if let Some(kind) = reference {
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
            let w = match o.name.as_str() {
                "out" => &want.out,
                "lse" => &want.lse,
                _ => continue,
            };
            comparisons.push(compare(
                &o.name,
                &o.data.to_f64(),
                w,
                Tolerance::for_dtype(o.data.dtype()),
            ));
        }
    }
    Ok(RunSummary {
        kernel: c.ir.name.clone(),
        dims,
        inputs,
        output,
        reference,
        comparisons,
        timings,
    })
}
