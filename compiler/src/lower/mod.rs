//! Lowering: the checked HIR ([`crate::check::hir`]) → the tile IR.
//!
//! The translation is one walk of the statement tree from the grid:
//!
//! - the kernel's dims and params become IR dims and GM tensors (same order,
//!   so `hir::DimId(i)` is IR dim `i` and `hir::ParamId(i)` is tensor `i`);
//! - one function of unit `any` holds the grid bounds, then one `parallel`
//!   whose body parameters are the grid variables;
//! - `let`/`var` bind the lowered value in an environment (`LocalId` →
//!   `Value`) and give it the source name; `x = e` rebinds;
//! - a `for` loop carries every `var` declared outside it and assigned inside
//!   it (in declaration order): the loop's body parameters are the carried
//!   values inside, its results are them after the loop, and the body ends in
//!   `yield` of their last bindings;
//! - `a @ b^T` becomes one `matmul a, b nk` (the Cube reads B transposed, no
//!   transpose op); every other `@` is `matmul … kn`; `(x^T)^T` is `x`;
//! - dims bound at compile time become `iconst`s, open dims `dim` ops;
//!   constants and literals become `iconst`/`fconst` of the dtype the checker
//!   gave them; the HIR's explicit broadcasts and casts map one to one.
//!
//! Example: `let p = exp(s - m);` with `s: f32[128, 128]`, `m: f32[128]`
//! becomes
//!
//! ```text
//! %0 = broadcast %m [128, 128] : f32[128, 128]
//! %1 = sub %s, %0 : f32[128, 128]
//! %p = exp %1 : f32[128, 128]
//! ```
//!
//! The HIR is valid by construction, so a failure here is a compiler bug; it
//! is reported as a [`LowerError`] naming the construct, never a panic.

pub mod capacity;

use crate::check::hir;
use crate::ir::EntityRef;
use crate::ir::{
    self, BLayout, BinaryOp, Builder, CmpOp, DType, Dim, Index, InstKind, ReduceOp, SrcSpan,
    UnaryOp, Unit, Value,
};

/// A construct lowering could not translate (a compiler bug: the checker
/// should have refused it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerError(pub String);

impl std::fmt::Display for LowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lowering: {}", self.0)
    }
}

impl std::error::Error for LowerError {}

impl From<ir::typing::TypeError> for LowerError {
    fn from(e: ir::typing::TypeError) -> Self {
        LowerError(e.0)
    }
}

type Result<T> = std::result::Result<T, LowerError>;

/// Lowers a checked kernel to the tile IR (one `any` function).
pub fn lower(h: &hir::Kernel) -> Result<ir::Kernel> {
    let mut k = ir::Kernel::new(h.name.clone());
    for d in &h.dims {
        let value = match d.value {
            Some(v) => Some(
                u64::try_from(v)
                    .map_err(|_| LowerError(format!("dim {} = {v} is negative", d.name)))?,
            ),
            None => None,
        };
        k.dims.push(ir::DimData {
            name: d.name.clone(),
            value,
        });
    }
    for p in &h.params {
        let shape = p
            .shape
            .iter()
            .map(|d| match d {
                hir::Dim::Const(n) => Dim::Const(*n),
                hir::Dim::Sym(id) => Dim::Sym(ir::DimId::new(id.0 as usize)),
            })
            .collect();
        let role = match p.role {
            hir::Role::Input => ir::Role::Input,
            hir::Role::Output => ir::Role::Output,
        };
        k.tensors.push(ir::TensorData {
            name: p.name.clone(),
            dtype: dtype(p.dtype),
            shape,
            role,
        });
    }
    let top = k.blocks.push(Default::default());
    k.funcs.push(ir::Func {
        unit: Unit::Any,
        sub_blocks: 1,
        body: top,
    });

    let mut cx = Lower {
        h,
        env: vec![None; h.locals.len()],
        b: Builder::at_end(&mut k, top),
    };
    let mut axes = Vec::new();
    for ax in &h.grid.axes {
        let lo = cx.expr(ax.lo)?;
        let hi = cx.expr(ax.hi)?;
        axes.push(ir::Axis {
            lo,
            hi,
            step: ax.step,
        });
    }
    let names: Vec<&str> = h
        .grid
        .axes
        .iter()
        .map(|a| h.local(a.var).name.as_str())
        .collect();
    let body = cx.b.parallel(axes, &names)?;
    // The grid's span: its bounds, `0..B` (the HIR keeps no statement spans).
    if let (Some(first), Some(last)) = (h.grid.axes.first(), h.grid.axes.last()) {
        let span = cx.range_span(first.lo, last.hi);
        if let Some(&i) = cx.b.kernel.blocks[top].insts.last() {
            cx.b.kernel.spans.set(i, span);
        }
    }
    let params = cx.b.kernel.blocks[body].params.clone();
    for (ax, p) in h.grid.axes.iter().zip(params) {
        cx.bind(ax.var, p)?;
    }
    cx.b.switch_to(body);
    cx.block(&h.grid.body)?;
    ir::spans::fill_missing_spans(&mut k);
    Ok(k)
}

