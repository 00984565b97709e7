//! Expression typing. Every implicit conversion becomes explicit here:
//! literals and consts are *weak* (untyped) until they meet a typed operand,
//! whose dtype they take (`materialize`); shapes meet through `unify`, which
//! inserts `Broadcast` nodes. An expression that failed is [`V::Err`] and
//! silences every error that would follow from it.

use super::hir::{
    self, BinOp, CmpOp, ConstId, ConstValue, DType, Dim, ExprId, ExprKind, MathFn, Type,
};
use super::{Checker, consts};
use crate::diag::{Code, Diagnostic};
use crate::syntax::Span;
use crate::syntax::ast;

/// A compile-time number that has no dtype yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weak {
    pub num: ConstValue,
    /// `Some` when it is exactly a const's name (kept as `ConstValue`).
    pub konst: Option<ConstId>,
    pub span: Span,
}

/// The result of checking an expression.
#[derive(Debug, Clone, Copy)]
pub(crate) enum V {
    /// Failed; already reported.
    Err,
    /// An untyped constant.
    Weak(Weak),
    /// A typed expr in the arena.
    Strong(ExprId),
}

/// The name of a type, for messages: `f32[128, 64]`.
pub(crate) fn show(ty: &Type, c: &Checker<'_>) -> String {
    if ty.shape.is_empty() {
        return ty.dtype.to_string();
    }
    let dims: Vec<String> = ty.shape.iter().map(|d| show_dim(*d, c)).collect();
    format!("{}[{}]", ty.dtype, dims.join(", "))
}

pub(crate) fn show_dim(d: Dim, c: &Checker<'_>) -> String {
    match d {
        Dim::Const(v) => v.to_string(),
        Dim::Sym(id) => c
            .dims
            .get(id.0 as usize)
            .map_or("?".into(), |d| d.name.clone()),
    }
}

/// The broadcast shape of `a` and `b`: equal, one empty, or one a prefix of
/// the other.
pub(crate) fn broadcast_shape(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    (long[..short.len()] == *short).then(|| long.to_vec())
}

