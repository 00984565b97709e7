//! One IR function → one Cranelift function: the entry checks, the value
//! maps, and the helpers the per-concern emitters share (runtime calls with
//! status checks, counted loops, tile addresses).
//!
//! # Checked mode
//!
//! With [`super::Instrument`] on, each op that touches memory first
//! registers its IR text (`cube: %k = load kv[%b, %j+:128, ..] : …`) with
//! `amla_rt_site`, and JIT code's own GM accesses (scratch-tile copies,
//! scalar loads and stores, `atomic_exp_add`) report their element region
//! with `amla_rt_note_gm`, which the runtime bounds-checks (and the race
//! checker records). With `bounds` on, the code also checks:
//! - every point index of a GM access in `0..dim` — this covers indices
//!   read from GM, such as block-table page ids (a window `start+:len` is
//!   clamped to the dim as the IR defines: it may run past the end, or start
//!   there, as the last block of a causal loop does, and reads zeros);
//! - every point index of an `extract` (scalar or tile) in `0..extent`;
//! - every JIT access to a local tile: placement end against the buffer's
//!   size from `KernelCtx`.
//!
//! A failed check calls `amla_rt_check_fail(index, bound)`, which records
//! `RuntimeError::CheckedAccess` (op, unit, core, index, bound) and returns
//! a non-zero status that the code returns at once. Without instrumentation
//! none of this is emitted: the default code is unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self as cl, InstBuilder, MemFlagsData, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};

use super::{CodegenError, Result, abi};
use crate::ir::{EntityRef, Func, Inst, InstKind, Kernel, Space, Tensor, TileType, Value};

/// Memory flags of JIT accesses (may be unaligned; never trap by design,
/// but keep the default trapping semantics for safety).
pub(crate) fn mf() -> MemFlagsData {
    MemFlagsData::new()
}

/// A placed tile: where its bytes are.
#[derive(Clone, Debug)]
pub(crate) struct TileRef {
    pub ty: TileType,
    /// Byte offset in its local buffer.
    pub off: u64,
    /// Row stride in elements: the last dim's extent for a dense tile, the
    /// source's row stride for a rank-2 `extract` view placed in place.
    pub stride: u64,
}

impl TileRef {
    /// True when the tile is dense row-major (not a strided view).
    pub fn dense(&self) -> bool {
        self.stride == self.ty.rows_cols().1 || self.ty.rows_cols().0 <= 1
    }

    /// Element offset (the runtime's unit).
    pub fn elem_off(&self, op: &str) -> Result<u64> {
        let b = self.ty.dtype.bytes();
        if !self.off.is_multiple_of(b) {
            return Err(CodegenError::invalid(
                op,
                format!("tile offset {} not a multiple of {b}", self.off),
            ));
        }
        Ok(self.off / b)
    }
}

/// Translation state of one function.
pub(crate) struct FnCx<'a, 'f> {
    pub k: &'a Kernel,
    pub b: FunctionBuilder<'f>,
    pub ctx: cl::Value,
    pub work_item: cl::Value,
    pub sub_block: cl::Value,
    /// Block returning its `i32` parameter.
    pub ret: cl::Block,
    /// Scalars held in registers.
    pub scalars: HashMap<Value, cl::Value>,
    /// Local buffer bases.
    pub bases: HashMap<Space, cl::Value>,
    /// GM tensors: `(base pointer, dims as i64, row-major strides)`.
    pub gm: HashMap<Tensor, GmTensor>,
    /// Launch-time dim values (i64), by dim index.
    pub dims: Vec<Option<cl::Value>>,
    /// Runtime symbols.
    pub syms: HashMap<&'static str, cl::FuncRef>,
    /// The number passed to `wait_flag` (innermost loop variable).
    pub block_no: cl::Value,
    /// Byte offsets of `gm`-placed tiles in this unit's scratch.
    pub gm_tiles: HashMap<Value, u64>,
    /// Row strides (elements) of rank-2 tiles that are in-place views of
    /// another tile (`extract` results placed inside their source).
    pub views: HashMap<Value, u64>,
    /// Checked-mode and race-check instrumentation.
    pub instrument: super::Instrument,
    /// Op texts registered by instrumented code (their addresses are baked
    /// into the code; the compiled kernel keeps them alive).
    pub sites: Vec<Box<str>>,
    /// Byte sizes of the local buffers, loaded at entry.
    pub sizes: HashMap<Space, cl::Value>,
    /// Value names for op texts.
    names: Option<crate::ir::print::Names>,
    /// `cube` or `vector`, for op texts.
    unit_name: &'static str,
    /// Bytes of this unit's scratch (its `gm`-placed tiles).
    pub scratch_bytes: u64,
    /// Fused element-wise chains ([`super::fuse`]).
    pub fusion: super::fuse::Fusion,
    /// Copies folded into matmuls and matmul chains ([`super::matmul_fold`]).
    pub matmul_fold: super::matmul_fold::MatmulFold,
    /// [`abi::EXP_SYMBOL`]: its module id, and its reference once imported
    /// into this function ([`Self::call_exp`]).
    exp_fn: Option<FuncId>,
    exp_ref: Option<cl::FuncRef>,
}

