//! [`Kernel::verify`]: checks the invariants documented in [`super::hir`] on
//! a kernel. Every kernel `check` returns is meant to pass: the tests verify
//! the examples' kernels, and the fuzz test every input that checks clean.
//! Lowering may call it to catch a checker bug early.

use super::hir::*;

type R = Result<(), String>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> R {
    if ok { Ok(()) } else { Err(what()) }
}

impl Kernel {
    /// Verifies the HIR invariants; the error names the first violation.
    pub fn verify(&self) -> R {
        ensure(!self.grid.axes.is_empty(), || "grid without axes".into())?;
        for a in &self.grid.axes {
            self.local_kind(a.var, LocalKind::ParallelVar)?;
            self.i32_scalar(a.lo)?;
            self.i32_scalar(a.hi)?;
            ensure(a.step > 0, || "axis step not positive".into())?;
        }
        self.verify_block(&self.grid.body)
    }

    fn get(&self, id: ExprId) -> Result<&Expr, String> {
        self.exprs
            .get(id.0 as usize)
            .ok_or_else(|| format!("expr {} out of range", id.0))
    }

    fn local_kind(&self, id: LocalId, kind: LocalKind) -> R {
        let l = self
            .locals
            .get(id.0 as usize)
            .ok_or_else(|| format!("local {} out of range", id.0))?;
        ensure(l.kind == kind, || {
            format!("local `{}` is {:?}, expected {kind:?}", l.name, l.kind)
        })
    }

    fn i32_scalar(&self, id: ExprId) -> R {
        self.verify_expr(id)?;
        let t = &self.get(id)?.ty;
        ensure(*t == Type::scalar(DType::I32), || {
            format!("expr {} is not an i32 scalar", id.0)
        })
    }

    fn verify_block(&self, b: &Block) -> R {
        for s in &b.stmts {
            match s {
                Stmt::Let { local, value }
                | Stmt::Var { local, init: value }
                | Stmt::Assign { local, value } => {
                    let want = match s {
                        Stmt::Let { .. } => LocalKind::Let,
                        _ => LocalKind::Var,
                    };
                    self.local_kind(*local, want)?;
                    self.verify_expr(*value)?;
                    let lt = &self.locals[local.0 as usize].ty;
                    ensure(self.get(*value)?.ty == *lt, || {
                        format!(
                            "value of `{}` has another type",
                            self.locals[local.0 as usize].name
                        )
                    })?;
                    self.const_shape(lt)?;
                }
                Stmt::Store {
                    param,
                    index,
                    value,
                } => {
                    let p = self
                        .params
                        .get(param.0 as usize)
                        .ok_or("param out of range")?;
                    ensure(p.role == Role::Output, || {
                        format!("store into input `{}`", p.name)
                    })?;
                    let kept = self.verify_index(index, &p.shape)?;
                    self.verify_expr(*value)?;
                    let want = Type {
                        dtype: p.dtype,
                        shape: kept,
                    };
                    ensure(self.get(*value)?.ty == want, || {
                        format!("store into `{}` of another type", p.name)
                    })?;
                }
                Stmt::For {
                    var,
                    lo,
                    hi,
                    step,
                    body,
                } => {
                    self.local_kind(*var, LocalKind::LoopVar)?;
                    self.i32_scalar(*lo)?;
                    self.i32_scalar(*hi)?;
                    ensure(*step > 0, || "for step not positive".into())?;
                    self.verify_block(body)?;
                }
            }
        }
        Ok(())
    }

    fn const_shape(&self, t: &Type) -> R {
        ensure(t.shape.iter().all(|d| matches!(d, Dim::Const(_))), || {
            "tile shape with an open dim".into()
        })
    }