/// Maps a HIR dtype to the IR's.
pub fn dtype(d: hir::DType) -> DType {
    match d {
        hir::DType::Bf16 => DType::Bf16,
        hir::DType::F16 => DType::F16,
        hir::DType::F32 => DType::F32,
        hir::DType::I32 => DType::I32,
        hir::DType::Bool => DType::Bool,
    }
}

struct Lower<'h, 'k> {
    h: &'h hir::Kernel,
    /// The current binding of each local.
    env: Vec<Option<Value>>,
    b: Builder<'k>,
}

impl Lower<'_, '_> {
    fn bind(&mut self, local: hir::LocalId, v: Value) -> Result<()> {
        let slot = self
            .env
            .get_mut(local.0 as usize)
            .ok_or_else(|| LowerError(format!("local {} out of range", local.0)))?;
        *slot = Some(v);
        Ok(())
    }

    fn lookup(&self, local: hir::LocalId) -> Result<Value> {
        self.env
            .get(local.0 as usize)
            .copied()
            .flatten()
            .ok_or_else(|| {
                LowerError(format!(
                    "local `{}` used before it is bound",
                    self.h.local(local).name
                ))
            })
    }

    /// Binds `local` to `v` and gives `v` the local's name when it has none.
    fn bind_named(&mut self, local: hir::LocalId, v: Value) -> Result<()> {
        let vd = &mut self.b.kernel.values[v];
        if vd.name.is_none() {
            vd.name = Some(self.h.local(local).name.clone());
        }
        self.bind(local, v)
    }

    fn block(&mut self, block: &hir::Block) -> Result<()> {
        for s in &block.stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &hir::Stmt) -> Result<()> {
        match s {
            hir::Stmt::Let { local, value } | hir::Stmt::Var { local, init: value } => {
                let v = self.expr(*value)?;
                self.bind_named(*local, v)
            }
            hir::Stmt::Assign { local, value } => {
                let v = self.expr(*value)?;
                self.bind_named(*local, v)
            }
            hir::Stmt::Store {
                param,
                index,
                value,
            } => {
                let index = self.index(index)?;
                let value = self.expr(*value)?;
                let tensor = ir::Tensor::new(param.0 as usize);
                self.b.ins(InstKind::Store {
                    tensor,
                    index,
                    value,
                })?;
                Ok(())
            }
            hir::Stmt::For {
                var,
                lo,
                hi,
                step,
                body,
            } => self.for_loop(*var, *lo, *hi, *step, body),
        }
    }

