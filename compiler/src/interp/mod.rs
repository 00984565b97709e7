//! A float64 interpreter of the checked HIR: the default oracle of
//! `amlac run --check`.
//!
//! [`interpret`] evaluates a [`hir::Kernel`] — the checker's output, before
//! lowering, passes or codegen — on host tensors: every grid point in order,
//! every loop, every store into zeroed outputs. Nothing of the compiler
//! after the checker is involved, so a miscompile anywhere in lowering, a
//! pass, codegen or the runtime shows up as a difference between the JIT's
//! outputs and the interpreter's.
//!
//! # Numbers
//!
//! Every element is an `f64`. The rules, chosen so that the interpreter is
//! the kernel's *exact* math except where the kernel itself says to round:
//!
//! - **f32 arithmetic is exact**: an `f32` value is held in f64 without
//!   rounding (f32 is the kernel's accumulation precision; computing it
//!   exactly is what the oracle is for). Only the f32 *range* is kept: a
//!   result beyond `f32::MAX` becomes `±inf`, as it does on the chip.
//!   Matmuls (bf16/f16 operands, exact products) accumulate in f64.
//! - **16-bit roundings are honoured**: a cast to `bf16`/`f16` rounds the
//!   f64 value to nearest even, and so does every op whose result is a
//!   16-bit tile (`a + b` on bf16 tiles, `rowsum` of a bf16 tile), because
//!   the kernel asks for that rounding and the JIT performs it. A 16-bit
//!   rounding (2^-9 relative for bf16) is far larger than the f32 noise
//!   the tolerance is meant to cover; ignoring it would force a tolerance
//!   too loose to catch a wrong op. A cast to `f32` of an `i32` rounds to
//!   f32; `i32(x)` truncates toward zero, saturating (NaN gives 0).
//! - **i32 is exact and wrapping**, as in the IR: `/` truncates, a zero
//!   divisor gives 0 (`i32::MIN / -1` wraps).
//! - **the last rounding of a store is not applied**: `out[b] = bf16(acc / l)`
//!   writes the exact `acc / l` (through reshapes too). The JIT's output is
//!   that value rounded; comparing it with a rounded oracle would add a
//!   second half-ulp, comparing it with the exact value leaves only the
//!   JIT's own rounding, which the tolerance covers.
//! - `max`/`min`/`rowmax` propagate NaN (as the JIT's `fmax` does);
//!   comparisons are IEEE (a NaN compares unequal to everything).
//!
//! The tolerance of the comparison follows from these rules: the JIT and
//! the interpreter differ by f32 rounding of the arithmetic between
//! roundings, by the order of sums, and by the JIT's polynomial `exp`/`log`;
//! a 16-bit rounding of a value that lies near a rounding boundary may go
//! the other way (one ulp of that element). See `run/compare.rs`.
//!
//! # Memory semantics
//!
//! As in the IR: elements of a slice past either end of a tensor (or tile)
//! read as 0 and stores past the end are dropped; a point index out of range
//! reads 0 (so a scalar load of a block table past its end is 0). Outputs
//! start as zeros, like the JIT's GM outputs. Work items run one after the
//! other in grid order; a kernel whose work items write the same element
//! is racy on the chip, and the interpreter keeps the last write.
//!
//! # Cost
//!
//! One allocation per evaluated expression (a whole tile), none per element.
//! [`Options::budget`] bounds the work (elements produced, matmul
//! multiply-adds, loop iterations), so a kernel with a loop of 2^31
//! iterations ends in an error instead of a hang.

use std::rc::Rc;

use crate::check::hir::{
    self, BinOp, CmpOp, DType, Dim, ExprId, ExprKind, IndexItem, Kernel, MathFn, Role, Stmt,
    UnaryOp,
};
use crate::run::tensor::HostTensor;

/// How an interpretation is bounded.
#[derive(Clone, Debug)]
pub struct Options {
    /// Work units (elements produced, multiply-adds, loop iterations)
    /// allowed before the interpreter gives up.
    pub budget: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: 20_000_000_000,
        }
    }
}

/// One output of the interpreted kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The output's name.
    pub name: String,
    /// Its declared dtype.
    pub dtype: DType,
    /// Its shape at launch.
    pub shape: Vec<usize>,
    /// Row-major elements: what the stores wrote, where a store of an f32
    /// value cast to a 16-bit output (`out[b] = bf16(acc / l)`) writes the
    /// value before that last rounding (see the module doc).
    pub data: Vec<f64>,
}

