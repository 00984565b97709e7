//! Executing a compiled kernel on the emulated AI core.
//!
//! [`Executable`] owns the final IR and its JIT code. [`Executable::run`]
//! lays out GM in the IR's tensor order (inputs from the caller, outputs and
//! workspaces zeroed, sized from the kernel's dims), launches the grid over
//! the runtime's cores and returns the outputs as host tensors, with the
//! launch statistics.

use std::time::Duration;

use amla_runtime::config::{CoreConfig, LaunchConfig};
use amla_runtime::gm::{Gm, GmAccess, GmId};
use amla_runtime::launch::LaunchReport;
use amla_runtime::pool::Launcher;
use half::{bf16, f16};

use super::tensor::{HostData, HostTensor};
use super::validate;
use crate::codegen::{self, CodegenOptions, CompiledKernel, Instrument};
use crate::driver::Compilation;
use crate::ir::{DType, Dim, Kernel, Role};
use crate::target::Target;

/// How a run is launched.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Emulated AI cores (default: the machine's CPUs).
    pub cores: usize,
    /// How long a unit may wait for a flag before the launch fails.
    pub wait_timeout: Duration,
    /// Record a Chrome/Perfetto trace.
    pub trace: bool,
    /// Fill local buffers with NaN before the launch, so a kernel that reads
    /// memory it never wrote shows it in its outputs.
    pub poison_local: bool,
    /// When some inputs are given, draw the missing ones (seeded random)
    /// instead of failing.
    pub fill_missing: bool,
    /// Host memory a run may use, in bytes (`None`: what the machine has
    /// available, [`crate::run::validate::host_memory`]).
    pub memory_limit: Option<u64>,
    /// How the runtime accesses GM. Default [`GmAccess::Ordered`]: plain
    /// accesses, sound because the split pass orders every cross-unit GM
    /// access with flags (the argument is at `amla_runtime::gm::GmAccess`);
    /// [`GmAccess::Atomic`] for runs that must not rely on it.
    pub gm_access: GmAccess,
    /// Unit threads that may run at once (`LaunchConfig::host_cpus`;
    /// default the host's CPUs, `None` no limit).
    pub host_cpus: Option<usize>,
    /// How units map onto host threads (`LaunchConfig::schedule`).
    pub schedule: amla_runtime::Schedule,
    /// Checked mode (`--checked`): JIT code bounds-checks every index and
    /// local tile access, and the runtime every GM access of JIT code; a
    /// violation fails the launch naming the op, unit and index. Slower.
    /// Takes effect when the kernel is JIT-compiled ([`Executable::for_run`]).
    pub checked: bool,
    /// Race checker (`--race-check`, `amla_runtime::race`): the launch fails
    /// on the first two GM accesses of different units, one a write, that no
    /// flag orders. Slow; meant for small dims.
    pub race_check: bool,
    /// The Cube's matmul micro-kernel (`--matmul-path`; `None`: the fastest
    /// this CPU has). Chosen per launch, so runs side by side in one process
    /// never change each other's path (`LaunchConfig::matmul_path`).
    pub matmul_path: Option<amla_runtime::matmul::MatmulPath>,
}

impl RunConfig {
    /// The matmul path a launch under this config runs: the chosen one,
    /// else the fastest this CPU has (`LaunchConfig::resolved_matmul_path`).
    pub fn resolved_matmul_path(&self) -> amla_runtime::matmul::MatmulPath {
        self.matmul_path
            .unwrap_or_else(amla_runtime::matmul::detected_path)
    }

    /// The JIT instrumentation this run needs.
    pub fn instrument(&self) -> Instrument {
        Instrument {
            bounds: self.checked,
            gm_accesses: self.race_check,
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            wait_timeout: Duration::from_secs(10),
            trace: false,
            poison_local: false,
            fill_missing: false,
            memory_limit: None,
            gm_access: GmAccess::Ordered,
            host_cpus: LaunchConfig::default().host_cpus,
            schedule: amla_runtime::Schedule::Auto,
            checked: false,
            race_check: false,
            matmul_path: None,
        }
    }
}

/// The outputs of a run.
#[derive(Debug)]
pub struct RunOutput {
    /// Every output tensor, in signature order.
    pub outputs: Vec<HostTensor>,
    /// Statistics (and the trace, if asked for) of the launch.
    pub report: LaunchReport,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// JIT compilation failed (a compiler bug).
    #[error("codegen: {0}")]
    Codegen(String),
    /// The compilation cannot run (a pass codegen needs was disabled).
    #[error("{0}")]
    Usage(String),
    /// The inputs do not match the kernel's signature.
    #[error("{0}")]
    Inputs(String),
    /// The launch failed (timeout, runtime error, kernel status).
    #[error("launch of `{kernel}` failed: {message}")]
    Launch {
        /// Kernel name.
        kernel: String,
        /// The runtime's error.
        message: String,
    },
}