/// A GM tensor as JIT code sees it.
#[derive(Clone, Debug)]
pub(crate) struct GmTensor {
    pub index: u32,
    pub base: cl::Value,
    pub dims: Vec<cl::Value>,
    pub strides: Vec<cl::Value>,
}

/// What translating a function produced besides the code.
pub(crate) struct Translated {
    /// Op texts instrumented code points at.
    pub sites: Vec<Box<str>>,
    /// Bytes of scratch one unit running the function allocates.
    pub scratch_bytes: u64,
}

/// Translates `f` into `func` (whose signature is already set).
pub(crate) fn translate(
    k: &Kernel,
    f: &Func,
    module: &mut JITModule,
    imports: &HashMap<&'static str, FuncId>,
    opts: &super::CodegenOptions,
    func: &mut cl::Function,
    fctx: &mut FunctionBuilderContext,
) -> Result<Translated> {
    let fe = module.isa().frontend_config();
    let mut b = FunctionBuilder::new(func, fctx);
    let mut syms = HashMap::new();
    // In `abi::SYMBOLS` order, so the CLIF text is deterministic.
    for (name, _) in abi::SYMBOLS.iter().chain(abi::INSTRUMENT_SYMBOLS) {
        if let Some(id) = imports.get(name) {
            syms.insert(*name, module.declare_func_in_func(*id, b.func));
        }
    }
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry).to_vec();
    let ret = b.create_block();
    b.append_block_param(ret, types::I32);
    let wi = p[1];
    let instrument = opts.instrument;
    let mut cx = FnCx {
        k,
        b,
        ctx: p[0],
        work_item: wi,
        sub_block: p[2],
        ret,
        scalars: HashMap::new(),
        bases: HashMap::new(),
        gm: HashMap::new(),
        dims: vec![None; k.dims.len()],
        syms,
        block_no: wi,
        gm_tiles: HashMap::new(),
        views: HashMap::new(),
        instrument,
        sites: Vec::new(),
        sizes: HashMap::new(),
        names: instrument.any().then(|| crate::ir::print::Names::new(k)),
        unit_name: f.unit.name(),
        scratch_bytes: 0,
        fusion: super::fuse::Fusion {
            off: opts.unfused,
            ..Default::default()
        },
        matmul_fold: super::matmul_fold::MatmulFold {
            off: opts.unfused || instrument.any(),
            ..Default::default()
        },
        exp_fn: imports.get(abi::EXP_SYMBOL).copied(),
        exp_ref: None,
    };
    cx.fusion_uses(f.body);
    cx.prologue(f)?;
    cx.emit_block(f.body)?;
    let zero = cx.b.ins().iconst(types::I32, 0);
    cx.b.ins().jump(ret, &[zero.into()]);
    cx.b.switch_to_block(ret);
    cx.b.seal_block(ret);
    let st = cx.b.block_params(ret)[0];
    cx.b.ins().return_(&[st]);
    cx.b.seal_all_blocks();
    let sites = std::mem::take(&mut cx.sites);
    let scratch_bytes = cx.scratch_bytes;
    cx.b.finalize(fe);
    Ok(Translated {
        sites,
        scratch_bytes,
    })
}

impl FnCx<'_, '_> {
    pub fn i64c(&mut self, x: i64) -> cl::Value {
        self.b.ins().iconst(types::I64, x)
    }
    pub fn i32c(&mut self, x: i64) -> cl::Value {
        self.b.ins().iconst(types::I32, x)
    }