/// Why the interpreter stopped.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("interpreter: {0}")]
pub struct InterpError(pub String);

type Result<T> = std::result::Result<T, InterpError>;

fn err<T>(m: impl Into<String>) -> Result<T> {
    Err(InterpError(m.into()))
}

/// A tile value (a scalar has an empty shape and one element).
#[derive(Clone, Debug)]
struct Tile {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<f64>,
}

type Val = Rc<Tile>;

/// Rounds `x` to what a value of `dtype` can hold (see the module doc).
pub fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::Bf16 => crate::round16::bf16_from_f64(x).to_f64(),
        DType::F16 => crate::round16::f16_from_f64(x).to_f64(),
        DType::F32 => {
            if x.abs() > f32::MAX as f64 {
                x as f32 as f64
            } else {
                x
            }
        }
        DType::I32 => x,
        DType::Bool => x,
    }
}

fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn fmin(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Evaluates `k` with open dims `dims` (one per [`Kernel::dims`], in order;
/// a bound dim's entry must equal its value) on `inputs` (one per input
/// parameter, matched by name). Returns every output in signature order.
pub fn interpret(
    k: &Kernel,
    dims: &[i64],
    inputs: &[HostTensor],
    opts: &Options,
) -> Result<Vec<Output>> {
    if dims.len() != k.dims.len() {
        return err(format!(
            "{} dim values given, the kernel has {} dims",
            dims.len(),
            k.dims.len()
        ));
    }
    let mut shapes = Vec::new();
    let mut data = Vec::new();
    for p in &k.params {
        let shape: Vec<usize> = p
            .shape
            .iter()
            .map(|d| match d {
                Dim::Const(n) => *n as usize,
                Dim::Sym(id) => dims[id.0 as usize].max(0) as usize,
            })
            .collect();
        let n: usize = shape.iter().product();
        match p.role {
            Role::Input => {
                let t = inputs
                    .iter()
                    .find(|t| t.name == p.name)
                    .ok_or_else(|| InterpError(format!("no input given for `{}`", p.name)))?;
                if t.shape != shape || t.data.len() != n {
                    return err(format!(
                        "input `{}` has shape {:?}, the kernel takes {:?}",
                        p.name, t.shape, shape
                    ));
                }
                data.push(t.data.to_f64());
            }
            Role::Output => data.push(vec![0.0; n]),
        }
        shapes.push(shape);
    }
    let mut m = Machine {
        k,
        dims,
        shapes,
        data,
        env: vec![None; k.locals.len()],
        budget: opts.budget,
    };
    m.grid()?;
    let Machine { shapes, data, .. } = m;
    Ok(k.params
        .iter()
        .zip(shapes)
        .zip(data)
        .filter(|((p, _), _)| p.role == Role::Output)
        .map(|((p, shape), data)| Output {
            name: p.name.clone(),
            dtype: p.dtype,
            shape,
            data,
        })
        .collect())
}

struct Machine<'k> {
    k: &'k Kernel,
    dims: &'k [i64],
    /// Launch shape of every parameter.
    shapes: Vec<Vec<usize>>,
    /// Elements of every parameter (inputs as given, outputs as written).
    data: Vec<Vec<f64>>,
    env: Vec<Option<Val>>,
    budget: u64,
}

/// One resolved index item: `(start, len, kept)`.
#[derive(Clone, Copy, Debug)]
struct Sel {
    start: i64,
    len: usize,
    kept: bool,
}

/// Calls `f(out_index, src_offset_or_none)` for every element of the region
/// `sels` of a row-major array of `shape`, in row-major order of the region.
fn for_region(shape: &[usize], sels: &[Sel], mut f: impl FnMut(usize, Option<usize>)) {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let total: usize = sels.iter().map(|s| s.len).product();
    if total == 0 {
        return;
    }
    if rank == 0 {
        f(0, Some(0));
        return;
    }
    let inner = sels[rank - 1];
    let outer: usize = total / inner.len;
    let mut pos = vec![0usize; rank.saturating_sub(1)];
    let in_dim = |d: usize, c: i64| c >= 0 && (c as u64) < shape[d] as u64;
    let mut o = 0usize;
    for _ in 0..outer {
        // Offset of this outer position, or None when out of range.
        let mut base = Some(0usize);
        for d in 0..rank - 1 {
            let c = sels[d].start + pos[d] as i64;
            match base {
                Some(b) if in_dim(d, c) => base = Some(b + c as usize * strides[d]),
                _ => base = None,
            }
        }
        for t in 0..inner.len {
            let c = inner.start + t as i64;
            let at = match base {
                Some(b) if in_dim(rank - 1, c) => Some(b + c as usize),
                _ => None,
            };
            f(o, at);
            o += 1;
        }
        // Odometer over the outer dims.
        for d in (0..rank - 1).rev() {
            pos[d] += 1;
            if pos[d] < sels[d].len {
                break;
            }
            pos[d] = 0;
        }
    }
}

fn int(x: f64) -> i32 {
    x as i64 as i32
}

impl Machine<'_> {
    fn spend(&mut self, n: u64) -> Result<()> {
        if n > self.budget {
            return err(
                "the work budget ran out (a loop with too many iterations, or shapes too large to interpret)",
            );
        }
        self.budget -= n;
        Ok(())
    }

    fn grid(&mut self) -> Result<()> {
        let axes = &self.k.grid.axes;
        let mut ranges = Vec::new();
        for a in axes {
            let lo = self.scalar_int(a.lo)?;
            let hi = self.scalar_int(a.hi)?;
            ranges.push((a.var, lo, hi, a.step.max(1)));
        }
        self.axis(&ranges, 0)
    }

    fn axis(&mut self, ranges: &[(hir::LocalId, i64, i64, i64)], d: usize) -> Result<()> {
        if d == ranges.len() {
            let body = &self.k.grid.body;
            return self.block(body);
        }
        let (var, lo, hi, step) = ranges[d];
        let mut v = lo;
        while v < hi {
            self.spend(1)?;
            self.env[var.0 as usize] = Some(scalar(DType::I32, v as f64));
            self.axis(ranges, d + 1)?;
            v += step;
        }
        Ok(())
    }

    fn block(&mut self, b: &hir::Block) -> Result<()> {
        for s in &b.stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        match s {
            Stmt::Let { local, value }
            | Stmt::Var { local, init: value }
            | Stmt::Assign { local, value } => {
                let v = self.expr(*value)?;
                self.env[local.0 as usize] = Some(v);
            }
            Stmt::Store {
                param,
                index,
                value,
            } => {
                let sels = self.sels(index, &self.shapes[param.0 as usize].clone())?;
                let v = self.stored(*value)?;
                let p = param.0 as usize;
                let want: usize = sels.iter().filter(|s| s.kept).map(|s| s.len).product();
                if v.data.len() != want {
                    return err(format!(
                        "store of {} elements into a region of {want}",
                        v.data.len()
                    ));
                }
                let shape = std::mem::take(&mut self.shapes[p]);
                let dst = &mut self.data[p];
                for_region(&shape, &sels, |o, at| {
                    if let Some(at) = at {
                        dst[at] = v.data[o];
                    }
                });
                self.shapes[p] = shape;
            }
            Stmt::For {
                var,
                lo,
                hi,
                step,
                body,
            } => {
                let lo = self.scalar_int(*lo)?;
                let hi = self.scalar_int(*hi)?;
                let step = (*step).max(1);
                let mut v = lo;
                // The loop variable is an i32: it never passes i32::MAX.
                while v < hi && v <= i32::MAX as i64 {
                    self.spend(1)?;
                    self.env[var.0 as usize] = Some(scalar(DType::I32, v as f64));
                    self.block(body)?;
                    v += step;
                }
            }
        }
        Ok(())
    }

    /// The value a store writes, before its final rounding to a 16-bit
    /// output dtype: `out[b] = bf16(acc / l)` stores the exact `acc / l`
    /// (also under reshapes), so that the oracle's output is the exact value
    /// the kernel rounds, not a second rounding of it.
    fn stored(&mut self, id: ExprId) -> Result<Val> {
        let k = self.k;
        match &k.expr(id).kind {
            ExprKind::Cast { arg, to }
                if matches!(to, DType::Bf16 | DType::F16)
                    && k.expr(*arg).ty.dtype == DType::F32 =>
            {
                self.expr(*arg)
            }
            ExprKind::Reshape { arg, .. } if k.expr(id).ty.dtype.is_float() => {
                let a = self.stored(*arg)?;
                let n: usize = a.data.len();
                self.spend(n as u64)?;
                let e = k.expr(id);
                let shape =
                    e.ty.shape
                        .iter()
                        .map(|d| match d {
                            Dim::Const(n) => *n as usize,
                            Dim::Sym(id) => self.dims[id.0 as usize].max(0) as usize,
                        })
                        .collect();
                Ok(Rc::new(Tile {
                    dtype: a.dtype,
                    shape,
                    data: a.data.clone(),
                }))
            }
            _ => self.expr(id),
        }
    }

    fn scalar_int(&mut self, id: ExprId) -> Result<i64> {
        let v = self.expr(id)?;
        match v.data.as_slice() {
            [x] => Ok(*x as i64),
            _ => err(format!(
                "expected a scalar, got a tile of shape {:?}",
                v.shape
            )),
        }
    }

    fn sels(&mut self, items: &[IndexItem], shape: &[usize]) -> Result<Vec<Sel>> {
        if items.len() != shape.len() {
            return err(format!("{} indices for rank {}", items.len(), shape.len()));
        }
        items
            .iter()
            .zip(shape)
            .map(|(it, &d)| {
                Ok(match it {
                    IndexItem::Point(e) => Sel {
                        start: self.scalar_int(*e)?,
                        len: 1,
                        kept: false,
                    },
                    IndexItem::Range { start, len } => Sel {
                        start: self.scalar_int(*start)?,
                        len: *len as usize,
                        kept: true,
                    },
                    IndexItem::Full => Sel {
                        start: 0,
                        len: d,
                        kept: true,
                    },
                })
            })
            .collect()
    }

    fn gather(
        &mut self,
        src: &[f64],
        shape: &[usize],
        sels: &[Sel],
    ) -> Result<(Vec<usize>, Vec<f64>)> {
        let out_shape: Vec<usize> = sels.iter().filter(|s| s.kept).map(|s| s.len).collect();
        let n: usize = sels.iter().map(|s| s.len).product();
        self.spend(n as u64)?;
        let mut out = vec![0.0; n];
        for_region(shape, sels, |o, at| {
            if let Some(at) = at {
                out[o] = src[at];
            }
        });
        Ok((out_shape, out))
    }

    fn expr(&mut self, id: ExprId) -> Result<Val> {
        let k = self.k;
        let e = k
            .exprs
            .get(id.0 as usize)
            .ok_or_else(|| InterpError(format!("expr {} out of range", id.0)))?;
        let dt = e.ty.dtype;
        let shape: Vec<usize> =
            e.ty.shape
                .iter()
                .map(|d| match d {
                    Dim::Const(n) => *n as usize,
                    Dim::Sym(id) => self.dims[id.0 as usize].max(0) as usize,
                })
                .collect();
        let n: usize = shape.iter().product();
        let tile = |data: Vec<f64>| -> Result<Val> {
            Ok(Rc::new(Tile {
                dtype: dt,
                shape: shape.clone(),
                data,
            }))
        };
        // Every kind below produces `n` elements (matmul spends more).
        self.spend(n as u64)?;
        match &e.kind {
            ExprKind::FloatLit(x) => tile(vec![round_to(dt, *x); n]),
            ExprKind::IntLit(x) => tile(vec![round_to(dt, *x as f64); n]),
            ExprKind::ConstValue(c) => {
                let v = match k.konst(*c).value {
                    hir::ConstValue::Int(i) if dt == DType::I32 => int(i as f64) as f64,
                    v => round_to(dt, v.as_f64()),
                };
                tile(vec![v; n])
            }
            ExprKind::DimValue(d) => {
                let v = k.dim(*d).value.unwrap_or(self.dims[d.0 as usize]);
                tile(vec![v as f64; n])
            }
            ExprKind::Local(l) => self.env[l.0 as usize].clone().ok_or_else(|| {
                InterpError(format!(
                    "local `{}` read before it is bound",
                    k.local(*l).name
                ))
            }),
            ExprKind::Load { param, index } => {
                let p = param.0 as usize;
                let pshape = self.shapes[p].clone();
                let sels = self.sels(index, &pshape)?;
                let src = std::mem::take(&mut self.data[p]);
                let r = self.gather(&src, &pshape, &sels);
                self.data[p] = src;
                let (_, out) = r?;
                tile(out)
            }
            ExprKind::Slice { base, index } => {
                let b = self.expr(*base)?;
                let sels = self.sels(index, &b.shape)?;
                let (_, out) = self.gather(&b.data, &b.shape, &sels)?;
                tile(out)
            }
            ExprKind::Unary { op, arg } => {
                let a = self.expr(*arg)?;
                let f: fn(f64) -> f64 = match (op, dt) {
                    (UnaryOp::Neg, DType::I32) => |x| int(x).wrapping_neg() as f64,
                    (UnaryOp::Neg, _) => |x| -x,
                    (UnaryOp::Not, _) => |x| if x != 0.0 { 0.0 } else { 1.0 },
                };
                tile(a.data.iter().map(|&x| f(x)).collect())
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.expr(*lhs)?;
                let b = self.expr(*rhs)?;
                if a.data.len() != b.data.len() {
                    return err(format!(
                        "binary operands of shapes {:?} and {:?}",
                        a.shape, b.shape
                    ));
                }
                let f = binary(*op, dt);
                tile(
                    a.data
                        .iter()
                        .zip(&b.data)
                        .map(|(&x, &y)| round_to(dt, f(x, y)))
                        .collect(),
                )
            }
            ExprKind::Cmp { op, lhs, rhs } => {
                let a = self.expr(*lhs)?;
                let b = self.expr(*rhs)?;
                if a.data.len() != b.data.len() {
                    return err(format!("compared shapes {:?} and {:?}", a.shape, b.shape));
                }
                let f: fn(&f64, &f64) -> bool = match op {
                    CmpOp::Eq => |x, y| x == y,
                    CmpOp::Ne => |x, y| x != y,
                    CmpOp::Lt => |x, y| x < y,
                    CmpOp::Le => |x, y| x <= y,
                    CmpOp::Gt => |x, y| x > y,
                    CmpOp::Ge => |x, y| x >= y,
                };
                tile(
                    a.data
                        .iter()
                        .zip(&b.data)
                        .map(|(x, y)| f(x, y) as u8 as f64)
                        .collect(),
                )
            }
            ExprKind::Matmul { lhs, rhs } => {
                let a = self.expr(*lhs)?;
                // `x @ y^T` reads `y` as [N, K] directly.
                let bt = match k.expr(*rhs).kind {
                    ExprKind::Transpose(inner) => self.expr(inner)?,
                    _ => {
                        let b = self.expr(*rhs)?;
                        Rc::new(transpose(&b)?)
                    }
                };
                let (m, kk) = rows_cols(&a)?;
                let (nn, kb) = rows_cols(&bt)?;
                if kk != kb || m * nn != n {
                    return err(format!(
                        "matmul of {:?} by {:?}ᵀ into {:?}",
                        a.shape, bt.shape, shape
                    ));
                }
                self.spend((m * nn * kk) as u64)?;
                let mut out = vec![0.0; n];
                for i in 0..m {
                    let ar = &a.data[i * kk..(i + 1) * kk];
                    for j in 0..nn {
                        out[i * nn + j] = round_to(dt, dot(ar, &bt.data[j * kk..(j + 1) * kk]));
                    }
                }
                tile(out)
            }
            ExprKind::Transpose(a) => {
                let a = self.expr(*a)?;
                Ok(Rc::new(transpose(&a)?))
            }
            ExprKind::Math { f, arg } => {
                let a = self.expr(*arg)?;
                let f: fn(f64) -> f64 = match f {
                    MathFn::Exp => f64::exp,
                    MathFn::Exp2 => f64::exp2,
                    MathFn::Log => f64::ln,
                    MathFn::Log2 => f64::log2,
                    MathFn::Sqrt => f64::sqrt,
                    MathFn::Abs => f64::abs,
                };
                tile(a.data.iter().map(|&x| round_to(dt, f(x))).collect())
            }
            ExprKind::RowMax(a) | ExprKind::RowSum(a) => {
                let a = self.expr(*a)?;
                let cols = a.shape.last().copied().unwrap_or(1).max(1);
                let max = matches!(e.kind, ExprKind::RowMax(_));
                tile(
                    a.data
                        .chunks(cols)
                        .map(|r| {
                            let v = if max {
                                r.iter().copied().fold(f64::NEG_INFINITY, fmax)
                            } else {
                                r.iter().sum()
                            };
                            round_to(dt, v)
                        })
                        .collect(),
                )
            }
            ExprKind::Where { cond, then, else_ } => {
                let c = self.expr(*cond)?;
                let t = self.expr(*then)?;
                let f = self.expr(*else_)?;
                if c.data.len() != n || t.data.len() != n || f.data.len() != n {
                    return err("where of unequal shapes");
                }
                tile(
                    (0..n)
                        .map(|i| {
                            if c.data[i] != 0.0 {
                                t.data[i]
                            } else {
                                f.data[i]
                            }
                        })
                        .collect(),
                )
            }
            ExprKind::RowIndex { .. } | ExprKind::ColIndex { .. } => {
                let rank = shape.len();
                let axis = match e.kind {
                    ExprKind::RowIndex { .. } => rank.saturating_sub(2),
                    _ => rank.saturating_sub(1),
                };
                let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
                let len = shape.get(axis).copied().unwrap_or(1).max(1);
                tile((0..n).map(|i| ((i / inner) % len) as f64).collect())
            }
            ExprKind::Reshape { arg, .. } => {
                let a = self.expr(*arg)?;
                if a.data.len() != n {
                    return err("reshape changes the element count");
                }
                tile(a.data.clone())
            }
            ExprKind::Cast { arg, to } => {
                let a = self.expr(*arg)?;
                let from = a.dtype;
                let f = |x: f64| -> f64 {
                    match *to {
                        DType::I32 if from.is_float() => x as i32 as f64,
                        DType::Bool => (x != 0.0) as u8 as f64,
                        d => round_to(d, if d == DType::F32 { x as f32 as f64 } else { x }),
                    }
                };
                tile(a.data.iter().map(|&x| f(x)).collect())
            }
            ExprKind::Broadcast { arg, .. } => {
                let a = self.expr(*arg)?;
                let m = a.data.len().max(1);
                if !n.is_multiple_of(m) {
                    return err(format!("broadcast of {:?} to {:?}", a.shape, shape));
                }
                let inner = n / m;
                let mut out = Vec::with_capacity(n);
                for &x in &a.data {
                    out.extend(std::iter::repeat_n(x, inner));
                }
                tile(out)
            }
            ExprKind::Error => err("an erroneous expression reached the interpreter"),
        }
    }
}