    fn for_loop(
        &mut self,
        var: hir::LocalId,
        lo: hir::ExprId,
        hi: hir::ExprId,
        step: i64,
        body: &hir::Block,
    ) -> Result<()> {
        let (lo_e, hi_e) = (lo, hi);
        let lo = self.expr(lo)?;
        let hi = self.expr(hi)?;
        // Carried: vars bound before the loop and assigned inside it.
        let mut assigned = Vec::new();
        collect_assigned(body, &mut assigned);
        assigned.sort_by_key(|l| l.0);
        assigned.dedup();
        let carried: Vec<hir::LocalId> = assigned
            .into_iter()
            .filter(|l| self.env.get(l.0 as usize).copied().flatten().is_some())
            .collect();
        let init = carried
            .iter()
            .map(|&l| self.lookup(l))
            .collect::<Result<Vec<_>>>()?;
        // Name the body parameters after the source variables.
        let outer = self.b.block();
        let (inst, body_block) = self
            .b
            .for_loop(lo, hi, step, init, &self.h.local(var).name)?;
        let loop_span = self.range_span(lo_e, hi_e);
        self.b.kernel.spans.set(inst, loop_span);
        let params = self.b.kernel.blocks[body_block].params.clone();
        let results = self.b.kernel.insts[inst].results.clone();
        for (i, &l) in carried.iter().enumerate() {
            let name = Some(self.h.local(l).name.clone());
            self.b.kernel.values[params[i + 1]].name = name.clone();
            self.b.kernel.values[results[i]].name = name;
        }
        let saved = self.env.clone();
        self.bind(var, params[0])?;
        for (i, &l) in carried.iter().enumerate() {
            self.bind(l, params[i + 1])?;
        }
        self.b.switch_to(body_block);
        self.block(body)?;
        let next = carried
            .iter()
            .map(|&l| self.lookup(l))
            .collect::<Result<Vec<_>>>()?;
        self.b.set_span(loop_span);
        self.b.ins(InstKind::Yield(next))?;
        self.b.switch_to(outer);
        // Locals declared inside the body go out of scope; carried ones take
        // the loop's results.
        self.env = saved;
        for (i, &l) in carried.iter().enumerate() {
            self.bind(l, results[i])?;
        }
        Ok(())
    }

    /// The source from expr `lo`'s start to expr `hi`'s end (a loop's or
    /// grid's `lo..hi`).
    fn range_span(&self, lo: hir::ExprId, hi: hir::ExprId) -> Option<SrcSpan> {
        let (a, b) = (
            self.h.exprs.get(lo.0 as usize)?,
            self.h.exprs.get(hi.0 as usize)?,
        );
        Some(SrcSpan {
            start: a.span.start.min(b.span.start) as u32,
            end: a.span.end.max(b.span.end) as u32,
        })
    }

    fn index(&mut self, items: &[hir::IndexItem]) -> Result<Vec<Index>> {
        items
            .iter()
            .map(|it| {
                Ok(match it {
                    hir::IndexItem::Point(e) => Index::Point(self.expr(*e)?),
                    hir::IndexItem::Range { start, len } => Index::Range {
                        start: self.expr(*start)?,
                        len: *len,
                    },
                    hir::IndexItem::Full => Index::Full,
                })
            })
            .collect()
    }

    fn shape(&self, dims: &[hir::Dim]) -> Result<Vec<u64>> {
        dims.iter()
            .map(|d| match d {
                hir::Dim::Const(n) => Ok(*n),
                hir::Dim::Sym(id) => Err(LowerError(format!(
                    "tile sized by open dim `{}`",
                    self.h.dim(*id).name
                ))),
            })
            .collect()
    }

    fn scalar_const(&mut self, ty: &hir::Type, value: f64) -> Result<Value> {
        let kind = match dtype(ty.dtype) {
            DType::I32 => InstKind::IConst(value as i64),
            d if d.is_float() => InstKind::FConst(value, d),
            d => return Err(LowerError(format!("constant of dtype {d}"))),
        };
        let v = self.b.value(kind)?;
        if ty.is_scalar() {
            Ok(v)
        } else {
            let shape = self.shape(&ty.shape)?;
            Ok(self.b.value(InstKind::Broadcast { src: v, shape })?)
        }
    }

