//! Cranelift JIT backend: translates a split, placed kernel (a `cube` and a
//! `vector` function) into two native entry points the runtime launches.
//!
//! # Flow
//!
//! The runtime's entry points and both functions are declared in the module
//! in function order, then the functions are translated to CLIF on the
//! calling thread, the Vector function first (its compile is usually the
//! longer one): its Cranelift compile starts on a scoped thread as soon as
//! it is translated, while the Cube function is translated and compiled on
//! the calling thread. Their machine code and relocations are handed to the
//! `JITModule` in function order (`define_function_bytes`). Each function's
//! code is what compiling it alone gives; `--emit clif|asm` take the same
//! path.
//!
//! The Cube function, mostly calls into the runtime, is register-allocated
//! with Cranelift's single-pass allocator (a fraction of the backtracking
//! allocator's compile time, no slower at run time); the Vector function's
//! SIMD loops get the backtracking allocator ([`Isas`]).
//!
//! # ABI
//!
//! Each function becomes `extern "C" fn(ctx: *const KernelCtx, work_item:
//! u64, sub_block: u32) -> i32` ([`amla_runtime::launch::EntryFn`]); 0 is
//! success. JIT code reads `KernelCtx` at the runtime's fixed offsets (see
//! `runtime/README.md` and [`abi`]): GM descriptors, local buffer bases,
//! and the launch-time dim values (`KernelCtx::dims`, one `i64` per kernel
//! dim in `Kernel::dims` order, given with `LaunchConfig::with_dims`; dims
//! bound at compile time are constants and need no entry, but the array must
//! still hold `Kernel::dims.len()` values when any dim is launch-bound).
//!
//! At entry, before touching memory, the code checks that every GM buffer
//! it uses exists, has the tensor's dtype and holds at least the tensor's
//! elements at the launch's dims ([`abi::STATUS_BAD_GM`]), that the dims
//! are there ([`abi::STATUS_MISSING_DIM`]) and that every local buffer it
//! uses is as big as the placements ([`abi::STATUS_LOCAL_TOO_SMALL`]).
//! Every runtime call's status is checked; a non-zero status is returned at
//! once (the runtime has already recorded the detailed error).
//!
//! # Invariants of the input
//!
//! `kernel.funcs` holds `cube` and/or `vector` functions whose top block is
//! scalar ops and one `parallel`; every tile has a `Space` other than `any`
//! and, in a local buffer, `kernel.offsets[v] = Some(byte offset)`. The grid
//! maps `work_item` row-major onto the axes (last axis fastest); work items
//! past the grid return 0 at once.
//!
//! # Memory model of the generated code
//!
//! - Cube ops (GM↔L1, L1→L0A/L0B, matmul, L0C→GM, flags) and Vector GM↔UB
//!   copies are runtime calls ([`cube`]).
//! - Vector element-wise ops, broadcasts, reductions, iota, selects and
//!   casts are JIT-emitted SIMD loops over UB (f32x4 / i32x4, scalar tails)
//!   ([`vector`], [`simd_math`]); chains of them over one tile shape, and
//!   the row reductions of their values, are one loop ([`fuse`]). Bool
//!   tiles are one byte per element,
//!   `0x00` false and `0xFF` true.
//! - `atomic_exp_add` is an i32x4 integer add of `n << 23` on the f32 bits,
//!   with the guards of `amla_runtime::rescale::exp2_scale_bits`, applied to
//!   GM in place by JIT code ([`simd_math::emit_exp2_scale_row`]).
//! - GM reads past a tensor's end read 0 (the copied extent is clamped and the
//!   rest of the tile zero-filled); writes past it are dropped. A scalar
//!   `extract` from a tile with an index out of range reads 0 too.
//! - Tiles `plan-memory` left in `gm` (too big for UB) live in the unit's
//!   private host scratch (`amla_rt_scratch`, one 64-byte aligned slot per
//!   such value, allocated once per launch); Vector ops read and write them
//!   like UB tiles, and loads/stores between them and GM tensors are JIT
//!   copies. (On the host this needs no streaming through UB.)
//! - An `extract` whose result `plan-memory` placed inside its source at the
//!   window's own position is a view: nothing is copied and the result keeps
//!   the source's row stride, which copies and matmuls (`lda`/`ldb`/`ldc`)
//!   then use. Any other `extract` is a strided runtime copy.
//! - Loop-carried tiles whose placements differ are moved at loop entry, at
//!   each `yield` and at exit, one after the other (placements that swap two
//!   carried tiles would need a temporary; the planner does not produce them).
//!
//! # Limits (each an [`CodegenError::Unsupported`] naming the op)
//!
//! Element-wise ops on f16 tiles (only casts to and from f16 are done, by
//! the runtime's converting copy); Vector ops on strided views; `atomic_add`
//! from a `gm`-placed tile; `extract` of masks through the runtime; more than
//! [`cube::MAX_UNROLLED_COPIES`] pieces in one GM access.