fn scalar(dtype: DType, x: f64) -> Val {
    Rc::new(Tile {
        dtype,
        shape: Vec::new(),
        data: vec![x],
    })
}

fn rows_cols(t: &Tile) -> Result<(usize, usize)> {
    match t.shape.as_slice() {
        [r, c] => Ok((*r, *c)),
        s => err(format!("expected a rank-2 tile, got shape {s:?}")),
    }
}

fn transpose(t: &Tile) -> Result<Tile> {
    let (r, c) = rows_cols(t)?;
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data[i * c + j];
        }
    }
    Ok(Tile {
        dtype: t.dtype,
        shape: vec![c, r],
        data: out,
    })
}

/// A dot product with four partial sums (the products of two 16-bit
/// numbers are exact in f64; the sum's rounding is 2^-53 relative).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (a4, at) = a.split_at(a.len() / 4 * 4);
    let (b4, bt) = b.split_at(a4.len());
    for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        s[0] += x[0] * y[0];
        s[1] += x[1] * y[1];
        s[2] += x[2] * y[2];
        s[3] += x[3] * y[3];
    }
    let mut t = (s[0] + s[1]) + (s[2] + s[3]);
    for (x, y) in at.iter().zip(bt) {
        t += x * y;
    }
    t
}

fn binary(op: BinOp, dt: DType) -> fn(f64, f64) -> f64 {
    if dt == DType::I32 {
        return match op {
            BinOp::Add => |x, y| int(x).wrapping_add(int(y)) as f64,
            BinOp::Sub => |x, y| int(x).wrapping_sub(int(y)) as f64,
            BinOp::Mul => |x, y| int(x).wrapping_mul(int(y)) as f64,
            BinOp::Div => |x, y| {
                let (a, b) = (int(x), int(y));
                if b == 0 {
                    0.0
                } else {
                    a.wrapping_div(b) as f64
                }
            },
            BinOp::Rem => |x, y| {
                let (a, b) = (int(x), int(y));
                if b == 0 {
                    0.0
                } else {
                    a.wrapping_rem(b) as f64
                }
            },
            BinOp::Max => |x, y| x.max(y),
            BinOp::Min => |x, y| x.min(y),
            BinOp::And => |x, y| (x != 0.0 && y != 0.0) as u8 as f64,
            BinOp::Or => |x, y| (x != 0.0 || y != 0.0) as u8 as f64,
        };
    }
    match op {
        BinOp::Add => |x, y| x + y,
        BinOp::Sub => |x, y| x - y,
        BinOp::Mul => |x, y| x * y,
        BinOp::Div => |x, y| x / y,
        BinOp::Rem => |x, y| x % y,
        BinOp::Max => fmax,
        BinOp::Min => fmin,
        BinOp::And => |x, y| (x != 0.0 && y != 0.0) as u8 as f64,
        BinOp::Or => |x, y| (x != 0.0 || y != 0.0) as u8 as f64,
    }
}

#[cfg(test)]
mod tests;