    fn expr(&mut self, id: hir::ExprId) -> Result<Value> {
        let h = self.h;
        let e = h
            .exprs
            .get(id.0 as usize)
            .ok_or_else(|| LowerError(format!("expr {} out of range", id.0)))?;
        let span = Some(SrcSpan {
            start: e.span.start as u32,
            end: e.span.end as u32,
        });
        let first_new = self.b.kernel.insts.len();
        self.b.set_span(span);
        let v = match &e.kind {
            hir::ExprKind::FloatLit(x) => self.scalar_const(&e.ty, *x)?,
            hir::ExprKind::IntLit(n) => match dtype(e.ty.dtype) {
                DType::I32 => self.b.value(InstKind::IConst(*n))?,
                _ => self.scalar_const(&e.ty, *n as f64)?,
            },
            hir::ExprKind::ConstValue(c) => match h.konst(*c).value {
                hir::ConstValue::Int(n) if dtype(e.ty.dtype) == DType::I32 => {
                    self.b.value(InstKind::IConst(n))?
                }
                v => self.scalar_const(&e.ty, v.as_f64())?,
            },
            hir::ExprKind::Local(l) => self.lookup(*l)?,
            hir::ExprKind::DimValue(d) => match h.dim(*d).value {
                Some(n) => self.b.value(InstKind::IConst(n))?,
                None => self
                    .b
                    .value(InstKind::DimValue(ir::DimId::new(d.0 as usize)))?,
            },
            hir::ExprKind::Load { param, index } => {
                let index = self.index(index)?;
                self.b.value(InstKind::Load {
                    tensor: ir::Tensor::new(param.0 as usize),
                    index,
                })?
            }
            hir::ExprKind::Slice { base, index } => {
                let src = self.expr(*base)?;
                let index = self.index(index)?;
                self.b.value(InstKind::Extract { src, index })?
            }
            hir::ExprKind::Unary { op, arg } => {
                let a = self.expr(*arg)?;
                let op = match op {
                    hir::UnaryOp::Neg => UnaryOp::Neg,
                    hir::UnaryOp::Not => UnaryOp::Not,
                };
                self.b.value(InstKind::Unary(op, a))?
            }
            hir::ExprKind::Binary { op, lhs, rhs } => {
                let (a, c) = (self.expr(*lhs)?, self.expr(*rhs)?);
                self.b.value(InstKind::Binary(binop(*op), a, c))?
            }
            hir::ExprKind::Cmp { op, lhs, rhs } => {
                let (a, c) = (self.expr(*lhs)?, self.expr(*rhs)?);
                self.b.value(InstKind::Cmp(cmpop(*op), a, c))?
            }
            hir::ExprKind::Matmul { lhs, rhs } => {
                let a = self.expr(*lhs)?;
                let rhs_e = h.expr(*rhs);
                let (b, b_layout) = match rhs_e.kind {
                    hir::ExprKind::Transpose(inner) => (self.expr(inner)?, BLayout::NK),
                    _ => (self.expr(*rhs)?, BLayout::KN),
                };
                self.b.value(InstKind::Matmul {
                    a,
                    b,
                    b_layout,
                    acc: None,
                })?
            }
            hir::ExprKind::Transpose(a) => {
                let a = self.expr(*a)?;
                // `(x^T)^T` is `x`: a pair of transposes folds away, so
                // `(k^T)^T^T` costs one transpose (or none as a matmul's
                // `nk` operand).
                match self.b.kernel.def_inst(a).map(|i| self.b.kernel.kind(i)) {
                    Some(InstKind::Transpose(x)) => *x,
                    _ => self.b.value(InstKind::Transpose(a))?,
                }
            }
            hir::ExprKind::Math { f, arg } => {
                let a = self.expr(*arg)?;
                let op = match f {
                    hir::MathFn::Exp => UnaryOp::Exp,
                    hir::MathFn::Exp2 => UnaryOp::Exp2,
                    hir::MathFn::Log => UnaryOp::Log,
                    hir::MathFn::Log2 => UnaryOp::Log2,
                    hir::MathFn::Sqrt => UnaryOp::Sqrt,
                    hir::MathFn::Abs => UnaryOp::Abs,
                };
                self.b.value(InstKind::Unary(op, a))?
            }
            hir::ExprKind::RowMax(a) => {
                let a = self.expr(*a)?;
                self.b.value(InstKind::Reduce(ReduceOp::Max, a))?
            }
            hir::ExprKind::RowSum(a) => {
                let a = self.expr(*a)?;
                self.b.value(InstKind::Reduce(ReduceOp::Sum, a))?
            }
            hir::ExprKind::Where { cond, then, else_ } => {
                let c = self.expr(*cond)?;
                let t = self.expr(*then)?;
                let f = self.expr(*else_)?;
                self.b.value(InstKind::Select(c, t, f))?
            }
            hir::ExprKind::RowIndex { shape } | hir::ExprKind::ColIndex { shape } => {
                let shape = self.shape(shape)?;
                let rank = shape.len() as u32;
                let axis = match e.kind {
                    hir::ExprKind::RowIndex { .. } => rank.saturating_sub(2),
                    _ => rank.saturating_sub(1),
                };
                self.b.value(InstKind::Iota { shape, axis })?
            }
            hir::ExprKind::Reshape { arg, shape } => {
                let a = self.expr(*arg)?;
                let shape = self.shape(shape)?;
                self.b.value(InstKind::Reshape(a, shape))?
            }
            hir::ExprKind::Cast { arg, to } => {
                let a = self.expr(*arg)?;
                if self.b.kernel.ty(a).dtype() == dtype(*to) {
                    a
                } else {
                    self.b.value(InstKind::Cast(a, dtype(*to)))?
                }
            }
            hir::ExprKind::Broadcast { arg, to } => {
                let a = self.expr(*arg)?;
                let shape = self.shape(to)?;
                if self.b.kernel.ty(a).shape() == shape.as_slice() {
                    a
                } else {
                    self.b.value(InstKind::Broadcast { src: a, shape })?
                }
            }
            hir::ExprKind::Error => {
                return Err(LowerError(
                    "an erroneous expression reached lowering".into(),
                ));
            }
        };
        // The op that produces this expression's value carries its whole
        // span (its operands' ops were created first, with their own spans).
        if let Some(i) = self.b.kernel.def_inst(v)
            && i.index() >= first_new
        {
            self.b.kernel.spans.set(i, span);
        }
        Ok(v)
    }
}