pub mod abi;
pub mod cube;
mod func;
mod fuse;
pub(crate) mod matmul_fold;
pub mod rescale;
mod scalar;
pub mod simd_math;
mod vector;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use amla_runtime::launch::EntryFn;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir as cl};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc};

use crate::ir::{DType, Func, InstKind, Kernel, Unit, Value};

/// Options of the backend.
#[derive(Clone, Debug, Default)]
pub struct CodegenOptions {
    /// Run Cranelift's IR verifier on every function (slower; on in tests).
    pub verify: bool,
    /// Instrumentation of the generated code (none by default, so the
    /// default code has no check in it).
    pub instrument: Instrument,
    /// Emit every Vector op as its own loop instead of fusing element-wise
    /// chains ([`fuse`]), and every Cube copy and matmul as its own runtime
    /// call instead of folding L1 → L0 copies and K chains into one matmul
    /// call ([`matmul_fold`]): the reference both are tested against.
    pub unfused: bool,
}

impl CodegenOptions {
    /// Default code with Cranelift's verifier on every function (what
    /// tests compile with).
    pub fn verified() -> Self {
        Self {
            verify: true,
            ..Self::default()
        }
    }
}

/// What instrumentation JIT code carries (see [`func`]'s checked-mode notes).
///
/// Both register each memory op's IR text with the runtime
/// (`amla_rt_site`) before it runs, so reports name the op, and report JIT
/// code's own GM accesses (`amla_rt_note_gm`: the runtime verifies they lie
/// inside their buffer and, under the race checker, records them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instrument {
    /// `--checked`: bounds-check every point index (GM tensor indices, tile
    /// indices, block-table values used as indices) and every local tile
    /// access against its buffer; a violation ends the launch with
    /// `RuntimeError::CheckedAccess` naming the op, unit and index.
    pub bounds: bool,
    /// `--race-check`: report JIT code's GM accesses to the race checker.
    pub gm_accesses: bool,
}

impl Instrument {
    /// True when any instrumentation is on.
    pub fn any(self) -> bool {
        self.bounds || self.gm_accesses
    }
}

/// Why a kernel could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// The IR uses something this backend does not translate (yet).
    #[error("codegen: unsupported `{op}`: {detail}")]
    Unsupported {
        /// The op's name in the IR text form.
        op: String,
        /// What about it is unsupported.
        detail: String,
    },
    /// The IR breaks an invariant codegen relies on (a compiler bug).
    #[error("codegen: invalid IR at `{op}`: {detail}")]
    InvalidIr {
        /// The op's name.
        op: String,
        /// What is wrong.
        detail: String,
    },
    /// Cranelift refused the generated code (a backend bug) or the host.
    #[error("codegen: cranelift: {0}")]
    Cranelift(String),
}