/// One GM tensor of a kernel at the run's dims.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Parameter name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Input, output or workspace.
    pub role: Role,
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// The source label of each axis: a dim name (`B`) or a constant (`576`).
    pub dims: Vec<String>,
}

impl TensorSpec {
    /// Elements of the shape (in `u128`: dims bound with `-D` may be huge).
    pub fn elems(&self) -> u128 {
        self.shape
            .iter()
            .fold(1u128, |a, &d| a.saturating_mul(d as u128))
    }
}

/// A compiled, JIT-ed kernel ready to run.
pub struct Executable {
    ir: Kernel,
    jit: CompiledKernel,
    core: CoreConfig,
    instrument: Instrument,
}

impl Executable {
    /// JIT-compiles the final IR of a compilation for `target`.
    pub fn new(c: &Compilation, target: &Target) -> Result<Executable, RunError> {
        Self::with_instrument(c, target, Instrument::default())
    }

    /// JIT-compiles for runs with `cfg` (checked or race-checked code when
    /// `cfg` asks for it).
    pub fn for_run(
        c: &Compilation,
        target: &Target,
        cfg: &RunConfig,
    ) -> Result<Executable, RunError> {
        Self::with_instrument(c, target, cfg.instrument())
    }

    /// JIT-compiles with the given instrumentation (none: the fast default).
    pub fn with_instrument(
        c: &Compilation,
        target: &Target,
        instrument: Instrument,
    ) -> Result<Executable, RunError> {
        let opts = CodegenOptions {
            instrument,
            ..CodegenOptions::default()
        };
        Self::with_options(c, target, &opts)
    }

    /// JIT-compiles with the given backend options (e.g. `unfused`, the
    /// op-per-loop Vector code the fused code is tested against).
    pub fn with_options(
        c: &Compilation,
        target: &Target,
        opts: &CodegenOptions,
    ) -> Result<Executable, RunError> {
        crate::passes::codegen_ready(&c.ir).map_err(RunError::Usage)?;
        let instrument = opts.instrument;
        let jit = codegen::compile(&c.ir, opts).map_err(|e| RunError::Codegen(e.to_string()))?;
        let core = target.core_config();
        Ok(Executable {
            ir: c.ir.clone(),
            jit,
            core,
            instrument,
        })
    }

    /// Host memory a launch with `cfg` allocates besides the tensors, by
    /// part: the units' scratch (tiles `plan-memory` left in `gm`), their
    /// local arenas, and the race checker's shadow when `cfg` runs it.
    pub fn launch_memory(&self, cfg: &RunConfig) -> Vec<(String, u128)> {
        let cores = cfg.cores.max(1) as u128;
        let sb = u128::from(self.jit.sub_blocks().max(1));
        let (cs, vs) = self.jit.scratch_bytes();
        let c = &self.core;
        let arena = (c.l1 + c.l0a + c.l0b + c.l0c) as u128 + sb * c.ub as u128;
        let mut parts = vec![
            (
                format!(
                    "unit scratch for tiles placed in gm ({cs} bytes per Cube, {vs} per Vector \
                     unit, {cores} cores)"
                ),
                cores * (u128::from(cs) + sb * u128::from(vs)),
            ),
            ("local buffers of the units".to_string(), cores * arena),
        ];
        if cfg.race_check {
            let elems: u128 = self
                .tensor_specs()
                .map(|v| v.iter().map(TensorSpec::elems).sum())
                .unwrap_or(0);
            let units = cores * (1 + sb);
            parts.push((
                format!("race checker shadow ({units} units)"),
                elems.saturating_mul(12 + 8 * units),
            ));
        }
        parts
    }

    /// The final IR.
    pub fn ir(&self) -> &Kernel {
        &self.ir
    }

    /// The value of every kernel dim (all bound at compile time for a run).
    pub fn dims(&self) -> Result<Vec<i64>, RunError> {
        self.ir
            .dims
            .values()
            .map(|d| {
                d.value.map(|v| v as i64).ok_or_else(|| {
                    RunError::Inputs(format!(
                        "dim `{}` is not bound: give it with -D {}=…",
                        d.name, d.name
                    ))
                })
            })
            .collect()
    }