    /// Checks an index list against `shape`; returns the kept dims.
    fn verify_index(&self, index: &[IndexItem], shape: &[Dim]) -> Result<Vec<Dim>, String> {
        ensure(index.len() == shape.len(), || {
            format!("{} indices for rank {}", index.len(), shape.len())
        })?;
        let mut kept = Vec::new();
        for (i, d) in index.iter().zip(shape) {
            match i {
                IndexItem::Point(e) => self.i32_scalar(*e)?,
                IndexItem::Range { start, len } => {
                    self.i32_scalar(*start)?;
                    ensure(*len > 0, || "empty range".into())?;
                    kept.push(Dim::Const(*len));
                }
                IndexItem::Full => kept.push(*d),
            }
        }
        Ok(kept)
    }

    /// Verifies the tree under `id`. Recursion is bounded by the checker's
    /// depth limits.
    fn verify_expr(&self, id: ExprId) -> R {
        let e = self.get(id)?;
        let ty = &e.ty;
        self.const_shape(ty)?;
        let same = |a: ExprId, what: &str| -> R {
            self.verify_expr(a)?;
            ensure(self.get(a)?.ty == *ty, || {
                format!("{what}: operand type differs from result (expr {})", id.0)
            })
        };
        match &e.kind {
            ExprKind::FloatLit(_) => ensure(ty.is_scalar() && ty.dtype.is_float(), || {
                "float literal type".into()
            }),
            ExprKind::IntLit(v) => ensure(
                *ty == Type::scalar(DType::I32) && i32::try_from(*v).is_ok(),
                || "int literal type".into(),
            ),
            ExprKind::Local(l) => {
                let local = self.locals.get(l.0 as usize).ok_or("local out of range")?;
                ensure(local.ty == *ty, || "local read type".into())
            }
            ExprKind::DimValue(d) => {
                let dim = self.dims.get(d.0 as usize).ok_or("dim out of range")?;
                ensure(
                    dim.value.is_none() && *ty == Type::scalar(DType::I32),
                    || "dim value".into(),
                )
            }
            ExprKind::ConstValue(c) => {
                ensure((c.0 as usize) < self.consts.len(), || {
                    "const out of range".into()
                })?;
                ensure(ty.is_scalar() && ty.dtype != DType::Bool, || {
                    "const type".into()
                })
            }
            ExprKind::Load { param, index } => {
                let p = self
                    .params
                    .get(param.0 as usize)
                    .ok_or("param out of range")?;
                ensure(p.role == Role::Input, || {
                    format!("load of output `{}`", p.name)
                })?;
                let kept = self.verify_index(index, &p.shape)?;
                ensure(
                    *ty == Type {
                        dtype: p.dtype,
                        shape: kept,
                    },
                    || "load type".into(),
                )
            }
            ExprKind::Slice { base, index } => {
                self.verify_expr(*base)?;
                let b = &self.get(*base)?.ty;
                let kept = self.verify_index(index, &b.shape)?;
                ensure(
                    *ty == Type {
                        dtype: b.dtype,
                        shape: kept,
                    },
                    || "slice type".into(),
                )
            }
            ExprKind::Unary { op, arg } => {
                same(*arg, "unary")?;
                ensure((*op == UnaryOp::Not) == (ty.dtype == DType::Bool), || {
                    "unary dtype".into()
                })
            }
            ExprKind::Binary { op, lhs, rhs } => {
                same(*lhs, "binary lhs")?;
                same(*rhs, "binary rhs")?;
                let ok = match op {
                    BinOp::And | BinOp::Or => ty.dtype == DType::Bool,
                    BinOp::Rem => ty.dtype == DType::I32,
                    _ => ty.dtype.is_numeric(),
                };
                ensure(ok, || format!("{op:?} on {}", ty.dtype))
            }
            ExprKind::Cmp { lhs, rhs, .. } => {
                self.verify_expr(*lhs)?;
                self.verify_expr(*rhs)?;
                let (a, b) = (&self.get(*lhs)?.ty, &self.get(*rhs)?.ty);
                ensure(a == b && a.dtype.is_numeric(), || "cmp operands".into())?;
                ensure(
                    *ty == Type {
                        dtype: DType::Bool,
                        shape: a.shape.clone(),
                    },
                    || "cmp result".into(),
                )
            }
            ExprKind::Matmul { lhs, rhs } => {
                self.verify_expr(*lhs)?;
                self.verify_expr(*rhs)?;
                let (a, b) = (&self.get(*lhs)?.ty, &self.get(*rhs)?.ty);
                let ok = a.shape.len() == 2
                    && b.shape.len() == 2
                    && a.dtype == b.dtype
                    && matches!(a.dtype, DType::Bf16 | DType::F16)
                    && a.shape[1] == b.shape[0]
                    && *ty
                        == Type {
                            dtype: DType::F32,
                            shape: vec![a.shape[0], b.shape[1]],
                        };
                ensure(ok, || "matmul types".into())
            }
            ExprKind::Transpose(a) => {
                self.verify_expr(*a)?;
                let t = &self.get(*a)?.ty;
                let ok = t.shape.len() == 2
                    && *ty
                        == Type {
                            dtype: t.dtype,
                            shape: vec![t.shape[1], t.shape[0]],
                        };
                ensure(ok, || "transpose types".into())
            }
            ExprKind::Math { arg, .. } => {
                same(*arg, "math")?;
                ensure(ty.dtype.is_float(), || "math on non-float".into())
            }
            ExprKind::RowMax(a) | ExprKind::RowSum(a) => {
                self.verify_expr(*a)?;
                let t = &self.get(*a)?.ty;
                let ok = t.shape.len() == 2
                    && *ty
                        == Type {
                            dtype: t.dtype,
                            shape: vec![t.shape[0]],
                        };
                ensure(ok, || "row reduction types".into())
            }
            ExprKind::Where { cond, then, else_ } => {
                same(*then, "where then")?;
                same(*else_, "where else")?;
                self.verify_expr(*cond)?;
                let c = &self.get(*cond)?.ty;
                ensure(
                    *c == Type {
                        dtype: DType::Bool,
                        shape: ty.shape.clone(),
                    },
                    || "where mask".into(),
                )
            }
            ExprKind::RowIndex { shape } | ExprKind::ColIndex { shape } => ensure(
                shape.len() == 2
                    && *ty
                        == Type {
                            dtype: DType::I32,
                            shape: shape.clone(),
                        },
                || "index tile".into(),
            ),
            ExprKind::Reshape { arg, shape } => {
                self.verify_expr(*arg)?;
                let t = &self.get(*arg)?.ty;
                let count = |s: &[Dim]| {
                    s.iter().try_fold(1u64, |a, d| match d {
                        Dim::Const(v) => a.checked_mul(*v),
                        Dim::Sym(_) => None,
                    })
                };
                let ok = count(&t.shape).is_some()
                    && count(&t.shape) == count(shape)
                    && *ty
                        == Type {
                            dtype: t.dtype,
                            shape: shape.clone(),
                        };
                ensure(ok, || "reshape types".into())
            }
            ExprKind::Cast { arg, to } => {
                self.verify_expr(*arg)?;
                let t = &self.get(*arg)?.ty;
                ensure(
                    t.dtype != *to
                        && *ty
                            == Type {
                                dtype: *to,
                                shape: t.shape.clone(),
                            },
                    || "cast types".into(),
                )
            }
            ExprKind::Broadcast { arg, to } => {
                self.verify_expr(*arg)?;
                let t = &self.get(*arg)?.ty;
                let ok = t.shape.len() < to.len()
                    && to[..t.shape.len()] == t.shape[..]
                    && *ty
                        == Type {
                            dtype: t.dtype,
                            shape: to.clone(),
                        };
                ensure(ok, || "broadcast types".into())
            }
            ExprKind::Error => Err("error node reachable".into()),
        }
    }
}