impl CodegenError {
    pub(crate) fn unsupported(op: &str, detail: impl Into<String>) -> Self {
        CodegenError::Unsupported {
            op: op.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn invalid(op: &str, detail: impl Into<String>) -> Self {
        CodegenError::InvalidIr {
            op: op.to_string(),
            detail: detail.into(),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, CodegenError>;

fn cl_err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// A JIT-compiled kernel: keeps the code alive and hands out its entries.
pub struct CompiledKernel {
    module: Option<JITModule>,
    /// Op texts instrumented code registers with the runtime by address.
    _sites: Vec<Box<str>>,
    /// Scratch bytes per Cube and per Vector unit (`gm`-placed tiles).
    scratch: [u64; 2],
    name: String,
    cube: Option<EntryFn>,
    vector: Option<EntryFn>,
    sub_blocks: u32,
    grid: Grid,
}

impl std::fmt::Debug for CompiledKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledKernel")
            .field("name", &self.name)
            .field("cube", &self.cube.is_some())
            .field("vector", &self.vector.is_some())
            .field("sub_blocks", &self.sub_blocks)
            .finish()
    }
}

impl Drop for CompiledKernel {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the entry points handed out borrow `self` (see
            // `runtime_kernel`) or are plain fn pointers the caller was told
            // not to use after dropping the kernel.
            unsafe { m.free_memory() };
        }
    }
}

impl CompiledKernel {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The Cube entry, if the kernel has a `cube` function. Valid while
    /// `self` lives.
    pub fn cube_entry(&self) -> Option<EntryFn> {
        self.cube
    }
    /// The Vector entry, if the kernel has a `vector` function. Valid while
    /// `self` lives.
    pub fn vector_entry(&self) -> Option<EntryFn> {
        self.vector
    }
    /// Host scratch bytes one unit allocates for the tiles `plan-memory` left
    /// in `gm` (`(cube, each vector unit)`), so a launch can be refused
    /// before it allocates.
    pub fn scratch_bytes(&self) -> (u64, u64) {
        (self.scratch[0], self.scratch[1])
    }
    /// Vector sub-blocks per core the `vector` function expects (1 without one).
    pub fn sub_blocks(&self) -> u32 {
        self.sub_blocks
    }
    /// The kernel as the runtime's launcher takes it (units without a
    /// function idle).
    pub fn runtime_kernel(&self) -> amla_runtime::launch::Kernel<'_> {
        use amla_runtime::launch::Entry;
        amla_runtime::launch::Kernel {
            name: &self.name,
            cube: self.cube.map_or(Entry::Idle, Entry::Extern),
            vector: self.vector.map_or(Entry::Idle, Entry::Extern),
        }
    }
    /// Number of work items for the given launch dims (one value per
    /// `Kernel::dims` entry; compile-time bound dims may hold anything): the
    /// product of the grid axes' trip counts `ceil((hi - lo) / step)`.
    pub fn work_items(&self, dims: &[i64]) -> Result<u64> {
        self.grid.work_items(dims)
    }
}

/// The grid, as host-evaluable expressions of the top block's scalars.
#[derive(Clone, Debug, Default)]
struct Grid {
    /// `(lo, hi, step)` per axis.
    axes: Vec<(HostExpr, HostExpr, i64)>,
}

/// A scalar expression of the top block the host can evaluate.
#[derive(Clone, Debug)]
enum HostExpr {
    Const(i64),
    Dim(usize, Option<u64>),
    Bin(crate::ir::BinaryOp, Box<HostExpr>, Box<HostExpr>),
}

impl HostExpr {
    fn from_value(k: &Kernel, v: Value) -> Result<HostExpr> {
        use crate::ir::EntityRef;
        let Some(i) = k.def_inst(v) else {
            return Err(CodegenError::unsupported(
                "parallel",
                "grid bounds must be computed from constants and dims",
            ));
        };
        Ok(match k.kind(i) {
            InstKind::IConst(c) => HostExpr::Const(*c),
            InstKind::DimValue(d) => HostExpr::Dim(d.index(), k.dims[*d].value),
            InstKind::Binary(op, a, b) => HostExpr::Bin(
                *op,
                Box::new(HostExpr::from_value(k, *a)?),
                Box::new(HostExpr::from_value(k, *b)?),
            ),
            other => {
                return Err(CodegenError::unsupported(
                    "parallel",
                    format!("grid bound computed by `{}`", other.opcode()),
                ));
            }
        })
    }
    fn eval(&self, dims: &[i64]) -> Result<i32> {
        use crate::ir::BinaryOp as B;
        Ok(match self {
            HostExpr::Const(c) => *c as i32,
            HostExpr::Dim(_, Some(v)) => *v as i32,
            HostExpr::Dim(i, None) => *dims.get(*i).ok_or_else(|| {
                CodegenError::invalid("parallel", format!("no value for dim #{i}"))
            })? as i32,
            HostExpr::Bin(op, a, b) => {
                let (a, b) = (a.eval(dims)?, b.eval(dims)?);
                match op {
                    B::Add => a.wrapping_add(b),
                    B::Sub => a.wrapping_sub(b),
                    B::Mul => a.wrapping_mul(b),
                    B::Div => scalar::host_div(a, b),
                    B::Rem => scalar::host_rem(a, b),
                    B::Max => a.max(b),
                    B::Min => a.min(b),
                    B::And | B::Or => {
                        return Err(CodegenError::invalid("parallel", "bool grid bound"));
                    }
                }
            }
        })
    }
}

impl Grid {
    fn of(k: &Kernel, f: &Func) -> Result<Grid> {
        let mut g = Grid::default();
        for &i in &k.blocks[f.body].insts {
            if let InstKind::Parallel { axes, .. } = k.kind(i) {
                for ax in axes {
                    g.axes.push((
                        HostExpr::from_value(k, ax.lo)?,
                        HostExpr::from_value(k, ax.hi)?,
                        ax.step,
                    ));
                }
                return Ok(g);
            }
        }
        Err(CodegenError::invalid(
            "parallel",
            format!("the {} function has no grid", f.unit.name()),
        ))
    }
    fn work_items(&self, dims: &[i64]) -> Result<u64> {
        let mut n = 1u64;
        for (lo, hi, step) in &self.axes {
            let (lo, hi) = (lo.eval(dims)?, hi.eval(dims)?);
            n = n.saturating_mul(scalar::trip_count(lo, hi, *step));
        }
        Ok(n)
    }
}

/// The target ISA for emission snapshots, with `flags`: x86-64 with SSE4.2
/// and nothing newer, independent of the host.
fn fixed_isa_with(flags: settings::Flags) -> Result<OwnedTargetIsa> {
    let triple: target_lexicon::Triple = "x86_64-unknown-linux-gnu"
        .parse()
        .map_err(|e| CodegenError::Cranelift(format!("{e:?}")))?;
    let mut ib = cranelift_codegen::isa::lookup(triple).map_err(cl_err)?;
    for f in ["has_sse3", "has_ssse3", "has_sse41", "has_sse42"] {
        ib.enable(f).map_err(cl_err)?;
    }
    ib.finish(flags).map_err(cl_err)
}

fn host_isa() -> Result<OwnedTargetIsa> {
    host_isa_with(shared_flags()?)
}

fn host_isa_with(flags: settings::Flags) -> Result<OwnedTargetIsa> {
    let ib = cranelift_native::builder().map_err(|e| CodegenError::Cranelift(e.to_string()))?;
    ib.finish(flags).map_err(cl_err)
}

fn shared_flags() -> Result<settings::Flags> {
    Ok(settings::Flags::new(shared_builder()?))
}

fn shared_builder() -> Result<settings::Builder> {
    let mut fb = settings::builder();
    fb.set("opt_level", "speed").map_err(cl_err)?;
    fb.set("use_colocated_libcalls", "false").map_err(cl_err)?;
    fb.set("is_pic", "false").map_err(cl_err)?;
    fb.set("enable_verifier", "false").map_err(cl_err)?;
    Ok(fb)
}

/// [`shared_flags`] with the single-pass register allocator: the Cube
/// function's flags.
fn cube_flags() -> Result<settings::Flags> {
    let mut fb = shared_builder()?;
    fb.set("regalloc_algorithm", "single_pass")
        .map_err(cl_err)?;
    Ok(settings::Flags::new(fb))
}

/// The ISAs a kernel's functions are compiled with: one per unit (the same
/// target, different flags). The module's own ISA is `vector`'s.
struct Isas {
    vector: OwnedTargetIsa,
    cube: OwnedTargetIsa,
}

impl Isas {
    /// For the host: [`host_isa`], and [`cube_flags`] for the Cube.
    fn host() -> Result<Isas> {
        Ok(Isas {
            vector: host_isa()?,
            cube: host_isa_with(cube_flags()?)?,
        })
    }