impl Checker<'_> {
    pub(crate) fn push(&mut self, kind: ExprKind, ty: Type, span: Span) -> ExprId {
        let id = ExprId(self.exprs.len() as u32);
        self.exprs.push(hir::Expr { kind, ty, span });
        id
    }

    pub(crate) fn ty(&self, id: ExprId) -> &Type {
        &self.exprs[id.0 as usize].ty
    }

    pub(crate) fn span_of(&self, v: V) -> Span {
        match v {
            V::Err => Span::default(),
            V::Weak(w) => w.span,
            V::Strong(id) => self.exprs[id.0 as usize].span,
        }
    }

    /// A weak constant as a scalar of `dtype`; a float into `i32` or
    /// anything into `bool` is an error.
    pub(crate) fn materialize(&mut self, w: Weak, dtype: DType) -> Option<ExprId> {
        let bad = matches!(
            (w.num, dtype),
            (_, DType::Bool) | (ConstValue::Float(_), DType::I32)
        );
        if bad {
            let what = match w.num {
                ConstValue::Int(_) => "an integer constant",
                ConstValue::Float(_) => "a float constant",
            };
            self.error(
                Diagnostic::new(
                    Code::DtypeMismatch,
                    w.span,
                    format!("{what} cannot be used as `{dtype}`"),
                )
                .label(format!("expected `{dtype}` here")),
            );
            return None;
        }
        if let (ConstValue::Int(v), DType::I32) = (w.num, dtype)
            && i32::try_from(v).is_err()
        {
            self.error(
                Diagnostic::new(
                    Code::IntTooLarge,
                    w.span,
                    format!("integer constant {v} does not fit in `i32`"),
                )
                .label("indices and loop bounds are 32-bit"),
            );
            return None;
        }
        let kind = match (w.konst, w.num) {
            (Some(id), _) => ExprKind::ConstValue(id),
            (None, ConstValue::Int(v)) if dtype == DType::I32 => ExprKind::IntLit(v),
            (None, n) => ExprKind::FloatLit(n.as_f64()),
        };
        Some(self.push(kind, Type::scalar(dtype), w.span))
    }

    fn default_dtype(w: &Weak) -> DType {
        match w.num {
            ConstValue::Int(_) => DType::I32,
            ConstValue::Float(_) => DType::F32,
        }
    }

    /// Any value as a typed expr (weak constants take their default dtype).
    pub(crate) fn strong(&mut self, v: V) -> Option<ExprId> {
        match v {
            V::Err => None,
            V::Weak(w) => self.materialize(w, Self::default_dtype(&w)),
            V::Strong(id) => Some(id),
        }
    }

    /// `id` repeated to `shape` (a no-op when the shape already matches).
    pub(crate) fn broadcast(&mut self, id: ExprId, shape: &[Dim]) -> ExprId {
        if self.ty(id).shape == shape {
            return id;
        }
        let ty = Type {
            dtype: self.ty(id).dtype,
            shape: shape.to_vec(),
        };
        let span = self.exprs[id.0 as usize].span;
        self.push(
            ExprKind::Broadcast {
                arg: id,
                to: shape.to_vec(),
            },
            ty,
            span,
        )
    }

    /// Converts `v` to exactly `want` (a declared type, an output region):
    /// weak constants take its dtype; shapes broadcast; dtypes must match.
    pub(crate) fn coerce(&mut self, v: V, want: &Type, ctx: Span, what: &str) -> Option<ExprId> {
        let id = match v {
            V::Err => return None,
            V::Weak(w) => self.materialize(w, want.dtype)?,
            V::Strong(id) => id,
        };
        let got = self.ty(id).clone();
        if got.dtype != want.dtype {
            let msg = format!(
                "{what} has dtype `{}`, expected `{}`",
                got.dtype, want.dtype
            );
            let d = Diagnostic::new(Code::DtypeMismatch, self.exprs[id.0 as usize].span, msg)
                .label(format!("this is `{}`", show(&got, self)))
                .secondary(ctx, format!("expects `{}`", show(want, self)))
                .note(format!("convert explicitly, e.g. `{}(…)`", want.dtype));
            self.error(d);
            return None;
        }
        match broadcast_shape(&got.shape, &want.shape) {
            Some(s) if s == want.shape => Some(self.broadcast(id, &want.shape)),
            _ => {
                let msg = format!(
                    "{what} has shape `{}`, expected `{}`",
                    show(&got, self),
                    show(want, self)
                );
                let d = Diagnostic::new(Code::ShapeMismatch, self.exprs[id.0 as usize].span, msg)
                    .label(format!("this is `{}`", show(&got, self)))
                    .secondary(ctx, format!("expects `{}`", show(want, self)));
                self.error(d);
                None
            }
        }
    }

    /// Brings two operands to one type: dtypes must agree (weak constants
    /// adopt the other's), shapes broadcast.
    pub(crate) fn unify(
        &mut self,
        a: V,
        b: V,
        op_span: Span,
        op: &str,
    ) -> Option<(ExprId, ExprId)> {
        let (a, b) = match (a, b) {
            (V::Err, _) | (_, V::Err) => return None,
            (V::Weak(x), V::Weak(y)) => {
                let dt = if matches!(x.num, ConstValue::Float(_))
                    || matches!(y.num, ConstValue::Float(_))
                {
                    DType::F32
                } else {
                    DType::I32
                };
                (self.materialize(x, dt)?, self.materialize(y, dt)?)
            }
            (V::Weak(x), V::Strong(y)) => (self.materialize(x, self.ty(y).dtype)?, y),
            (V::Strong(x), V::Weak(y)) => (x, self.materialize(y, self.ty(x).dtype)?),
            (V::Strong(x), V::Strong(y)) => (x, y),
        };
        let (ta, tb) = (self.ty(a).clone(), self.ty(b).clone());
        if ta.dtype != tb.dtype {
            let d = Diagnostic::new(
                Code::DtypeMismatch,
                op_span,
                format!(
                    "`{op}` on different dtypes: `{}` and `{}`",
                    ta.dtype, tb.dtype
                ),
            )
            .label("operands must have one dtype")
            .secondary(
                self.exprs[a.0 as usize].span,
                format!("`{}`", show(&ta, self)),
            )
            .secondary(
                self.exprs[b.0 as usize].span,
                format!("`{}`", show(&tb, self)),
            )
            .note("there are no implicit conversions; use `bf16(…)`, `f32(…)`, …");
            self.error(d);
            return None;
        }
        let Some(shape) = broadcast_shape(&ta.shape, &tb.shape) else {
            let d = Diagnostic::new(Code::ShapeMismatch, op_span, format!("shapes `{}` and `{}` do not broadcast", show(&ta, self), show(&tb, self)))
                .label(format!("in this `{op}`"))
                .secondary(self.exprs[a.0 as usize].span, format!("`{}`", show(&ta, self)))
                .secondary(self.exprs[b.0 as usize].span, format!("`{}`", show(&tb, self)))
                .note("shapes broadcast when equal, when one is a scalar, or when one is a leading part of the other");
            self.error(d);
            return None;
        };
        Some((self.broadcast(a, &shape), self.broadcast(b, &shape)))
    }

    /// Checks an expression.
    pub(crate) fn expr(&mut self, e: &ast::Expr) -> V {
        match &e.kind {
            ast::ExprKind::Int(v) => V::Weak(Weak {
                num: ConstValue::Int(*v),
                konst: None,
                span: e.span,
            }),
            ast::ExprKind::Float(v) => V::Weak(Weak {
                num: ConstValue::Float(*v),
                konst: None,
                span: e.span,
            }),
            ast::ExprKind::Name(n) => self.name(n, e.span),
            ast::ExprKind::Unary(op, a) => {
                let a = self.expr(a);
                self.unary(*op, a, e.span)
            }
            ast::ExprKind::Binary(op, a, b) => {
                let (x, y) = (self.expr(a), self.expr(b));
                self.binary(*op, x, y, e.span)
            }
            ast::ExprKind::Index(base, items) => self.index_expr(base, items, e.span),
            ast::ExprKind::Transpose(a) => {
                let a = self.expr(a);
                let Some(id) = self.strong(a) else {
                    return V::Err;
                };
                let ty = self.ty(id).clone();
                if ty.shape.len() != 2 {
                    self.error(
                        Diagnostic::new(
                            Code::BadRank,
                            e.span,
                            format!("`^T` needs a rank-2 tile, found `{}`", show(&ty, self)),
                        )
                        .label("transposed here"),
                    );
                    return V::Err;
                }
                let out = Type {
                    dtype: ty.dtype,
                    shape: vec![ty.shape[1], ty.shape[0]],
                };
                V::Strong(self.push(ExprKind::Transpose(id), out, e.span))
            }
            ast::ExprKind::Call(f, args) => self.call(f, args, e.span),
        }
    }

    fn name(&mut self, n: &str, span: Span) -> V {
        if let Some(id) = self.lookup_local(n) {
            if self.local_err[id.0 as usize] {
                return V::Err;
            }
            let ty = self.locals[id.0 as usize].ty.clone();
            return V::Strong(self.push(ExprKind::Local(id), ty, span));
        }
        if let Some(&pid) = self.param_names.get(n) {
            return self.load(pid, &[], span, span);
        }
        if let Some(&id) = self.const_names.get(n) {
            if !self.const_ok[id.0 as usize] {
                return V::Err;
            }
            return V::Weak(Weak {
                num: self.consts[id.0 as usize].value,
                konst: Some(id),
                span,
            });
        }
        if let Some(&id) = self.dim_names.get(n) {
            return match self.dims[id.0 as usize].value {
                Some(v) => V::Weak(Weak {
                    num: ConstValue::Int(v),
                    konst: None,
                    span,
                }),
                None => {
                    V::Strong(self.push(ExprKind::DimValue(id), Type::scalar(DType::I32), span))
                }
            };
        }
        self.error(
            Diagnostic::new(Code::UnknownName, span, format!("unknown name `{n}`"))
                .label("not found in this scope"),
        );
        V::Err
    }

    fn unary(&mut self, op: ast::UnaryOp, a: V, span: Span) -> V {
        match (op, a) {
            (_, V::Err) => V::Err,
            (ast::UnaryOp::Neg, V::Weak(w)) => match w.num {
                ConstValue::Int(v) => match v.checked_neg() {
                    Some(v) => V::Weak(Weak {
                        num: ConstValue::Int(v),
                        konst: None,
                        span,
                    }),
                    None => {
                        self.error(
                            Diagnostic::new(
                                Code::ConstEval,
                                span,
                                "integer overflow in a constant",
                            )
                            .label("here"),
                        );
                        V::Err
                    }
                },
                ConstValue::Float(v) => V::Weak(Weak {
                    num: ConstValue::Float(-v),
                    konst: None,
                    span,
                }),
            },
            (_, a) => {
                let Some(id) = self.strong(a) else {
                    return V::Err;
                };
                let ty = self.ty(id).clone();
                let (hop, ok, sym) = match op {
                    ast::UnaryOp::Neg => (hir::UnaryOp::Neg, ty.dtype.is_numeric(), "-"),
                    ast::UnaryOp::Not => (hir::UnaryOp::Not, ty.dtype == DType::Bool, "!"),
                };
                if !ok {
                    self.error(
                        Diagnostic::new(
                            Code::BadOperandDtype,
                            span,
                            format!("unary `{sym}` is not defined on `{}`", ty.dtype),
                        )
                        .label(format!("operand is `{}`", show(&ty, self))),
                    );
                    return V::Err;
                }
                V::Strong(self.push(ExprKind::Unary { op: hop, arg: id }, ty, span))
            }
        }
    }

    pub(crate) fn binary(&mut self, op: ast::BinOp, a: V, b: V, span: Span) -> V {
        use ast::BinOp as A;
        if let (V::Weak(x), V::Weak(y)) = (a, b)
            && matches!(op, A::Add | A::Sub | A::Mul | A::Div | A::Rem)
        {
            return match consts::binary(op, x.num, y.num, span) {
                Ok(num) => V::Weak(Weak {
                    num,
                    konst: None,
                    span,
                }),
                Err(d) => {
                    self.error(d);
                    V::Err
                }
            };
        }
        let sym = op.symbol();
        match op {
            A::Matmul => self.matmul(a, b, span),
            A::Add | A::Sub | A::Mul | A::Div | A::Rem => {
                let hop = match op {
                    A::Add => BinOp::Add,
                    A::Sub => BinOp::Sub,
                    A::Mul => BinOp::Mul,
                    A::Div => BinOp::Div,
                    _ => BinOp::Rem,
                };
                self.elementwise(hop, a, b, span, sym)
            }
            A::And | A::Or => {
                let hop = if op == A::And { BinOp::And } else { BinOp::Or };
                self.elementwise(hop, a, b, span, sym)
            }
            A::Eq | A::Ne | A::Lt | A::Le | A::Gt | A::Ge => {
                let cop = match op {
                    A::Eq => CmpOp::Eq,
                    A::Ne => CmpOp::Ne,
                    A::Lt => CmpOp::Lt,
                    A::Le => CmpOp::Le,
                    A::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let Some((x, y)) = self.unify(a, b, span, sym) else {
                    return V::Err;
                };
                let ty = self.ty(x).clone();
                if !ty.dtype.is_numeric() {
                    self.error(
                        Diagnostic::new(
                            Code::BadOperandDtype,
                            span,
                            format!("`{sym}` compares numbers, not `{}`", ty.dtype),
                        )
                        .label(format!("operands are `{}`", show(&ty, self))),
                    );
                    return V::Err;
                }
                let out = Type {
                    dtype: DType::Bool,
                    shape: ty.shape,
                };
                V::Strong(self.push(
                    ExprKind::Cmp {
                        op: cop,
                        lhs: x,
                        rhs: y,
                    },
                    out,
                    span,
                ))
            }
        }
    }

    /// An element-wise op after `unify`, with its dtype rule.
    pub(crate) fn elementwise(&mut self, op: BinOp, a: V, b: V, span: Span, sym: &str) -> V {
        let Some((x, y)) = self.unify(a, b, span, sym) else {
            return V::Err;
        };
        let ty = self.ty(x).clone();
        let (ok, want) = match op {
            BinOp::And | BinOp::Or => (ty.dtype == DType::Bool, "`bool` masks"),
            BinOp::Rem => (ty.dtype == DType::I32, "`i32`"),
            _ => (ty.dtype.is_numeric(), "numbers"),
        };
        if !ok {
            self.error(
                Diagnostic::new(
                    Code::BadOperandDtype,
                    span,
                    format!("`{sym}` is not defined on `{}`", ty.dtype),
                )
                .label(format!(
                    "operands are `{}`; `{sym}` takes {want}",
                    show(&ty, self)
                )),
            );
            return V::Err;
        }
        if matches!(op, BinOp::Div | BinOp::Rem) && ty.dtype == DType::I32 && self.provably_zero(y)
        {
            let what = if op == BinOp::Div {
                "integer division"
            } else {
                "integer remainder"
            };
            self.error(
                Diagnostic::new(Code::ConstEval, span, format!("{what} by zero"))
                    .label("the divisor is always 0")
                    .secondary(self.exprs[y.0 as usize].span, "this is 0"),
            );
            return V::Err;
        }
        V::Strong(self.push(ExprKind::Binary { op, lhs: x, rhs: y }, ty, span))
    }

    /// True when the i32 expr `id` is 0 whatever the loop variables are (a
    /// constant 0, `B - B`, `j - j`, or a broadcast of one).
    fn provably_zero(&self, mut id: ExprId) -> bool {
        while let ExprKind::Broadcast { arg, .. } = &self.exprs[id.0 as usize].kind {
            id = *arg;
        }
        self.poly(id, 0).and_then(|p| p.as_constant()) == Some(0)
    }

    fn matmul(&mut self, a: V, b: V, span: Span) -> V {
        let (x, y) = match (a, b) {
            (V::Err, _) | (_, V::Err) => return V::Err,
            (V::Strong(x), V::Strong(y)) => (x, y),
            (V::Weak(w), _) | (_, V::Weak(w)) => {
                self.error(
                    Diagnostic::new(
                        Code::MatmulOperand,
                        w.span,
                        "`@` multiplies tiles, not a scalar constant",
                    )
                    .label("scalar"),
                );
                return V::Err;
            }
        };
        let (tx, ty) = (self.ty(x).clone(), self.ty(y).clone());
        for (t, id) in [(&tx, x), (&ty, y)] {
            if t.shape.len() != 2 || !matches!(t.dtype, DType::Bf16 | DType::F16) {
                let d = Diagnostic::new(
                    Code::MatmulOperand,
                    self.exprs[id.0 as usize].span,
                    format!("`@` operand is `{}`", show(t, self)),
                )
                .label("expected a rank-2 `bf16` or `f16` tile")
                .secondary(span, "in this matmul")
                .note(
                    "the Cube multiplies bf16/f16 and accumulates in f32; convert with `bf16(…)`",
                );
                self.error(d);
                return V::Err;
            }
        }
        if tx.dtype != ty.dtype {
            let d = Diagnostic::new(
                Code::MatmulOperand,
                span,
                format!(
                    "`@` operands differ in dtype: `{}` and `{}`",
                    tx.dtype, ty.dtype
                ),
            )
            .label("both operands must be bf16 or both f16");
            self.error(d);
            return V::Err;
        }
        if tx.shape[1] != ty.shape[0] {
            let d = Diagnostic::new(
                Code::MatmulInnerDim,
                span,
                format!(
                    "matmul inner dims differ: `{}` @ `{}`",
                    show(&tx, self),
                    show(&ty, self)
                ),
            )
            .label(format!(
                "{} columns against {} rows",
                show_dim(tx.shape[1], self),
                show_dim(ty.shape[0], self)
            ))
            .note("`[M, K] @ [K, N]` needs the same K; transpose with `^T`?");
            self.error(d);
            return V::Err;
        }
        let out = Type {
            dtype: DType::F32,
            shape: vec![tx.shape[0], ty.shape[1]],
        };
        V::Strong(self.push(ExprKind::Matmul { lhs: x, rhs: y }, out, span))
    }

    fn arity(&mut self, f: &ast::Ident, args: &[ast::Expr], n: usize, span: Span) -> bool {
        if args.len() == n {
            return true;
        }
        self.error(
            Diagnostic::new(
                Code::WrongArity,
                span,
                format!(
                    "`{}` takes {n} argument{}, found {}",
                    f.name,
                    if n == 1 { "" } else { "s" },
                    args.len()
                ),
            )
            .label(format!(
                "{} argument{} given",
                args.len(),
                if args.len() == 1 { "" } else { "s" }
            )),
        );
        false
    }

    fn call(&mut self, f: &ast::Ident, args: &[ast::Expr], span: Span) -> V {
        let math = match f.name.as_str() {
            "exp" => Some(MathFn::Exp),
            "exp2" => Some(MathFn::Exp2),
            "log" => Some(MathFn::Log),
            "log2" => Some(MathFn::Log2),
            "sqrt" => Some(MathFn::Sqrt),
            "abs" => Some(MathFn::Abs),
            _ => None,
        };
        let known = math.is_some()
            || matches!(
                f.name.as_str(),
                "max"
                    | "min"
                    | "rowmax"
                    | "rowsum"
                    | "where"
                    | "row_index"
                    | "col_index"
                    | "reshape"
                    | "bf16"
                    | "f16"
                    | "f32"
                    | "i32"
            );
        if !known {
            self.error(
                Diagnostic::new(Code::UnknownFunction, f.span, format!("unknown function `{}`", f.name))
                    .label("not a built-in")
                    .note("built-ins: exp exp2 log log2 sqrt abs max min rowmax rowsum where row_index col_index reshape bf16 f16 f32 i32"),
            );
            return V::Err;
        }
        if f.name == "reshape" {
            return self.reshape(f, args, span);
        }
        let vals: Vec<V> = args.iter().map(|a| self.expr(a)).collect();
        let want = match f.name.as_str() {
            "max" | "min" => 2,
            "where" => 3,
            _ => 1,
        };
        if !self.arity(f, args, want, span) || vals.iter().any(|v| matches!(v, V::Err)) {
            return V::Err;
        }
        if let Some(m) = math {
            return self.math(m, vals[0], f, span);
        }
        match f.name.as_str() {
            "max" => self.elementwise(BinOp::Max, vals[0], vals[1], span, "max"),
            "min" => self.elementwise(BinOp::Min, vals[0], vals[1], span, "min"),
            "rowmax" | "rowsum" => {
                let Some(id) = self.strong(vals[0]) else {
                    return V::Err;
                };
                let ty = self.ty(id).clone();
                if ty.shape.len() != 2 || !ty.dtype.is_numeric() {
                    self.error(
                        Diagnostic::new(
                            Code::BadRank,
                            span,
                            format!(
                                "`{}` needs a rank-2 numeric tile, found `{}`",
                                f.name,
                                show(&ty, self)
                            ),
                        )
                        .label("reduces `[R, C]` to `[R]`"),
                    );
                    return V::Err;
                }
                let out = Type {
                    dtype: ty.dtype,
                    shape: vec![ty.shape[0]],
                };
                let kind = if f.name == "rowmax" {
                    ExprKind::RowMax(id)
                } else {
                    ExprKind::RowSum(id)
                };
                V::Strong(self.push(kind, out, span))
            }
            "row_index" | "col_index" => {
                let Some(id) = self.strong(vals[0]) else {
                    return V::Err;
                };
                let ty = self.ty(id).clone();
                if ty.shape.len() != 2 {
                    self.error(
                        Diagnostic::new(
                            Code::BadRank,
                            span,
                            format!(
                                "`{}` needs a rank-2 tile, found `{}`",
                                f.name,
                                show(&ty, self)
                            ),
                        )
                        .label("gives an `i32` tile of its argument's shape"),
                    );
                    return V::Err;
                }
                let shape = ty.shape.clone();
                let kind = if f.name == "row_index" {
                    ExprKind::RowIndex {
                        shape: shape.clone(),
                    }
                } else {
                    ExprKind::ColIndex {
                        shape: shape.clone(),
                    }
                };
                V::Strong(self.push(
                    kind,
                    Type {
                        dtype: DType::I32,
                        shape,
                    },
                    span,
                ))
            }
            "where" => self.where_(vals[0], vals[1], vals[2], span),
            name => match DType::from_name(name) {
                Some(to) => self.cast(vals[0], to, span),
                None => V::Err,
            },
        }
    }

    fn math(&mut self, m: MathFn, a: V, f: &ast::Ident, span: Span) -> V {
        if let V::Weak(w) = a {
            let x = w.num.as_f64();
            let v = match m {
                MathFn::Exp => x.exp(),
                MathFn::Exp2 => x.exp2(),
                MathFn::Log => x.ln(),
                MathFn::Log2 => x.log2(),
                MathFn::Sqrt => x.sqrt(),
                MathFn::Abs => x.abs(),
            };
            if let Err(d) = consts::finite_fold(x, v, span, &format!("`{}`", f.name)) {
                self.error(d);
                return V::Err;
            }
            return V::Weak(Weak {
                num: ConstValue::Float(v),
                konst: None,
                span,
            });
        }
        let Some(id) = self.strong(a) else {
            return V::Err;
        };
        let ty = self.ty(id).clone();
        if !ty.dtype.is_float() {
            self.error(
                Diagnostic::new(
                    Code::BadOperandDtype,
                    span,
                    format!(
                        "`{}` needs a float operand, found `{}`",
                        f.name,
                        show(&ty, self)
                    ),
                )
                .label("bf16, f16 or f32 expected")
                .note("convert with `f32(…)`"),
            );
            return V::Err;
        }
        V::Strong(self.push(ExprKind::Math { f: m, arg: id }, ty, span))
    }

    fn where_(&mut self, c: V, a: V, b: V, span: Span) -> V {
        let cond = match c {
            V::Strong(id) if self.ty(id).dtype == DType::Bool => id,
            V::Err => return V::Err,
            other => {
                let shown = match other {
                    V::Strong(id) => show(&self.ty(id).clone(), self),
                    _ => "a constant".into(),
                };
                let d = Diagnostic::new(
                    Code::WhereCondition,
                    self.span_of(other),
                    "`where` condition must be a `bool` mask",
                )
                .label(format!("this is {shown}"))
                .note("make a mask with a comparison, e.g. `col_index(s) < N`");
                self.error(d);
                return V::Err;
            }
        };
        let Some((x, y)) = self.unify(a, b, span, "where") else {
            return V::Err;
        };
        let ty = self.ty(x).clone();
        let ct = self.ty(cond).clone();
        let Some(shape) = broadcast_shape(&ct.shape, &ty.shape) else {
            let d = Diagnostic::new(
                Code::ShapeMismatch,
                span,
                format!(
                    "`where` mask `{}` does not broadcast with values `{}`",
                    show(&ct, self),
                    show(&ty, self)
                ),
            )
            .label("in this `where`");
            self.error(d);
            return V::Err;
        };
        let (cond, x, y) = (
            self.broadcast(cond, &shape),
            self.broadcast(x, &shape),
            self.broadcast(y, &shape),
        );
        let out = Type {
            dtype: ty.dtype,
            shape,
        };
        V::Strong(self.push(
            ExprKind::Where {
                cond,
                then: x,
                else_: y,
            },
            out,
            span,
        ))
    }

    fn cast(&mut self, a: V, to: DType, span: Span) -> V {
        match a {
            V::Err => V::Err,
            V::Weak(w) => {
                // Converting a constant is choosing its dtype.
                let w = match (w.num, to) {
                    (ConstValue::Float(f), DType::I32) if f.is_finite() && f.abs() < 2.0e9 => {
                        Weak {
                            num: ConstValue::Int(f.trunc() as i64),
                            konst: None,
                            span,
                        }
                    }
                    _ => Weak { span, ..w },
                };
                self.materialize(w, to).map_or(V::Err, V::Strong)
            }
            V::Strong(id) => {
                let ty = self.ty(id).clone();
                if ty.dtype == to {
                    return V::Strong(id);
                }
                let out = Type {
                    dtype: to,
                    shape: ty.shape,
                };
                V::Strong(self.push(ExprKind::Cast { arg: id, to }, out, span))
            }
        }
    }

    fn reshape(&mut self, f: &ast::Ident, args: &[ast::Expr], span: Span) -> V {
        let Some((first, dims)) = args.split_first().filter(|(_, d)| !d.is_empty()) else {
            self.error(
                Diagnostic::new(
                    Code::WrongArity,
                    span,
                    format!(
                        "`reshape` takes a tile and at least one dim, found {} argument(s)",
                        args.len()
                    ),
                )
                .label("e.g. `reshape(x, 4, 64)`"),
            );
            return V::Err;
        };
        let _ = f;
        let v = self.expr(first);
        let mut shape = Vec::new();
        let mut ok = true;
        for d in dims {
            match self.const_positive(d, Code::UnboundTileDim, "a reshape dim") {
                Some(v) => shape.push(Dim::Const(v)),
                None => ok = false,
            }
        }
        let Some(id) = self.strong(v) else {
            return V::Err;
        };
        if !ok {
            return V::Err;
        }
        let ty = self.ty(id).clone();
        let count = |s: &[Dim]| {
            s.iter().try_fold(1u64, |acc, d| match d {
                Dim::Const(v) => acc.checked_mul(*v),
                Dim::Sym(_) => None,
            })
        };
        let (from, to) = (count(&ty.shape), count(&shape));
        if from.is_none() || from != to {
            let out = Type {
                dtype: ty.dtype,
                shape,
            };
            let d = Diagnostic::new(
                Code::ReshapeCount,
                span,
                format!(
                    "`reshape` from `{}` to `{}` changes the element count",
                    show(&ty, self),
                    show(&out, self)
                ),
            )
            .label(format!(
                "{} elements into {}",
                from.map_or("?".into(), |v| v.to_string()),
                to.map_or("?".into(), |v| v.to_string())
            ));
            self.error(d);
            return V::Err;
        }
        let out = Type {
            dtype: ty.dtype,
            shape: shape.clone(),
        };
        V::Strong(self.push(ExprKind::Reshape { arg: id, shape }, out, span))
    }
}