    /// The shape of every GM tensor, in IR order.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, RunError> {
        let dims = self.dims()?;
        Ok(self
            .ir
            .tensors
            .values()
            .map(|t| {
                t.shape
                    .iter()
                    .map(|d| match d {
                        Dim::Const(n) => *n as usize,
                        Dim::Sym(id) => dims[crate::ir::EntityRef::index(*id)] as usize,
                    })
                    .collect()
            })
            .collect())
    }

    /// Every GM tensor (inputs, outputs, workspaces) at the run's dims, in
    /// IR order.
    pub fn tensor_specs(&self) -> Result<Vec<TensorSpec>, RunError> {
        let shapes = self.shapes()?;
        Ok(self
            .ir
            .tensors
            .values()
            .zip(shapes)
            .map(|(t, shape)| TensorSpec {
                name: t.name.clone(),
                dtype: t.dtype,
                role: t.role,
                shape,
                dims: t
                    .shape
                    .iter()
                    .map(|d| match d {
                        Dim::Const(n) => n.to_string(),
                        Dim::Sym(id) => self.ir.dims[*id].name.clone(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// The kernel's inputs: name, dtype and shape, in signature order.
    pub fn input_specs(&self) -> Result<Vec<(String, DType, Vec<usize>)>, RunError> {
        let shapes = self.shapes()?;
        Ok(self
            .ir
            .tensors
            .values()
            .zip(shapes)
            .filter(|(t, _)| t.role == Role::Input)
            .map(|(t, s)| (t.name.clone(), t.dtype, s))
            .collect())
    }

    /// Runs the kernel on `inputs` (one per kernel input, matched by name).
    pub fn run(&self, inputs: &[HostTensor], cfg: &RunConfig) -> Result<RunOutput, RunError> {
        let mut p = self.prepare(inputs, cfg)?;
        let report = self.launch(&mut p)?;
        let outputs = p.outputs()?;
        Ok(RunOutput { outputs, report })
    }

    /// Work items of a launch (the grid's points at the compiled dims).
    pub fn work_items(&self) -> Result<u64, RunError> {
        self.jit
            .work_items(&self.dims()?)
            .map_err(|e| RunError::Codegen(e.to_string()))
    }

    /// Lays out GM for `inputs` (inputs copied in, outputs and workspaces
    /// zeroed) and the launch settings, for one or more [`Executable::launch`]es.
    pub fn prepare(&self, inputs: &[HostTensor], cfg: &RunConfig) -> Result<Prepared, RunError> {
        let want = cfg.instrument();
        if (want.bounds && !self.instrument.bounds)
            || (want.gm_accesses && !self.instrument.gm_accesses)
        {
            return Err(RunError::Usage(
                "a checked or race-checked run needs code compiled for it \
                 (Executable::for_run with the same RunConfig)"
                    .into(),
            ));
        }
        let specs = self.tensor_specs()?;
        let budget = cfg.memory_limit.unwrap_or_else(validate::host_memory);
        validate::check_memory_with(&specs, false, budget, &self.launch_memory(cfg))
            .map_err(RunError::Inputs)?;
        let no_defines = crate::check::Defines::new();
        validate::check_given(&specs, inputs, false, &no_defines, &self.ir.name)
            .map_err(RunError::Inputs)?;
        let shapes = self.shapes()?;
        let mut gm = Gm::new();
        let mut outs: Vec<(String, GmId, DType, Vec<usize>)> = Vec::new();
        let mut zeroed = Vec::new();
        for (t, shape) in self.ir.tensors.values().zip(&shapes) {
            let n: usize = shape.iter().product();
            let rt_dtype = runtime_dtype(t.dtype).ok_or_else(|| {
                RunError::Inputs(format!("tensor `{}` has dtype {}", t.name, t.dtype))
            })?;
            let launch_err = |e: amla_runtime::error::RuntimeError| {
                RunError::Inputs(format!("GM `{}`: {e}", t.name))
            };
            match t.role {
                Role::Input => {
                    let h = inputs.iter().find(|h| h.name == t.name).ok_or_else(|| {
                        RunError::Inputs(format!("no input given for `{}`", t.name))
                    })?;
                    match &h.data {
                        HostData::F32(v) => gm.add_from(&t.name, v),
                        HostData::Bf16(v) => gm.add_from(&t.name, v),
                        HostData::F16(v) => gm.add_from(&t.name, v),
                        HostData::I32(v) => gm.add_from(&t.name, v),
                    }
                    .map_err(launch_err)?;
                }
                Role::Output | Role::Workspace => {
                    let id = gm.add_zeroed(&t.name, rt_dtype, n).map_err(launch_err)?;
                    zeroed.push(id);
                    if t.role == Role::Output {
                        outs.push((t.name.clone(), id, t.dtype, shape.clone()));
                    }
                }
            }
        }
        let dims = self.dims()?;
        let work_items = self.work_items()?;
        let launch_cfg = LaunchConfig {
            poison_local: cfg.poison_local,
            ..LaunchConfig::default()
        }
        .with_gm_access(cfg.gm_access)
        .with_race_check(cfg.race_check)
        .with_host_cpus(cfg.host_cpus)
        .with_schedule(cfg.schedule)
        .with_matmul_path(cfg.matmul_path)
        .with_cores(cfg.cores.max(1))
        .with_wait_timeout(cfg.wait_timeout)
        .with_trace(cfg.trace)
        .with_dims(dims)
        .with_vector_sub_blocks(self.jit.sub_blocks() as usize);
        Ok(Prepared {
            gm,
            outs,
            zeroed,
            work_items,
            launch_cfg,
            fresh: true,
            launcher: Launcher::new(),
        })
    }

    /// Launches the kernel on a prepared GM. Outputs and workspaces are
    /// zeroed again before every launch but the first, so every launch
    /// computes the same outputs from the same inputs.
    pub fn launch(&self, p: &mut Prepared) -> Result<LaunchReport, RunError> {
        self.launch_in_place(p).cloned()
    }

    /// [`Executable::launch`], leaving the report in `p` (reused by the next
    /// launch): after the first launch of a `Prepared`, this allocates
    /// nothing (the cooperative schedule's workers persist in `p`).
    pub fn launch_in_place<'p>(&self, p: &'p mut Prepared) -> Result<&'p LaunchReport, RunError> {
        if !p.fresh {
            for &id in &p.zeroed {
                p.gm.zero(id).map_err(|e| RunError::Inputs(e.to_string()))?;
            }
        }
        p.fresh = false;
        let kernel = self.jit.runtime_kernel();
        let Prepared {
            launcher,
            gm,
            work_items,
            launch_cfg,
            ..
        } = p;
        launcher
            .launch(&kernel, gm, *work_items, &self.core, launch_cfg)
            .map_err(|e| {
                let mut message = e.to_string();
                if let amla_runtime::error::RuntimeError::KernelStatus { code, .. } = &e
                    && let Some(m) = crate::codegen::abi::status_meaning(*code)
                {
                    message = format!("{m} ({message})");
                }
                RunError::Launch {
                    kernel: self.ir.name.clone(),
                    message,
                }
            })
    }
}

/// GM and launch settings of a kernel, ready for repeated launches
/// ([`Executable::prepare`], [`Executable::launch`]).
pub struct Prepared {
    gm: Gm,
    outs: Vec<(String, GmId, DType, Vec<usize>)>,
    zeroed: Vec<GmId>,
    work_items: u64,
    launch_cfg: LaunchConfig,
    fresh: bool,
    launcher: Launcher,
}

impl Prepared {
    /// Work items of the launch.
    pub fn work_items(&self) -> u64 {
        self.work_items
    }

    /// The outputs of the last launch, in signature order.
    pub fn outputs(&self) -> Result<Vec<HostTensor>, RunError> {
        let gm = &self.gm;
        let read_err = |e: amla_runtime::error::RuntimeError| RunError::Inputs(e.to_string());
        self.outs
            .iter()
            .map(|(name, id, dtype, shape)| {
                let id = *id;
                let data = match dtype {
                    DType::F32 => HostData::F32(gm.slice::<f32>(id).map_err(read_err)?.to_vec()),
                    DType::Bf16 => HostData::Bf16(gm.slice::<bf16>(id).map_err(read_err)?.to_vec()),
                    DType::F16 => HostData::F16(gm.slice::<f16>(id).map_err(read_err)?.to_vec()),
                    DType::I32 => HostData::I32(gm.slice::<i32>(id).map_err(read_err)?.to_vec()),
                    DType::Bool => {
                        return Err(RunError::Inputs(format!("output `{name}` is bool")));
                    }
                };
                Ok(HostTensor {
                    name: name.clone(),
                    shape: shape.clone(),
                    data,
                })
            })
            .collect()
    }
}

fn runtime_dtype(d: DType) -> Option<amla_runtime::dtype::DType> {
    use amla_runtime::dtype::DType as R;
    Some(match d {
        DType::F32 => R::F32,
        DType::Bf16 => R::Bf16,
        DType::F16 => R::F16,
        DType::I32 => R::I32,
        DType::Bool => return None,
    })
}