    /// For the emission snapshots: [`fixed_isa`]'s target.
    fn fixed() -> Result<Isas> {
        Ok(Isas {
            vector: fixed_isa_with(shared_flags()?)?,
            cube: fixed_isa_with(cube_flags()?)?,
        })
    }

    fn of(&self, unit: Unit) -> &dyn TargetIsa {
        match unit {
            Unit::Cube => &*self.cube,
            _ => &*self.vector,
        }
    }
}

fn new_module(isa: OwnedTargetIsa) -> JITModule {
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for (name, ptr) in amla_runtime::jit::jit_symbols() {
        jb.symbol(name, ptr);
    }
    JITModule::new(jb)
}

/// A function translated to CLIF and defined in a module.
struct Defined {
    unit: Unit,
    id: FuncId,
    /// Its CLIF text ([`Text::Clif`]).
    clif: Option<String>,
    /// Its disassembly ([`Text::Asm`]).
    asm: Option<String>,
    /// The op texts instrumented code points at (kept alive with the code).
    sites: Vec<Box<str>>,
    /// Scratch bytes one unit running this function allocates.
    scratch_bytes: u64,
}

/// A function translated to CLIF and declared in the module, on its way
/// through Cranelift ([`translate_and_compile`]), then handed to the module
/// as machine code ([`Pending::define`]).
struct Pending {
    unit: Unit,
    id: FuncId,
    /// The symbol name (`<kernel>_<unit>`), for errors.
    name: String,
    ctx: Context,
    clif: Option<String>,
    sites: Vec<Box<str>>,
    scratch_bytes: u64,
}

impl Pending {
    /// Runs Cranelift on the function (optimisation, lowering, register
    /// allocation, emission); the code stays in `self.ctx`.
    fn compile(&mut self, isa: &dyn TargetIsa) -> Result<()> {
        self.ctx
            .compile(isa, &mut ControlPlane::default())
            .map(|_| ())
            .map_err(|e| {
                let e = cranelift_module::ModuleError::from(e);
                CodegenError::Cranelift(format!("{}: {e:?}", self.name))
            })
    }