    /// Returns `status` from the function when `cond` (i8) is true.
    pub fn fail_if(&mut self, cond: cl::Value, status: cl::Value) {
        let cont = self.b.create_block();
        self.b
            .ins()
            .brif(cond, self.ret, &[status.into()], cont, &[]);
        self.b.switch_to_block(cont);
        self.b.seal_block(cont);
    }

    /// Calls runtime symbol `name` with `ctx` prepended; returns its status
    /// from the function when non-zero.
    pub fn call(&mut self, name: &str, args: &[cl::Value]) -> Result<()> {
        let f = *self
            .syms
            .get(name)
            .ok_or_else(|| CodegenError::Cranelift(format!("runtime symbol {name} missing")))?;
        let mut all = vec![self.ctx];
        all.extend_from_slice(args);
        let call = self.b.ins().call(f, &all);
        let st = self.b.inst_results(call)[0];
        let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, st, 0);
        self.fail_if(c, st);
        Ok(())
    }

    /// Calls the runtime's in-place `exp` on `len` (i64) f32 at `p`,
    /// importing [`abi::EXP_SYMBOL`] into the function at the first call
    /// (as `Module::declare_func_in_func` would).
    pub fn call_exp(&mut self, p: cl::Value, len: cl::Value) -> Result<()> {
        let f = match self.exp_ref {
            Some(f) => f,
            None => {
                let id = self.exp_fn.ok_or_else(|| {
                    CodegenError::Cranelift(format!("runtime symbol {} missing", abi::EXP_SYMBOL))
                })?;
                let cc = self.b.func.signature.call_conv;
                let signature = self.b.func.import_signature(abi::exp_signature(cc));
                let name = self
                    .b
                    .func
                    .declare_imported_user_function(cl::UserExternalName {
                        namespace: 0,
                        index: id.as_u32(),
                    });
                let f = self.b.func.import_function(cl::ExtFuncData {
                    name: cl::ExternalName::user(name),
                    signature,
                    colocated: false,
                    patchable: false,
                });
                self.exp_ref = Some(f);
                f
            }
        };
        self.b.ins().call(f, &[p, len]);
        Ok(())
    }

    /// `for i in 0..count` (i64), body emitted by `f`.
    pub fn counted_loop(
        &mut self,
        count: cl::Value,
        f: &mut dyn FnMut(&mut Self, cl::Value) -> Result<()>,
    ) -> Result<()> {
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        let zero = self.i64c(0);
        self.b.ins().jump(header, &[zero.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, count);
        self.b.ins().brif(c, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        self.b.seal_block(body);
        f(self, i)?;
        let i2 = self.b.ins().iadd_imm_s(i, 1);
        self.b.ins().jump(header, &[i2.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// Checked mode: registers op `i`'s IR text with the runtime
    /// (`amla_rt_site`), for the reports of checks and the race checker.
    fn register_site(&mut self, i: Inst, unit: &str) -> Result<()> {
        let Some(names) = &self.names else {
            return Ok(());
        };
        let text: Box<str> =
            format!("{unit}: {}", crate::ir::print::print_inst(self.k, names, i)).into();
        let (p, n) = (text.as_ptr() as i64, text.len() as i64);
        self.sites.push(text);
        let (p, n) = (self.i64c(p), self.i64c(n));
        self.call("amla_rt_site", &[p, n])
    }

    /// Checked mode (`bounds`): fails the launch with
    /// `RuntimeError::CheckedAccess` unless `0 <= index < bound` (i64s).
    pub fn check_index(&mut self, index: cl::Value, bound: cl::Value) -> Result<()> {
        if !self.instrument.bounds {
            return Ok(());
        }
        let bad = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, index, bound);
        self.if_then(bad, &mut |c| c.call("amla_rt_check_fail", &[index, bound]))
    }

    /// Instrumented code: reports a JIT GM access of `rows × cols` elements
    /// of tensor `index` (row `r` at `off + r · stride`) to the runtime,
    /// which bounds-checks it and, under the race checker, records it.
    pub fn note_gm(
        &mut self,
        index: u32,
        off: cl::Value,
        stride: cl::Value,
        rows: cl::Value,
        cols: cl::Value,
        kind: i64,
    ) -> Result<()> {
        if !self.instrument.any() {
            return Ok(());
        }
        let (gi, k) = (self.i32c(index as i64), self.i32c(kind));
        self.call("amla_rt_note_gm", &[gi, off, stride, rows, cols, k])
    }

    /// Runs `f` only when `cond` (i8) is true.
    pub fn if_then(
        &mut self,
        cond: cl::Value,
        f: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let then = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(cond, then, &[], join, &[]);
        self.b.switch_to_block(then);
        self.b.seal_block(then);
        f(self)?;
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        Ok(())
    }

    /// The register value of scalar `v`.
    pub fn scalar(&self, v: Value, op: &str) -> Result<cl::Value> {
        self.scalars
            .get(&v)
            .copied()
            .ok_or_else(|| CodegenError::invalid(op, format!("{v} is not a defined scalar")))
    }

    /// The placement of tile `v`.
    pub fn tile(&self, v: Value, op: &str) -> Result<TileRef> {
        let Some(tt) = self.k.ty(v).as_tile() else {
            return Err(CodegenError::invalid(op, format!("{v} is not a tile")));
        };
        match tt.space {
            Space::Any => Err(CodegenError::invalid(op, format!("{v} is not placed"))),
            Space::Gm => {
                let off = *self.gm_tiles.get(&v).ok_or_else(|| {
                    CodegenError::invalid(op, format!("{v} in gm has no scratch slot"))
                })?;
                Ok(TileRef {
                    ty: tt.clone(),
                    off,
                    stride: self.views.get(&v).copied().unwrap_or(tt.rows_cols().1),
                })
            }
            _ => {
                let off = self.k.offsets[v].ok_or_else(|| {
                    CodegenError::invalid(op, format!("{v} in {} has no offset", tt.space))
                })?;
                Ok(TileRef {
                    ty: tt.clone(),
                    off,
                    stride: self.views.get(&v).copied().unwrap_or(tt.rows_cols().1),
                })
            }
        }
    }

    /// Address of the first byte of `t`. Checked mode: the tile's last
    /// byte must lie inside its local buffer.
    pub fn tile_ptr(&mut self, t: &TileRef, op: &str) -> Result<cl::Value> {
        let base = *self.bases.get(&t.ty.space).ok_or_else(|| {
            CodegenError::invalid(op, format!("buffer {} not available here", t.ty.space))
        })?;
        if self.instrument.bounds
            && let Some(&size) = self.sizes.get(&t.ty.space)
        {
            let (rows, cols) = t.ty.rows_cols();
            let span = rows.saturating_sub(1) * t.stride + cols;
            let last = t.off + span * t.ty.dtype.bytes() - 1;
            let last = self.i64c(last as i64);
            self.check_index(last, size)?;
        }
        Ok(self.b.ins().iadd_imm_s(base, t.off as i64))
    }

    /// Loads dims, checks GM buffers and local buffer sizes.
    fn prologue(&mut self, f: &Func) -> Result<()> {
        let k = self.k;
        let mut tensors = BTreeSet::new();
        let mut local_end: BTreeMap<u32, (Space, u64)> = BTreeMap::new();
        let mut tiles = Vec::new();
        k.walk(f.body, &mut |i: Inst| {
            if let Some(t) = k.kind(i).tensor() {
                tensors.insert(t);
            }
            tiles.extend(k.insts[i].results.iter().copied());
            if let Some(b) = k.kind(i).body() {
                tiles.extend(k.blocks[b].params.iter().copied());
            }
        });
        // `gm` tiles live in the unit's private scratch, one slot each.
        let mut scratch = 0u64;
        for &v in &tiles {
            if let Some(tt) = k.ty(v).as_tile()
                && tt.space == Space::Gm
                && !self.gm_tiles.contains_key(&v)
            {
                self.gm_tiles.insert(v, scratch);
                scratch += tt.bytes().div_ceil(64) * 64;
            }
        }
        self.scratch_bytes = scratch;
        if scratch > 0 {
            let slot = self.b.create_sized_stack_slot(cl::StackSlotData::new(
                cl::StackSlotKind::ExplicitSlot,
                8,
                3,
            ));
            let addr = self.b.ins().stack_addr(types::I64, slot, 0);
            let bytes = self.i64c(scratch as i64);
            self.call("amla_rt_scratch", &[bytes, addr])?;
            let p = self.b.ins().load(types::I64, mf(), addr, 0);
            self.bases.insert(Space::Gm, p);
        }
        for v in tiles {
            if let Some(tt) = k.ty(v).as_tile()
                && let Some((_, _, code)) = abi::local_buffer(tt.space)
                && let Some(off) = k.offsets[v]
            {
                let end = off + tt.bytes();
                let e = local_end.entry(code).or_insert((tt.space, 0));
                e.1 = e.1.max(end);
            }
        }
        // Local buffers: base and capacity check.
        for (space, end) in local_end.into_values() {
            let (base_off, size_off, _) = abi::local_buffer(space).expect("local space");
            let base = self.b.ins().load(types::I64, mf(), self.ctx, base_off);
            let size = self.b.ins().load(types::I64, mf(), self.ctx, size_off);
            let small = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, size, end as i64);
            let st = self.i32c(abi::STATUS_LOCAL_TOO_SMALL as i64);
            self.fail_if(small, st);
            self.bases.insert(space, base);
            self.sizes.insert(space, size);
        }
        // Dims.
        if k.dims.values().any(|d| d.value.is_none()) {
            let n = self
                .b
                .ins()
                .load(types::I64, mf(), self.ctx, abi::CTX_DIM_COUNT);
            let few = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, n, k.dims.len() as i64);
            let st = self.i32c(abi::STATUS_MISSING_DIM as i64);
            self.fail_if(few, st);
            let p = self.b.ins().load(types::I64, mf(), self.ctx, abi::CTX_DIMS);
            for (d, data) in k.dims.iter() {
                if data.value.is_none() {
                    let v = self
                        .b
                        .ins()
                        .load(types::I64, mf(), p, (d.index() * 8) as i32);
                    self.dims[d.index()] = Some(v);
                }
            }
        }
        for (d, data) in k.dims.iter() {
            if let Some(v) = data.value {
                self.dims[d.index()] = Some(self.i64c(v as i64));
            }
        }
        // GM tensors.
        let count = self
            .b
            .ins()
            .load(types::I64, mf(), self.ctx, abi::CTX_GM_COUNT);
        let descs = self.b.ins().load(types::I64, mf(), self.ctx, abi::CTX_GM);
        let bad = self.i32c(abi::STATUS_BAD_GM as i64);
        for t in tensors {
            let td = &k.tensors[t];
            let idx = t.index() as i64;
            let c = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThanOrEqual, count, idx);
            self.fail_if(c, bad);
            let dp = self.b.ins().iadd_imm_s(descs, idx * abi::GM_DESC_SIZE);
            let base = self.b.ins().load(types::I64, mf(), dp, abi::GM_DESC_BASE);
            let len = self.b.ins().load(types::I64, mf(), dp, abi::GM_DESC_LEN);
            let dt = self.b.ins().load(types::I32, mf(), dp, abi::GM_DESC_DTYPE);
            let code = abi::dtype_code(td.dtype).ok_or_else(|| {
                CodegenError::invalid("tensor", format!("{} has dtype bool", td.name))
            })?;
            let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, dt, code as i64);
            self.fail_if(c, bad);
            let mut dims = Vec::new();
            for d in &td.shape {
                let v = match d {
                    crate::ir::Dim::Const(n) => self.i64c(*n as i64),
                    crate::ir::Dim::Sym(id) => self.dims[id.index()].ok_or_else(|| {
                        CodegenError::invalid("tensor", format!("dim {id} has no value"))
                    })?,
                };
                // Negative dims count as empty.
                let z = self.i64c(0);
                dims.push(self.b.ins().smax(v, z));
            }
            let mut strides = vec![self.i64c(1); dims.len()];
            for i in (0..dims.len().saturating_sub(1)).rev() {
                strides[i] = self.b.ins().imul(strides[i + 1], dims[i + 1]);
            }
            let total = match dims.first() {
                Some(&d0) => self.b.ins().imul(d0, strides[0]),
                None => self.i64c(1),
            };
            let c = self.b.ins().icmp(IntCC::UnsignedLessThan, len, total);
            self.fail_if(c, bad);
            self.gm.insert(
                t,
                GmTensor {
                    index: t.index() as u32,
                    base,
                    dims,
                    strides,
                },
            );
        }
        Ok(())
    }

    /// Emits every instruction of `block` up to (not including) a final
    /// `yield`, whose operands it returns.
    pub fn emit_block(&mut self, block: crate::ir::Block) -> Result<Vec<Value>> {
        self.plan_fusion(block);
        self.plan_matmul_fold(block);
        for &i in &self.k.blocks[block].insts {
            if let InstKind::Yield(vs) = self.k.kind(i) {
                return Ok(vs.clone());
            }
            self.emit_inst(i)?;
        }
        Ok(Vec::new())
    }

    fn emit_inst(&mut self, i: Inst) -> Result<()> {
        if self.fusion.deferred.contains(&i) {
            // Emitted after its group (`fuse`), by `emit_now`.
            return Ok(());
        }
        self.emit_now(i)
    }

    fn emit_now(&mut self, i: Inst) -> Result<()> {
        if self.fusion.absorbed.contains(&i) {
            if self.fusion.snapshot_at.contains(&i) {
                return self.emit_snapshot(i);
            }
            return Ok(());
        }
        let k = self.k;
        let kind = k.kind(i);
        let res = &k.insts[i].results;
        let result_is_scalar = res.first().is_some_and(|&r| k.ty(r).as_tile().is_none());
        let touches_memory = !matches!(
            kind,
            InstKind::Parallel { .. }
                | InstKind::For { .. }
                | InstKind::Yield(_)
                | InstKind::IConst(_)
                | InstKind::FConst(..)
                | InstKind::DimValue(_)
                | InstKind::SubBlock
        ) && (!result_is_scalar
            || matches!(kind, InstKind::Load { .. } | InstKind::Extract { .. }));
        if touches_memory && self.instrument.any() {
            let unit = self.unit_name;
            self.register_site(i, unit)?;
        }
        if let Some(g) = self.fusion.at.get(&i).cloned() {
            self.emit_group(&g)?;
            for &d in &g.deferred {
                self.emit_now(d)?;
            }
            return Ok(());
        }
        match kind {
            InstKind::Parallel { .. } => self.emit_parallel(i),
            InstKind::For { .. } => self.emit_for(i),
            InstKind::Yield(_) => Err(CodegenError::invalid("yield", "yield outside a loop end")),
            InstKind::SetFlag(id) => {
                let id = self.i32c(*id as i64);
                self.call("amla_rt_set_flag", &[id])
            }
            InstKind::WaitFlag(id) => {
                let id = self.i32c(*id as i64);
                let blk = self.block_no;
                self.call("amla_rt_wait_flag", &[id, blk])
            }
            InstKind::Load { .. } if result_is_scalar => self.emit_scalar_load(i),
            InstKind::Load { .. } => self.emit_load(i),
            InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. }
                if k.ty(*value).as_tile().is_none() =>
            {
                self.emit_scalar_store(i)
            }
            InstKind::Store { .. } | InstKind::AtomicAdd { .. } => self.emit_store(i),
            InstKind::AtomicExpAdd { .. } => self.emit_atomic_exp_add(i),
            InstKind::Matmul { .. } => self.emit_matmul(i),
            InstKind::Extract { .. } => self.emit_extract(i),
            InstKind::Copy { .. } => self.emit_copy(i),
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock => self.emit_scalar(i),
            _ if result_is_scalar => self.emit_scalar(i),
            _ => self.emit_vector(i),
        }
    }

    /// The clamped extent along one dim: positions `[start, start + len)`
    /// intersected with `[0, dim)`: returns `(lo, skip, ext)` where `lo` is
    /// the first valid position, `skip = lo - start` and `ext` the count.
    pub fn clamp_dim(
        &mut self,
        start: cl::Value,
        len: u64,
        dim: cl::Value,
    ) -> (cl::Value, cl::Value, cl::Value) {
        let zero = self.i64c(0);
        let lo = self.b.ins().smax(start, zero);
        let end = self.b.ins().iadd_imm_s(start, len as i64);
        let hi = self.b.ins().smin(end, dim);
        let ext0 = self.b.ins().isub(hi, lo);
        let ext = self.b.ins().smax(ext0, zero);
        let skip = self.b.ins().isub(lo, start);
        (lo, skip, ext)
    }

    /// An index start as i64.
    pub fn index_start(&mut self, v: Value, op: &str) -> Result<cl::Value> {
        let s = self.scalar(v, op)?;
        Ok(self.b.ins().sextend(types::I64, s))
    }
}