fn binop(op: hir::BinOp) -> BinaryOp {
    match op {
        hir::BinOp::Add => BinaryOp::Add,
        hir::BinOp::Sub => BinaryOp::Sub,
        hir::BinOp::Mul => BinaryOp::Mul,
        hir::BinOp::Div => BinaryOp::Div,
        hir::BinOp::Rem => BinaryOp::Rem,
        hir::BinOp::Max => BinaryOp::Max,
        hir::BinOp::Min => BinaryOp::Min,
        hir::BinOp::And => BinaryOp::And,
        hir::BinOp::Or => BinaryOp::Or,
    }
}

fn cmpop(op: hir::CmpOp) -> CmpOp {
    match op {
        hir::CmpOp::Eq => CmpOp::Eq,
        hir::CmpOp::Ne => CmpOp::Ne,
        hir::CmpOp::Lt => CmpOp::Lt,
        hir::CmpOp::Le => CmpOp::Le,
        hir::CmpOp::Gt => CmpOp::Gt,
        hir::CmpOp::Ge => CmpOp::Ge,
    }
}

/// Every local assigned (`x = e`) anywhere in `block`, nested loops included.
fn collect_assigned(block: &hir::Block, out: &mut Vec<hir::LocalId>) {
    for s in &block.stmts {
        match s {
            hir::Stmt::Assign { local, .. } => out.push(*local),
            hir::Stmt::For { body, .. } => collect_assigned(body, out),
            _ => {}
        }
    }
}