    /// Gives the compiled code and its relocations to the module.
    fn define(self, module: &mut JITModule) -> Result<Defined> {
        let code = self
            .ctx
            .compiled_code()
            .ok_or_else(|| CodegenError::Cranelift(format!("{}: no compiled code", self.name)))?;
        let relocs: Vec<ModuleReloc> = code
            .buffer
            .relocs()
            .iter()
            .map(|r| ModuleReloc::from_mach_reloc(r, &self.ctx.func, self.id))
            .collect();
        module
            .define_function_bytes(
                self.id,
                u64::from(code.buffer.alignment),
                code.code_buffer(),
                &relocs,
            )
            .map_err(|e| CodegenError::Cranelift(format!("{}: {e:?}", self.name)))?;
        let asm = code.vcode.clone().map(|a| format!("; {}\n{a}", self.name));
        Ok(Defined {
            unit: self.unit,
            id: self.id,
            clif: self.clif,
            asm,
            sites: self.sites,
            scratch_bytes: self.scratch_bytes,
        })
    }
}

/// Which text form of the functions [`define_all`] keeps (printing the CLIF
/// of a large kernel costs a good part of its JIT time: only when asked).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    None,
    Clif,
    Asm,
}

fn define_all(
    k: &Kernel,
    module: &mut JITModule,
    isas: &Isas,
    opts: &CodegenOptions,
    text: Text,
) -> Result<Vec<Defined>> {
    let pending = translate_and_compile(k, module, isas, opts, text)?;
    pending.into_iter().map(|p| p.define(module)).collect()
}

/// What [`declare_all`] declared in the module.
struct Declared {
    /// The runtime's entry points.
    imports: HashMap<&'static str, FuncId>,
    /// Each function's id and symbol name, in function order.
    funcs: Vec<(FuncId, String)>,
}

/// Declares the runtime's entry points and every function of `k` in
/// `module`, in function order (so the ids do not depend on the order the
/// functions are translated in).
fn declare_all(k: &Kernel, module: &mut JITModule, opts: &CodegenOptions) -> Result<Declared> {
    let call_conv: CallConv = module.isa().default_call_conv();
    let mut imports = HashMap::new();
    let extra: &[(&str, &[u8])] = if opts.instrument.any() {
        abi::INSTRUMENT_SYMBOLS
    } else {
        &[]
    };
    for (name, params) in abi::SYMBOLS.iter().chain(extra) {
        let sig = abi::symbol_signature(params, call_conv);
        let id = module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(cl_err)?;
        imports.insert(*name, id);
    }
    let id = module
        .declare_function(
            abi::EXP_SYMBOL,
            Linkage::Import,
            &abi::exp_signature(call_conv),
        )
        .map_err(cl_err)?;
    imports.insert(abi::EXP_SYMBOL, id);
    let mut funcs = Vec::new();
    for f in &k.funcs {
        if !matches!(f.unit, Unit::Cube | Unit::Vector) {
            return Err(CodegenError::invalid(
                "func",
                format!(
                    "a `{}` function: codegen needs the split kernel",
                    f.unit.name()
                ),
            ));
        }
        let name = format!("{}_{}", sanitize(&k.name), f.unit.name());
        let sig = abi::entry_signature(call_conv);
        let id = module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(cl_err)?;
        funcs.push((id, name));
    }
    Ok(Declared { imports, funcs })
}

/// Translates function `n` of `k` (declared as `d` says) to CLIF.
fn translate_one(
    k: &Kernel,
    n: usize,
    d: &Declared,
    module: &mut JITModule,
    opts: &CodegenOptions,
    text: Text,
    fctx: &mut FunctionBuilderContext,
) -> Result<Pending> {
    let f = &k.funcs[n];
    let (id, name) = d.funcs[n].clone();
    let mut ctx = Context::new();
    ctx.func.signature = abi::entry_signature(module.isa().default_call_conv());
    ctx.func.name = UserFuncName::user(0, n as u32);
    let t = func::translate(k, f, module, &d.imports, opts, &mut ctx.func, fctx)?;
    if opts.verify {
        cranelift_codegen::verify_function(&ctx.func, module.isa())
            .map_err(|e| CodegenError::Cranelift(format!("{name}: {e}")))?;
    }
    let clif = (text == Text::Clif).then(|| format!("; {name}\n{}", ctx.func.display()));
    ctx.set_disasm(text == Text::Asm);
    Ok(Pending {
        unit: f.unit,
        id,
        name,
        ctx,
        clif,
        sites: t.sites,
        scratch_bytes: t.scratch_bytes,
    })
}

/// Declares `k`'s functions ([`declare_all`]), translates each to CLIF and
/// compiles it with its unit's ISA ([`Isas::of`]). Translation needs the
/// module, so it runs on this thread, the Vector function first; every
/// function but the last translated is compiled on a scoped thread of its
/// own, started as soon as it is translated, and the last one here (a
/// kernel has at most a Cube and a Vector function, so at most one extra
/// thread). The functions share nothing but the ISAs: each one's code is
/// what compiling it alone gives. Returned in function order; the error is
/// the first translation error in function order, else the first compile
/// error; a panic in a thread is resumed here.
fn translate_and_compile(
    k: &Kernel,
    module: &mut JITModule,
    isas: &Isas,
    opts: &CodegenOptions,
    text: Text,
) -> Result<Vec<Pending>> {
    let d = declare_all(k, module, opts)?;
    let mut order: Vec<usize> = (0..k.funcs.len()).collect();
    order.sort_by_key(|&n| k.funcs[n].unit != Unit::Vector);
    let Some((&last, early)) = order.split_last() else {
        return Ok(Vec::new());
    };
    let mut done: Vec<Option<Pending>> = (0..k.funcs.len()).map(|_| None).collect();
    // (stage: 0 translation, 1 compile; function; error).
    let mut errors: Vec<(u8, usize, CodegenError)> = Vec::new();
    let mut fctx = FunctionBuilderContext::new();
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for &n in early {
            match translate_one(k, n, &d, module, opts, text, &mut fctx) {
                Ok(mut p) => {
                    let isa = isas.of(p.unit);
                    threads.push((
                        n,
                        s.spawn(move || {
                            let r = p.compile(isa);
                            (p, r)
                        }),
                    ));
                }
                Err(e) => errors.push((0, n, e)),
            }
        }
        match translate_one(k, last, &d, module, opts, text, &mut fctx) {
            Ok(mut p) => {
                if let Err(e) = p.compile(isas.of(p.unit)) {
                    errors.push((1, last, e));
                }
                done[last] = Some(p);
            }
            Err(e) => errors.push((0, last, e)),
        }
        for (n, h) in threads {
            let (p, r) = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            if let Err(e) = r {
                errors.push((1, n, e));
            }
            done[n] = Some(p);
        }
    });
    if let Some((_, _, e)) = errors.into_iter().min_by_key(|e| (e.0, e.1)) {
        return Err(e);
    }
    Ok(done.into_iter().flatten().collect())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// JIT-compiles `k` for the host (host SIMD features, `opt_level=speed`).
pub fn compile(k: &Kernel, opts: &CodegenOptions) -> Result<CompiledKernel> {
    let isas = Isas::host()?;
    let mut module = new_module(isas.vector.clone());
    let defs = match define_all(k, &mut module, &isas, opts, Text::None) {
        Ok(d) => d,
        Err(e) => {
            // SAFETY: no code of this module was handed out.
            unsafe { module.free_memory() };
            return Err(e);
        }
    };
    if let Err(e) = module.finalize_definitions() {
        // SAFETY: as above.
        unsafe { module.free_memory() };
        return Err(cl_err(e));
    }
    let mut ck = CompiledKernel {
        module: None,
        _sites: Vec::new(),
        scratch: [0; 2],
        name: k.name.clone(),
        cube: None,
        vector: None,
        sub_blocks: 1,
        grid: Grid::default(),
    };
    for d in defs {
        ck._sites.extend(d.sites);
        ck.scratch[usize::from(d.unit != Unit::Cube)] = d.scratch_bytes;
        let p = module.get_finalized_function(d.id);
        // SAFETY: the function was defined with `abi::entry_signature`,
        // which is `EntryFn`'s C ABI on this host.
        let f: EntryFn = unsafe { std::mem::transmute::<*const u8, EntryFn>(p) };
        match d.unit {
            Unit::Cube => ck.cube = Some(f),
            _ => ck.vector = Some(f),
        }
    }
    ck.module = Some(module);
    for f in &k.funcs {
        if f.unit == Unit::Vector {
            ck.sub_blocks = f.sub_blocks.max(1);
        }
    }
    if let Some(f) = k.funcs.first() {
        ck.grid = Grid::of(k, f)?;
    }
    Ok(ck)
}

fn emit_text(k: &Kernel, opts: &CodegenOptions, asm: bool) -> Result<String> {
    let isas = Isas::fixed()?;
    let mut module = new_module(isas.vector.clone());
    let r = define_all(
        k,
        &mut module,
        &isas,
        opts,
        if asm { Text::Asm } else { Text::Clif },
    );
    // SAFETY: nothing was finalized or handed out.
    unsafe { module.free_memory() };
    let defs = r?;
    let mut s = String::new();
    for d in defs {
        let t = if asm { d.asm } else { d.clif }.unwrap_or_default();
        s.push_str(&t);
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    Ok(s)
}

/// The CLIF text of the kernel's functions (before Cranelift's
/// optimisations), as emitted for the fixed x86-64 SSE4.2 target.
pub fn emit_clif(k: &Kernel, opts: &CodegenOptions) -> Result<String> {
    emit_text(k, opts, false)
}

/// The machine code of the kernel's functions as Cranelift's VCode
/// disassembly for a fixed x86-64 target with SSE4.2 and no AVX, so the
/// output does not depend on the host.
pub fn emit_asm(k: &Kernel, opts: &CodegenOptions) -> Result<String> {
    emit_text(k, opts, true)
}

/// The element type JIT code uses for a scalar of `d` (floats are carried
/// as f32, bools as i8 0/1).
pub(crate) fn scalar_type(d: DType) -> cl::Type {
    match d {
        DType::I32 => cl::types::I32,
        DType::Bool => cl::types::I8,
        DType::F32 | DType::Bf16 | DType::F16 => cl::types::F32,
    }
}
